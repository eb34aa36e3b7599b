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
import csv
import json
import math
import time
from pathlib import Path

import torch
from sweep_exits import plot

from tokexit.classify import run_examples
from tokexit.data.classification import encode_examples, sorted_example_loader
from tokexit.data.glue import TsvColumns, read_tsv
from tokexit.evaluate import exit_summary
from tokexit.evaluation import classification_scores
from tokexit.exits import EntropyExit, NoExit, PatienceExit, StaticExit
from tokexit.model_io import load_classifier
from tokexit.reporting import command_line, write_json
from tokexit.tradeoff import score_at

THRESHOLDS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def policies(num_layers: int, num_classes: int, regression: bool, regression_thresholds: list[float]):
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
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer, task, meta = load_classifier(args.model_dir)
    examples = read_tsv(args.test_file, TsvColumns(**task.columns), regression=task.regression)
    rows = encode_examples(examples, tokenizer, task, meta.get("max_length", 512), args.test_file)
    loader = sorted_example_loader(rows, args.batch_size, tokenizer.pad_token_id)
    gold = [r["target"] for r in rows]
    metric, steps = task.metric, len(model.plan)

    def score(predictions: torch.Tensor) -> float:
        pred = predictions.tolist() if task.regression else predictions.long().tolist()
        return classification_scores(gold, pred, task)[metric]

    full = run_examples(model, loader, task.regression)
    layer_scores = [score(p) for p in full.layer_predictions]
    for _ in range(args.timing_repeats):
        full.seconds = min(full.seconds, run_examples(model, loader, task.regression, NoExit()).seconds)
    points = [{"series": "full", "policy": {"policy": "none"}, "score": layer_scores[-1], "flops_speedup": 1.0,
               "wall_speedup": 1.0, "avg_exit_layer": float(steps)}]
    start = time.time()
    thresholds = [float(t) for t in args.regression_thresholds.split(",")]
    for series, policy in policies(steps, task.num_outputs, task.regression, thresholds):
        run = run_examples(model, loader, task.regression, policy)
        reference = run_examples(model, loader, task.regression, NoExit())  # timed next to the policy
        for _ in range(args.timing_repeats - 1):  # interleaved: a busy machine slows both the same way
            reference.seconds = min(reference.seconds, run_examples(model, loader, task.regression, NoExit()).seconds)
            run.seconds = min(run.seconds, run_examples(model, loader, task.regression, policy).seconds)
        summary = exit_summary(run, reference, steps, run.exit_layers)
        s = score(run.predictions)
        points.append({"series": series, "policy": policy.describe(), "score": s, **summary})
        print(f"{series:32s} {json.dumps({k: v for k, v in policy.describe().items() if v is not None})[:60]:60s} "
              f"{metric} {s:6.2f}  flops {summary['flops_speedup']:.2f}x  wall {summary['wall_speedup']:.2f}x  "
              f"exit {summary['avg_exit_layer']:.2f}")

    names = sorted({p["series"] for p in points if p["series"] != "full"})
    at = {name: {f"{x}x": score_at([points[0]] + [p for p in points if p["series"] == name], x)
                 for x in (1, 1.5, 2, 3)} for name in names}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {
        "command": command_line(), "model_dir": args.model_dir, "test_file": args.test_file, "metric": metric,
        "full_score": layer_scores[-1], "layer_scores": layer_scores, "full_forward_seconds": full.seconds,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "sweep_seconds": round(time.time() - start, 1), "score_at_speedup": at, "points": points,
    })
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "policy", metric, "flops_speedup", "wall_speedup", "avg_exit_layer"])
        for p in points:
            w.writerow([p["series"], json.dumps(p["policy"]), f"{p['score']:.3f}", p["flops_speedup"],
                        p["wall_speedup"], p["avg_exit_layer"]])
    plot(points, metric, f"{Path(args.test_file).parent.name}: {metric} vs FLOPs speed-up", out.with_suffix(".png"))
    print(f"\nper-layer {metric}: " + " ".join(f"{s:.2f}" for s in layer_scores))
    for name, row in at.items():
        print(f"{name:32s} " + "  ".join(f"{k}: {'-' if v is None else f'{v:.2f}'}" for k, v in row.items()))


if __name__ == "__main__":
    main()
