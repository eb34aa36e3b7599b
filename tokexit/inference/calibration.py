"""Calibration: choose one scalar setting (a *knob*) so that a run reaches a target FLOPs speed-up on validation
data. Two knobs exist: the exit policy's ``threshold`` (``exit.target_speedup``; larger stops more) and the reduce
fate's ``keep_ratio`` (``fate.target_speedup``; smaller removes more). The FLOPs speed-up is monotone in either,
so bisection between the knob's slowest and fastest values finds the slowest value that reaches the target."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tokexit.inference.setting import Setting

log = logging.getLogger("tokexit.evaluate")


@dataclass
class Knob:
    """A scalar setting: its config name (``exit.threshold``), the option it belongs to (``token_window``), the
    value where runs are slowest and the one where they are fastest, and the setting at any value between."""

    name: str
    option: str
    slowest: float
    fastest: float
    setting: Callable[[float], Setting]

    @property
    def key(self) -> str:
        """The name within its group (``threshold``, ``keep_ratio``): the calibration entry's key."""
        return self.name.split(".")[-1]

    @property
    def group(self) -> str:
        return self.name.split(".")[0]


def calibrate(knob: Knob, target: float, speedup: Callable[[Setting], float], iterations: int = 12) -> dict:
    """The value of ``knob`` nearest its slowest end whose FLOPs ``speedup`` reaches ``target`` (bisection).

    The fastest value gives the largest speed-up reachable on this data (``reachable_speedup``); a target beyond
    it is calibrated to that maximum instead, with ``reached`` False. Returns the value (under ``knob.key``),
    ``flops_speedup`` at it, ``reachable_speedup``, ``reached`` and the ``trace`` of values tried.
    """
    trace, tried = [], {}

    def measure(value: float) -> float:
        tried[value] = speedup(knob.setting(value))
        trace.append({knob.key: round(value, 6), "flops_speedup": round(tried[value], 4)})
        return tried[value]

    reachable = measure(knob.fastest)
    reached = reachable >= target
    goal = target if reached else reachable * (1 - 1e-9)  # the slowest value that reaches the maximum
    slow, fast = knob.slowest, knob.fastest
    for _ in range(iterations):
        mid = (slow + fast) / 2
        slow, fast = (slow, mid) if measure(mid) >= goal else (mid, fast)
    return {knob.key: fast, "flops_speedup": round(tried[fast], 4), "reachable_speedup": round(reachable, 4),
            "reached": reached, "trace": trace}


def calibrated(knob: Knob, target: float, speedup: Callable[[Setting], float], validation_file: str,
               ) -> tuple[Setting, dict]:
    """Calibrate ``knob`` for a ``target`` FLOPs speed-up on ``validation_file`` (which ``speedup`` runs); warns
    when the target is beyond reach. -> (the calibrated setting, the ``calibration`` entry of metrics.json)."""
    found = calibrate(knob, float(target), speedup)
    value = found[knob.key]
    setting = knob.setting(value)
    entry = {"target_speedup": target, "knob": knob.name, "reachable_speedup": found["reachable_speedup"],
             "reached": found["reached"], "validation_file": validation_file, knob.key: value,
             "flops_speedup": found["flops_speedup"], "trace": found["trace"]}
    if not found["reached"]:
        log.warning("%s.target_speedup=%s is beyond reach: %s=%s reaches at most a %.2fx FLOPs speed-up on %s "
                    "(at %s=%g); calibrated for that maximum instead", knob.group, target, knob.group, knob.option,
                    found["reachable_speedup"], validation_file, knob.name, knob.fastest)
    log.info("calibrated %s=%.5f: a %.2fx FLOPs speed-up on %s (target %sx)", knob.name, value,
             found["flops_speedup"], validation_file, target)
    return setting, entry
