"""Score-vs-speed-up curves of the sequence-classification exits on one labelled TSV file: JSON, CSV and PNG.

PABEE at patience 1..L-1, entropy exits (FastBERT's normalised entropy and DeeBERT's raw entropy) over a grid of
thresholds, and static truncation at every layer; each scored on the file and timed against the full model on
the same batches, the two timed alternately (best of --timing-repeats each), so that a busy machine slows both
alike. The TSV layout is the one the model was trained on.

Example (see reports/classification.md for the committed runs):
    .venv/bin/python scripts/sweep_classification.py --model-dir runs/mrpc-minilm-l6-classifier/model \
        --test-file ../shared/data/glue/MRPC/dev.tsv --out reports/sweep_mrpc
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from sweep_exits import plot, sweep, write_csv

from tokexit.exits import EntropyExit, NoExit, PatienceExit, StaticExit
from tokexit.fates import FATES
from tokexit.inference.evaluator import Evaluator
from tokexit.model_io import load_model
from tokexit.reporting.output import command_line, write_json
from tokexit.reporting.tradeoff import score_at

THRESHOLDS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def policies(num_layers: int, num_classes: int, regression: bool, regression_thresholds: list[float], fate: str,
             fate_object, keep_ratios: list[float]):
    """(series, policy, fate) of every point; with ``reduce`` also the fate alone at p >= 0.5 (series ``none``) and
    at each of ``keep_ratios``."""
    if fate != "copy":  # the fate alone
        yield "none", NoExit(), fate_object
    for ratio in keep_ratios:
        yield "reduce keep_ratio", NoExit(), type(fate_object)(keep_ratio=ratio)
    for series, policy in exit_policies(num_layers, num_classes, regression, regression_thresholds):
        yield series, policy, fate_object


def exit_policies(num_layers: int, num_classes: int, regression: bool, regression_thresholds: list[float]):
    for p in range(1, num_layers):
        if regression:
            for t in regression_thresholds:
                yield f"patience (threshold {t})", PatienceExit(p, regression_threshold=t)
        else:
            yield "patience", PatienceExit(p)
    if not regression:
        for t in THRESHOLDS:
            yield "entropy (FastBERT, normalised)", EntropyExit(t, normalised=True)
            yield "entropy (DeeBERT, raw)", EntropyExit(t * math.log(num_classes), normalised=False)
    for k in range(1, num_layers):
        yield "static", StaticExit(k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--test-file", required=True)
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.json, PREFIX.csv, PREFIX.png")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--regression-thresholds", default="0.05,0.1,0.2,0.4")
    parser.add_argument("--fate", choices=sorted(FATES), default="copy", help="token fate of every setting")
    parser.add_argument("--keep-ratios", default="", help="reduce only: also the fate alone at these keep ratios")
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer, task, meta = load_model(args.model_dir, "sequence_classifier")
    read = task.reader({}, tokenizer, args.batch_size, meta.get("max_length", 512))  # the model's own TSV layout
    evaluator = Evaluator(model, task, read, timing_repeats=args.timing_repeats)
    data = evaluator.read(args.test_file)
    metric, steps, fate = task.metric, len(model.plan), FATES[args.fate]()
    layer_scores = [task.scores(data, p)[metric] for p in evaluator.run(data).layer_predictions]
    points = [{"series": "full", "policy": {"policy": "none"}, "score": layer_scores[-1], "flops_speedup": 1.0,
               "wall_speedup": 1.0, "avg_exit_layer": float(steps)}]
    start = time.time()
    thresholds = [float(t) for t in args.regression_thresholds.split(",")]
    ratios = [float(r) for r in args.keep_ratios.split(",") if r]
    if ratios and args.fate != "reduce":
        parser.error("--keep-ratios needs --fate reduce")
    settings = policies(steps, task.labels.num_outputs, task.labels.regression, thresholds, args.fate, fate, ratios)
    points += sweep(evaluator, data, settings, width=32)

    names = sorted({p["series"] for p in points if p["series"] != "full"})
    at = {name: {f"{x}x": score_at([points[0]] + [p for p in points if p["series"] == name], x)
                 for x in (1, 1.5, 2, 3)} for name in names}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {
        "command": command_line(), "model_dir": args.model_dir, "test_file": args.test_file, "metric": metric,
        "fate": fate.describe(), "full_score": layer_scores[-1], "layer_scores": layer_scores,
        "full_forward_seconds": min((p["full_forward_seconds"] for p in points[1:]), default=None),
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "sweep_seconds": round(time.time() - start, 1), "score_at_speedup": at, "points": points,
    })
    write_csv(points, metric, out.with_suffix(".csv"))
    plot(points, metric, f"{Path(args.test_file).parent.name}: {metric} vs FLOPs speed-up", out.with_suffix(".png"))
    print(f"\nper-layer {metric}: " + " ".join(f"{s:.2f}" for s in layer_scores))
    for name, row in at.items():
        print(f"{name:32s} " + "  ".join(f"{k}: {'-' if v is None else f'{v:.2f}'}" for k, v in row.items()))


if __name__ == "__main__":
    main()
