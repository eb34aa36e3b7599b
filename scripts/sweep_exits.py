"""Accuracy-vs-speed-up curves of every exit policy on one test set: JSON, CSV and a PNG plot.

Token-window exit at several windows, sentence-level exit and static truncation, each over a grid of
thresholds (layers for static), scored on the test file and timed against the full model on the same batches.

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

from tokexit.data.tagging import ReaderOptions, load_corpus
from tokexit.evaluate import exit_summary
from tokexit.evaluation import main_metric, score
from tokexit.exits import NoExit, SentenceExit, StaticExit, TokenWindowExit
from tokexit.model_io import load_tagger
from tokexit.predict import corpus_loader, run_corpus
from tokexit.reporting import command_line, write_json
from tokexit.tradeoff import pareto_frontier, score_at

THRESHOLDS = [0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7]


def policies(num_layers: int, windows: list[int], thresholds: list[float], upper_factor: float):
    for w in windows:
        for t in thresholds:
            yield f"token_window w={w}", TokenWindowExit(t, window=w, upper_factor=upper_factor)
    for t in thresholds:
        yield "sentence", SentenceExit(t, upper_factor=upper_factor)
    for k in range(1, num_layers):
        yield "static", StaticExit(k)


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
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.json, PREFIX.csv, PREFIX.png")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--windows", default="1,3,5,9,15")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--upper-factor", type=float, default=1.0)
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    encoder, tokenizer, labels, meta = load_tagger(args.model_dir)
    corpus = load_corpus(args.test_file, ReaderOptions(format=args.format,
                                                       strip_position_digit=args.strip_position_digit))
    loader = corpus_loader(corpus, tokenizer, labels, args.batch_size, meta.get("max_length", 512))
    metric, gold = main_metric(labels.task), [s.tags for s in corpus.sentences]
    full = run_corpus(encoder, loader, corpus)
    full_score = score(gold, [[labels.labels[k] for k in p.tolist()] for p in full.predictions], labels.task)[metric]
    for _ in range(args.timing_repeats):  # the reference time: best of several full-model passes
        full.seconds = min(full.seconds, run_corpus(encoder, loader, corpus, NoExit()).seconds)

    points = [{"series": "full", "policy": {"policy": "none"}, "score": full_score, "flops_speedup": 1.0,
               "wall_speedup": 1.0, "avg_exit_layer": float(encoder.num_layers)}]
    start = time.time()
    windows = [int(w) for w in args.windows.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    for series, policy in policies(encoder.num_layers, windows, thresholds, args.upper_factor):
        run = run_corpus(encoder, loader, corpus, policy)
        for _ in range(args.timing_repeats - 1):
            run.seconds = min(run.seconds, run_corpus(encoder, loader, corpus, policy).seconds)
        summary = exit_summary(run, full, encoder.num_layers, torch.cat(run.exit_layers))
        s = score(gold, [[labels.labels[k] for k in p.tolist()] for p in run.predictions], labels.task)[metric]
        points.append({"series": series, "policy": policy.describe(), "score": s, **summary})
        print(f"{series:22s} {json.dumps({k: v for k, v in policy.describe().items() if v is not None})[:70]:70s} "
              f"{metric} {s:6.2f}  flops {summary['flops_speedup']:.2f}x  wall {summary['wall_speedup']:.2f}x")

    series_names = sorted({p["series"] for p in points if p["series"] != "full"})
    summary_table = {
        name: {f"{x}x": score_at([points[0]] + [p for p in points if p["series"] == name], x) for x in (1, 2, 3, 4)}
        for name in series_names
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {
        "command": command_line(), "model_dir": args.model_dir, "test_file": args.test_file, "metric": metric,
        "full_score": full_score, "full_forward_seconds": full.seconds, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "sweep_seconds": round(time.time() - start, 1),
        "score_at_speedup": summary_table, "points": points,
    })
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "policy", metric, "flops_speedup", "wall_speedup", "avg_exit_layer"])
        for p in points:
            w.writerow([p["series"], json.dumps(p["policy"]), f"{p['score']:.3f}", p["flops_speedup"],
                        p["wall_speedup"], p["avg_exit_layer"]])
    plot(points, metric, f"{Path(args.test_file).name}: {metric} vs FLOPs speed-up", out.with_suffix(".png"))
    print(f"\nscore on the Pareto frontier at each FLOPs speed-up (full model {full_score:.2f}):")
    for name, row in summary_table.items():
        print(f"{name:22s} " + "  ".join(f"{k}: {'-' if v is None else f'{v:.2f}'}" for k, v in row.items()))


if __name__ == "__main__":
    main()
