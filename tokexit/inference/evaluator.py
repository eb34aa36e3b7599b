"""Evaluation of a trained model on a file, the same for every task: every exit of the full model (the per-layer
table), then a setting (exit policy and token fate; optionally calibrated on validation data) timed against the
full model, its score, speed-ups and exit layers, metrics.json and the predictions file. The task
(:class:`~tokexit.tasks.base.Task`) reads the file, scores and writes predictions; the entry point
(:mod:`tokexit.evaluate`) turns a config into an :class:`Evaluator` and a :class:`~tokexit.inference.setting.Setting`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokexit.config import UsageError
from tokexit.engine.encoder import MultiExitEncoder
from tokexit.inference.calibration import Knob, calibrated
from tokexit.inference.runs import Run, run_batches
from tokexit.inference.setting import Setting
from tokexit.inference.timing import time_against_full
from tokexit.reporting.output import layer_table, write_json
from tokexit.tasks import EvalFile, Task

log = logging.getLogger("tokexit.evaluate")


@dataclass
class Calibration:
    """Calibrate ``knob`` for a ``target`` FLOPs speed-up on ``validation_file`` before the setting runs."""

    knob: Knob
    target: float
    validation_file: str


def parameters_run(model: MultiExitEncoder) -> int:
    """Parameters that a run of the configured sub-network uses: embeddings, the kept slices of the kept layers,
    the heads beside the exits (a classifier's pooler) and one exit head."""
    total = sum(p.numel() for n, p in model.backbone.named_parameters() if n.startswith("embeddings"))
    for layer, _ in model.plan:
        parts = model.layer_parts(layer)
        for linear in (parts.query, parts.key, parts.value, parts.attn_out, parts.ffn_in, parts.ffn_out):
            total += linear.weight.numel() + linear.bias.numel()
        total += sum(p.numel() for p in (*parts.attn_norm.parameters(), *parts.ffn_norm.parameters()))
    beside = ("backbone.", "exits.", "selector.")
    total += sum(p.numel() for n, p in model.named_parameters() if not n.startswith(beside))
    return total + sum(p.numel() for p in model.exits[-1].parameters())


class Evaluator:
    """One model of one task, ready to evaluate files: ``read`` turns a path into batches (the task's
    :meth:`~tokexit.tasks.base.Task.reader`); every setting is timed against the full model, best of
    ``timing_repeats`` (:mod:`tokexit.inference.timing`)."""

    def __init__(self, model: MultiExitEncoder, task: Task, read: Callable[[str], EvalFile], device: str = "cpu",
                 timing_repeats: int = 3):
        self.model, self.task, self.read = model, task, read
        self.device, self.timing_repeats = device, timing_repeats

    def run(self, data: EvalFile, setting: Setting | None = None) -> Run:
        """One pass over ``data``: with ``setting``, or every exit of the full model (None)."""
        return run_batches(self.model, data.loader, self.task.batches(data), setting, self.device)

    def measure(self, data: EvalFile, setting: Setting) -> tuple[Run, dict]:
        """Run ``setting`` on ``data``, timed against the full model. -> (its run, its metrics.json entries:
        the setting, score, speed-ups, exit layers, tokens computed and visible as keys per layer)."""
        run, full_seconds = time_against_full(lambda s: self.run(data, s), setting, self.timing_repeats)
        layers = run.exit_layers
        hist = Counter(layers.tolist())
        return run, {
            **setting.describe(),
            "score": self.task.scores(data, run.predictions) if data.labelled else None,
            "flops_speedup": round(run.full_flops / run.flops, 4) if run.flops else None,
            "wall_speedup": round(full_seconds / run.seconds, 4) if run.seconds else None,
            "avg_exit_layer": round(float(layers.float().mean()), 4) if len(layers) else None,
            "exit_histogram": {str(i): hist.get(i, 0) for i in range(1, len(self.model.plan) + 1)},
            "tokens_per_layer": run.tokens.fractions(),
            "forward_seconds": round(run.seconds, 4),
            "full_forward_seconds": round(full_seconds, 4),
            f"{self.task.unit}_per_second": round(len(layers) / run.seconds, 1) if run.seconds else None,
            "timing_repeats": self.timing_repeats,
        }

    def calibrate(self, calibration: Calibration) -> tuple[Setting, dict]:
        """The setting at the knob's calibrated value, and the ``calibration`` entry of metrics.json (with the
        setting's ``validation_score`` when the validation file is labelled)."""
        knob, path = calibration.knob, calibration.validation_file
        data = self.read(path)
        if data.empty:
            raise UsageError(f"data.validation_file {path} holds no {self.task.items}: {knob.group}.target_speedup "
                             "cannot be calibrated on it")

        def speedup(setting: Setting) -> float:
            run = self.run(data, setting)
            return run.full_flops / run.flops

        setting, entry = calibrated(knob, calibration.target, speedup, path)
        if data.labelled:  # the calibrated setting's score on the data it was calibrated on (a speed profile's)
            entry["validation_score"] = self.task.scores(data, self.run(data, setting).predictions)
        return setting, entry

    def evaluate(self, test_file: str, setting: Setting, out: Path, calibration: Calibration | None = None,
                 header: dict | None = None) -> dict:
        """Evaluate on ``test_file``; writes ``out/metrics.json`` (``header`` first) and the predictions file."""
        task = self.task
        out.mkdir(parents=True, exist_ok=True)
        data = self.read(test_file)
        result = {**(header or {}), "test_file": test_file, "task": task.name, "metric": task.metric,
                  "counts": data.counts, "labelled": data.labelled, **data.notes, "device": self.device,
                  "parameters_run": parameters_run(self.model)}
        if data.empty:
            task.write_predictions(out / task.predictions_file, data, None, exit_layers=False)
            result.update(layers=[], full_depth=None)
            write_json(out / "metrics.json", result)
            log.warning("%s holds no %s: nothing to %s or score", test_file, task.items, task.verbs[0])
            print(f"{test_file}: no {task.items} in the file, nothing to {task.verbs[0]} or score; wrote "
                  f"{out / 'metrics.json'}")
            return result
        full = self.run(data)
        scores = [task.scores(data, p) for p in full.layer_predictions] if data.labelled else []
        result.update(layers=[{"layer": i, **s} for i, s in enumerate(scores, start=1)],
                      full_depth=scores[-1] if scores else None,
                      **{f"full_flops_per_{task.unit[:-1]}": full.full_flops / len(full.predictions)})
        if calibration is not None:
            setting, result["calibration"] = self.calibrate(calibration)
        run, entries = self.measure(data, setting)
        result.update(entries)
        task.write_predictions(out / task.predictions_file, data, run, exit_layers=not setting.is_full_model)
        write_json(out / "metrics.json", result)
        self.summarise(result, scores, setting, out)
        return result

    def summarise(self, result: dict, scores: list[dict], setting: Setting, out: Path) -> None:
        """Print the per-layer table (``scores``), the setting's line and what was written."""
        task, path, metric = self.task, result["test_file"], result["metric"]
        if scores:
            print(layer_table(scores, metric, f"{path}: {metric} per exit layer (full model)"))
        else:
            print(f"{path} has no {task.gold_name}: its {task.items} are {task.verbs[1]} ({task.predictions_file}), "
                  "not scored")
        if not setting.is_full_model:
            scored = f"{metric} {result['score'][metric]:.2f} | " if result["score"] else "not scored | "
            print(f"exit {setting.policy.describe()}, fate {setting.fate.describe()}: {scored}FLOPs speed-up "
                  f"{result['flops_speedup']:.2f}x | wall-clock speed-up {result['wall_speedup']:.2f}x | average "
                  f"exit layer {result['avg_exit_layer']:.2f}")
        counts = ", ".join(f"{n} {what}" for what, n in result["counts"].items())
        print(f"{counts}; wrote {out / 'metrics.json'}")
