from tokexit.reporting.tradeoff import pareto_frontier, score_at


def p(x, y):
    return {"flops_speedup": x, "score": y}


def test_frontier_drops_dominated_points():
    pts = [p(1, 90), p(2, 89), p(2, 85), p(3, 80), p(2.5, 70), p(1.5, 95)]
    assert [(q["flops_speedup"], q["score"]) for q in pareto_frontier(pts)] == [(1.5, 95), (2, 89), (3, 80)]


def test_score_at_interpolates_on_the_frontier():
    pts = [p(1, 90), p(2, 88), p(4, 80)]
    assert score_at(pts, 1) == 90 and score_at(pts, 2) == 88 and score_at(pts, 3) == 84
    assert score_at(pts, 5) is None and score_at(pts, 0.5) == 90
