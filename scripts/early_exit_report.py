"""Markdown summary of the early-exit sweeps (reports/sweep_*.json) and the speed benchmark.

python scripts/early_exit_report.py reports/sweep_conll2003.json reports/sweep_ewt.json reports/sweep_wnut17.json \
    --out reports/early_exit.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokexit.reporting.tradeoff import pareto_frontier


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def section(path: Path) -> str:
    s = json.loads(path.read_text())
    metric, full = s["metric"], s["full_score"]
    lines = [
        f"## {Path(s['test_file']).name}, {Path(s['model_dir']).parent.name} ({metric}; full model {full:.2f})",
        "",
        f"Command: `{s['command']}`  ",
        f"Batch size {s['batch_size']}, {s['threads']} CPU threads; curve: [{path.with_suffix('.png').name}]"
        f"({path.with_suffix('.png').name}), all points: [{path.with_suffix('.csv').name}]"
        f"({path.with_suffix('.csv').name}).",
        "",
        "Score on each policy's Pareto frontier at a given FLOPs speed-up (linear interpolation; Δ to full):",
        "",
        "| policy | 1x | 2x | 3x | 4x |",
        "|---|---|---|---|---|",
    ]
    for name, row in s["score_at_speedup"].items():
        cells = [f"{fmt(v)} ({v - full:+.2f})" if v is not None else "-" for v in row.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Measured wall-clock speed-up next to FLOPs speed-up on the frontier points (same batches):", "",
              "| policy | settings | score | FLOPs speed-up | wall speed-up | avg exit layer |",
              "|---|---|---|---|---|---|"]
    for name in s["score_at_speedup"]:
        for p in pareto_frontier([p for p in s["points"] if p["series"] == name]):
            settings = ", ".join(f"{k}={v}" for k, v in p["policy"].items()
                                 if k in ("threshold", "window", "layer") and v is not None)
            lines.append(f"| {name} | {settings} | {p['score']:.2f} | {p['flops_speedup']:.2f} | "
                         f"{p['wall_speedup']:.2f} | {p['avg_exit_layer']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval", nargs="*", type=Path, default=[],
                        help="metrics.json files of tokexit.evaluate runs with an exit policy (wall-clock checks)")
    parser.add_argument("--note", default="", help="a paragraph printed under the title")
    args = parser.parse_args()
    text = "# Early exit for sequence labeling: accuracy vs speed-up\n\n" + (args.note + "\n\n" if args.note else "")
    text += "\n".join(
        section(p) for p in args.sweeps if p.is_file())
    if args.eval:
        text += ("\n## Wall-clock checks (`tokexit.evaluate`, full model and policy timed interleaved, best of "
                 "`timing_repeats`)\n\n| run | batch | score | FLOPs speed-up | wall speed-up | wall / FLOPs |\n"
                 "|---|---|---|---|---|---|\n")
        for path in args.eval:
            m = json.loads(path.read_text())
            ratio = m["wall_speedup"] / m["flops_speedup"]
            text += (f"| `{m['command']}` | {m['batch_size']} | {m['score'][m['metric']]:.2f} | "
                     f"{m['flops_speedup']:.2f} | {m['wall_speedup']:.2f} | {ratio:.2f} |\n")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
