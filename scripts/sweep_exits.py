"""Accuracy-vs-speed-up curves of every exit policy on one test set: JSON, CSV and a PNG plot.

Token-window exit at several windows, sentence-level exit and static truncation, each over a grid of
thresholds (layers for static), with one token fate (``--fate copy|drop|reduce``; reduce needs a model trained
with ``model=token_reduction`` and adds the fate alone, series ``none``), scored on the test file and timed
against the full model on the same batches (interleaved, best of --timing-repeats each:
:mod:`tokexit.inference.timing`).

Example (the committed reports were made this way, see reports/early_exit.md for each data set):
    .venv/bin/python scripts/sweep_exits.py --model-dir runs/conll2003-minilm-l6/model \
        --test-file ../shared/data/conll2003/eng.testb --out reports/sweep_conll2003
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from tokexit.exits import NoExit, SentenceExit, StaticExit, TokenWindowExit
from tokexit.fates import FATES
from tokexit.inference.evaluator import Evaluator
from tokexit.inference.setting import Setting
from tokexit.model_io import load_model
from tokexit.reporting.output import command_line, write_json
from tokexit.reporting.tradeoff import pareto_frontier, score_at

#: what a point keeps of the setting's metrics.json entries (tokexit.inference.evaluator.Evaluator.measure)
SUMMARY = ("flops_speedup", "wall_speedup", "avg_exit_layer", "exit_histogram", "tokens_per_layer", "forward_seconds",
           "full_forward_seconds")
THRESHOLDS = [0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7]


def policies(num_layers: int, windows: list[int], thresholds: list[float], upper_factor: float, fate: str,
             series: set[str], fate_object, keep_ratios: list[float]):
    """(series, policy, fate) of every point: each policy family of ``series`` with the sweep's fate; with
    ``reduce`` also the fate alone at p >= 0.5 (series ``none``) and at each of ``keep_ratios``."""
    if fate != "copy":  # the fate alone (with drop, the full model again)
        yield "none", NoExit(), fate_object
    for ratio in keep_ratios:
        yield "reduce keep_ratio", NoExit(), type(fate_object)(keep_ratio=ratio,
                                                               label_removed=fate_object.label_removed)
    for w in windows if "token_window" in series else []:
        for t in thresholds:
            yield f"token_window w={w}", TokenWindowExit(t, window=w, upper_factor=upper_factor), fate_object
    for t in thresholds if "sentence" in series else []:
        yield "sentence", SentenceExit(t, upper_factor=upper_factor), fate_object
    for k in range(1, num_layers) if "static" in series else []:
        yield "static", StaticExit(k), fate_object


def sweep(evaluator: Evaluator, data, settings, width: int) -> list[dict]:
    """One point per (series, policy, fate) of ``settings``: the score and what :meth:`Evaluator.measure` says about
    speed (timed against the full model, interleaved)."""
    points, metric = [], evaluator.task.metric
    for series, policy, fate in settings:
        _, m = evaluator.measure(data, Setting(policy, fate))
        point = {"series": series, "policy": {**policy.describe(), **fate.describe()}, "score": m["score"][metric],
                 **{k: m[k] for k in SUMMARY}}
        points.append(point)
        settings_text = json.dumps({k: v for k, v in policy.describe().items() if v is not None})[:60]
        print(f"{series:{width}s} {settings_text:60s} {metric} {point['score']:6.2f}  flops "
              f"{point['flops_speedup']:.2f}x  wall {point['wall_speedup']:.2f}x  exit {point['avg_exit_layer']:.2f}",
              flush=True)
    return points


def write_csv(points: list[dict], metric: str, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "policy", metric, "flops_speedup", "wall_speedup", "avg_exit_layer"])
        for p in points:
            w.writerow([p["series"], json.dumps(p["policy"]), f"{p['score']:.3f}", p["flops_speedup"],
                        p["wall_speedup"], p["avg_exit_layer"]])


def plot(points: list[dict], metric: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = [p for p in points if p["series"] == "full"]
    for series in sorted({p["series"] for p in points} - {"full"}):
        front = pareto_frontier(full + [p for p in points if p["series"] == series])  # each curve starts at 1x
        style = "--" if series in ("sentence", "static") else "-"
        ax.plot([p["flops_speedup"] for p in front], [p["score"] for p in front], style, marker="o", ms=3,
                label=series)
    ax.set_xlabel("FLOPs speed-up over the full model")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--test-file", required=True)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--strip-position-digit", action="store_true")
    parser.add_argument("--context", choices=("sentence", "document"), default="sentence",
                        help="document: pack each document's sentences into inputs of up to 512 subwords")
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.json, PREFIX.csv, PREFIX.png")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--windows", default="1,3,5,9,15")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--upper-factor", type=float, default=1.0)
    parser.add_argument("--fate", choices=sorted(FATES), default="copy", help="token fate of every setting")
    parser.add_argument("--series", default="token_window,sentence,static", help="policy families to sweep")
    parser.add_argument("--keep-ratios", default="", help="reduce only: also the fate alone at these keep ratios")
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer, task, meta = load_model(args.model_dir, "token_tagger")
    options = {"format": args.format, "strip_position_digit": args.strip_position_digit, "context": args.context}
    read = task.reader(options, tokenizer, args.batch_size, meta.get("max_length", 512))
    evaluator = Evaluator(model, task, read, timing_repeats=args.timing_repeats)
    data = evaluator.read(args.test_file)
    metric, fate = task.metric, FATES[args.fate]()
    full_score = task.scores(data, evaluator.run(data).predictions)[metric]
    points = [{"series": "full", "policy": {"policy": "none"}, "score": full_score, "flops_speedup": 1.0,
               "wall_speedup": 1.0, "avg_exit_layer": float(model.num_layers)}]
    start = time.time()
    windows = [int(w) for w in args.windows.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    ratios = [float(r) for r in args.keep_ratios.split(",") if r]
    if ratios and args.fate != "reduce":
        parser.error("--keep-ratios needs --fate reduce")
    settings = policies(model.num_layers, windows, thresholds, args.upper_factor, args.fate,
                        set(args.series.split(",")), fate, ratios)
    points += sweep(evaluator, data, settings, width=22)

    series_names = sorted({p["series"] for p in points if p["series"] != "full"})
    summary_table = {
        name: {f"{x}x": score_at([points[0]] + [p for p in points if p["series"] == name], x) for x in (1, 2, 3, 4)}
        for name in series_names
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {
        "command": command_line(), "model_dir": args.model_dir, "test_file": args.test_file, "context": args.context,
        "metric": metric, "fate": fate.describe(), "full_score": full_score, "batch_size": args.batch_size,
        "full_forward_seconds": min((p["full_forward_seconds"] for p in points[1:]), default=None),
        "threads": torch.get_num_threads(), "sweep_seconds": round(time.time() - start, 1),
        "score_at_speedup": summary_table, "points": points,
    })
    write_csv(points, metric, out.with_suffix(".csv"))
    plot(points, metric, f"{Path(args.test_file).name}: {metric} vs FLOPs speed-up", out.with_suffix(".png"))
    print(f"\nscore on the Pareto frontier at each FLOPs speed-up (full model {full_score:.2f}):")
    for name, row in summary_table.items():
        print(f"{name:22s} " + "  ".join(f"{k}: {'-' if v is None else f'{v:.2f}'}" for k, v in row.items()))


if __name__ == "__main__":
    main()
