"""Compare token fates on one data set: token-window ``copy`` vs ``drop`` vs ``reduce`` (TR-BERT), from the
sweeps of ``scripts/sweep_exits.py --fate ...`` on the same test file. Writes one Markdown section per data set and
one plot per data set (score vs FLOPs speed-up and vs wall-clock speed-up, each fate's best series).

python scripts/fates_report.py --data "CoNLL-2003 eng.testb" reports/fates_conll2003_copy.json \
    reports/fates_conll2003_drop.json reports/fates_conll2003_reduce.json --extra reports/eval_conll2003_reduce_a*/ \
    --out reports/fates_conll2003
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokexit.reporting.output import command_line
from tokexit.reporting.tradeoff import pareto_frontier, score_at

SPEEDUPS = (1.5, 2.0, 3.0)


def fmt(v: float | None, full: float) -> str:
    return "-" if v is None else f"{v:.2f} ({v - full:+.2f})"


def curves(sweep: dict) -> dict[str, list[dict]]:
    """Series name -> its points, each series starting from the full model (so every curve starts at 1x)."""
    full = [p for p in sweep["points"] if p["series"] == "full"]
    names = sorted({p["series"] for p in sweep["points"]} - {"full"})
    return {name: full + [p for p in sweep["points"] if p["series"] == name] for name in names}


def label(sweep: dict, series: str) -> str:
    fate = sweep["fate"]["fate"]
    return f"{fate}: {'fate alone (p >= 0.5)' if series == 'none' else series}"


def section(title: str, sweeps: list[dict], extra: list[dict], out: Path) -> str:
    full = sweeps[0]["full_score"]
    metric = sweeps[0]["metric"]
    rows = []
    for sweep in sweeps:
        for series, points in curves(sweep).items():
            if sweep["fate"]["fate"] == "drop" and series == "none":
                continue  # drop alone is the full model
            rows.append((label(sweep, series), points))
    lines = [f"## {title} ({metric}; full model {full:.2f})", "",
             "Commands: " + "; ".join(f"`{s['command']}`" for s in sweeps), "",
             f"Plot: [{out.with_suffix('.png').name}]({out.with_suffix('.png').name}). Score on each series' Pareto "
             "frontier at a FLOPs speed-up (linear interpolation; Δ to the full model):", "",
             "| fate: series | " + " | ".join(f"{x}x FLOPs" for x in SPEEDUPS) + " |",
             "|---|" + "---|" * len(SPEEDUPS)]
    for name, points in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(score_at(points, x), full) for x in SPEEDUPS) + " |")
    for m in extra:
        lines.append(f"| reduce: {m['label']} | single point: {m['score']:.2f} ({m['score'] - full:+.2f}) at "
                     f"{m['flops_speedup']:.2f}x FLOPs, {m['wall_speedup']:.2f}x wall | | |")
    lines += ["", "The frontier point closest to 2x FLOPs: its wall-clock speed-up (timed against the full model on "
              "the same batches, interleaved) and the fraction of real tokens computed and visible as keys per layer "
              "(sentences whose words all stopped leave the batch, so they are no keys either):", "",
              "| fate: series | FLOPs | wall | score | computed per layer | keys per layer |",
              "|---|---|---|---|---|---|"]
    for name, points in rows:
        front = [p for p in pareto_frontier(points) if "tokens_per_layer" in p]
        if not front:
            continue
        p = min(front, key=lambda p: abs(p["flops_speedup"] - 2.0))
        t = p["tokens_per_layer"]
        lines.append(f"| {name} | {p['flops_speedup']:.2f}x | {p['wall_speedup']:.2f}x | {p['score']:.2f} | "
                     f"{' '.join(f'{v:.2f}' for v in t['computed'])} | {' '.join(f'{v:.2f}' for v in t['keys'])} |")
    plot(title, metric, rows, extra, out.with_suffix(".png"))
    return "\n".join(lines) + "\n"


def plot(title: str, metric: str, rows: list, extra: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, x in zip(axes, ("flops_speedup", "wall_speedup"), strict=True):
        for name, points in rows:
            front = pareto_frontier(points, x=x)
            style = "--" if "static" in name else "-"
            ax.plot([p[x] for p in front], [p["score"] for p in front], style, marker="o", ms=3, label=name)
        for m in extra:
            ax.plot([m[x]], [m["score"]], "k^", ms=6)
            ax.annotate(m["label"], (m[x], m["score"]), fontsize=7)
        ax.set_xlabel(f"{x.replace('_', ' ')} over the full model (batch 32)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test {metric}")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="sweep JSONs of one test file, one per fate")
    parser.add_argument("--data", required=True, help="title of the data set")
    parser.add_argument("--extra", nargs="*", default=[], help="tokexit.evaluate output dirs: single points")
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.md and PREFIX.png")
    args = parser.parse_args()
    sweeps = [json.loads(Path(p).read_text()) for p in args.sweeps]
    if len({s["test_file"] for s in sweeps}) != 1:
        raise SystemExit("the sweeps must share one test file")
    extra = []
    for d in args.extra:
        m = json.loads((Path(d) / "metrics.json").read_text())
        metric = m["metric"]
        extra.append({"label": Path(d).name, "score": m["score"][metric], "flops_speedup": m["flops_speedup"],
                      "wall_speedup": m["wall_speedup"]})
    out = Path(args.out)
    text = f"<!-- made by: {command_line()} -->\n" + section(args.data, sweeps, extra, out)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
