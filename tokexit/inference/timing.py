"""The one timing protocol of tokexit: measurements taken in turn, round after round, the best of each counts, so
that a busy machine slows all of them alike. A setting is timed against the full model as inference runs it
(the last-exit path: no exit policy, halt-and-copy, no inner exit head), never against the every-exit forward.
Every run warms up on its first batch, untimed (:func:`~tokexit.inference.runs.run_batches`)."""

from __future__ import annotations

from collections.abc import Callable

from tokexit.inference.runs import Run
from tokexit.inference.setting import Setting


def best_of_interleaved(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Call every measure (returning seconds) in turn, ``repeats`` rounds (at least one); the smallest of each."""
    best: dict[str, float] = {}
    for _ in range(max(1, repeats)):
        for name, measure in measures.items():
            seconds = measure()
            best[name] = min(seconds, best.get(name, seconds))
    return best


def time_against_full(run: Callable[[Setting], Run], setting: Setting, repeats: int) -> tuple[Run, float]:
    """Run ``setting`` and the full model alternately, ``repeats`` times each. Returns the setting's run (with its
    best time) and the full model's best time; the full model is its own baseline (timed once per round)."""
    runs: list[Run] = []

    def timed_setting() -> float:
        runs.append(run(setting))
        return runs[-1].seconds

    measures = {"setting": timed_setting}
    if not setting.is_full_model:
        measures = {"full": lambda: run(Setting()).seconds, **measures}
    best = best_of_interleaved(measures, repeats)
    result = runs[0]
    result.seconds = best["setting"]
    return result, best.get("full", best["setting"])
