"""Accuracy-vs-speed-up curves: Pareto frontiers and the score reached at a given speed-up."""

from __future__ import annotations


def pareto_frontier(points: list[dict], x: str = "flops_speedup", y: str = "score") -> list[dict]:
    """Points not beaten by another point that is at least as fast and at least as accurate, sorted by ``x``."""
    best: list[dict] = []
    for p in sorted(points, key=lambda p: (-p[x], -p[y])):
        if not best or p[y] > best[-1][y]:
            best.append(p)
    return sorted(best, key=lambda p: p[x])


def score_at(points: list[dict], speedup: float, x: str = "flops_speedup", y: str = "score") -> float | None:
    """The score on the Pareto frontier at ``speedup``, linearly interpolated between its neighbours; None when
    no point is that fast. At or below the slowest point, the slowest point's score."""
    frontier = pareto_frontier(points, x, y)
    if not frontier or frontier[-1][x] < speedup:
        return None
    if speedup <= frontier[0][x]:
        return frontier[0][y]
    for a, b in zip(frontier, frontier[1:], strict=False):
        if a[x] <= speedup <= b[x]:
            w = (speedup - a[x]) / (b[x] - a[x]) if b[x] > a[x] else 1.0
            return a[y] + w * (b[y] - a[y])
    return None
