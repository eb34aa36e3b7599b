"""Markdown summary of the sequence-classification runs: per-layer scores of the multi-exit classifiers, PABEE
at every patience, entropy exits and truncation (reports/sweep_<task>.json from scripts/sweep_classification.py)
and the DynaBERT grids (reports/dynabert_<task>.json from scripts/dynabert_grid.py).

python scripts/classification_report.py --tasks sst2 mrpc rte stsb --out reports/classification.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from early_exit_report import fmt

from tokexit.reporting.tradeoff import pareto_frontier, score_at

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def sweep_section(task: str, s: dict) -> str:
    metric, full = s["metric"], s["full_score"]
    lines = [f"### {task}: {metric} (full model {full:.2f})", "",
             f"Command: `{s['command']}`  ", f"Batch size {s['batch_size']}, {s['threads']} CPU threads; curve: "
             f"[sweep_{task}.png](sweep_{task}.png), every point: [sweep_{task}.csv](sweep_{task}.csv).", "",
             "Exit layer scores of the full run: " + ", ".join(f"{x:.2f}" for x in s["layer_scores"]), "",
             "| policy | settings | score (Δ full) | FLOPs speed-up | wall speed-up | avg exit layer |",
             "|---|---|---|---|---|---|"]
    for p in s["points"]:
        if p["series"].startswith("patience"):
            d = p["policy"]
            settings = f"patience={d['patience']}" + (f", threshold={d['regression_threshold']}"
                                                      if "threshold" in p["series"] else "")
            lines.append(f"| PABEE | {settings} | {p['score']:.2f} ({p['score'] - full:+.2f}) | "
                         f"{p['flops_speedup']:.2f}x | {p['wall_speedup']:.2f}x | {p['avg_exit_layer']:.2f} |")
    for name in s["score_at_speedup"]:
        if name.startswith("patience"):
            continue
        for p in pareto_frontier([p for p in s["points"] if p["series"] == name]):
            d = p["policy"]
            settings = f"threshold={d['threshold']:.3g}" if "threshold" in d else f"layer={d.get('layer')}"
            lines.append(f"| {name} | {settings} | {p['score']:.2f} ({p['score'] - full:+.2f}) | "
                         f"{p['flops_speedup']:.2f}x | {p['wall_speedup']:.2f}x | {p['avg_exit_layer']:.2f} |")
    lines += ["", "Score on each policy's frontier at a FLOPs speed-up:", "", "| policy | 1.5x | 2x | 3x |",
              "|---|---|---|---|"]
    for name, row in s["score_at_speedup"].items():
        lines.append(f"| {name} | {fmt(row['1.5x'])} | {fmt(row['2x'])} | {fmt(row['3x'])} |")
    return "\n".join(lines) + "\n"


DYNABERT_CELLS = [(1.0, 1.0), (1.0, 0.5), (0.75, 0.75), (0.5, 1.0), (0.5, 0.5), (0.25, 1.0), (0.25, 0.5)]


def dynabert_summary(tasks: list[str]) -> list[str]:
    """One row per task with a DynaBERT grid: the teacher and a few (width, depth) cells as score @ wall speed-up
    of the exported sub-network run as a plain Hugging Face model; next to them the multi-exit classifier's
    layer-3 exit, a fixed 3-layer model at the FLOPs of (1, 0.5) and (0.5, 1)."""
    head = " | ".join(f"({w:g}, {d:g})" for w, d in DYNABERT_CELLS)
    lines = ["Score of the exported sub-network @ its wall-clock speed-up as a plain HF model (width, depth); "
             "'exit 3' is the jointly trained multi-exit classifier cut after layer 3 ([CLS] / mean pooling; 2x FLOPs, "
             "like (1, 0.5) and (0.5, 1)):", "",
             f"| task | metric | fine-tuned full model | exit 3 | {head} |",
             "|---|---|---|---|" + "---|" * len(DYNABERT_CELLS)]
    for task in tasks:
        path = REPORTS / f"dynabert_{task}.json"
        if not path.is_file():
            continue
        g = json.loads(path.read_text())
        metric, cells = g["metric"], {(r["width"], r["depth"]): r for r in g["grid"]}
        row = [f"{cells[c]['scores'][metric]:.2f} @ {cells[c]['hf_wall_speedup']:.2f}x" if c in cells else "-"
               for c in DYNABERT_CELLS]
        exit3 = " / ".join(f"{json.loads(f.read_text())['layer_scores'][2]:.2f}" if f.is_file() else "-"
                           for f in (REPORTS / f"sweep_{task}.json", REPORTS / f"sweep_{task}_mean.json"))
        lines.append(f"| {task} | {metric} | {g['teacher_result']['scores'][metric]:.2f} | {exit3} | "
                     + " | ".join(row) + " |")
    return lines + [""]


def reduce_summary(tasks: list[str]) -> list[str]:
    """One row per task with a TR-BERT sweep (reports/sweep_<task>_reduce.json, ``--fate reduce``): the reduce model
    keeping every token, its selector alone (p >= 0.5) and at fixed keep ratios, and its best point with PABEE or
    entropy on top, next to the stage-1 classifier's PABEE/entropy frontier and DynaBERT's 2x cells."""
    lines = ["TR-BERT token reduction (`fate=reduce`): a selector before layers 2 and 4 removes tokens (they leave the "
             "sequence; [CLS] always stays), trained from the stage-1 classifier with `model=token_reduction` "
             "(imitation warm-up, REINFORCE, distillation). Score @ FLOPs speed-up (wall-clock speed-up in brackets); "
             "the stage-1 columns are the same task's early exits above, DynaBERT's are the exported sub-networks "
             "(wall clock as a plain HF model):", "",
             "| task | metric | stage-1 full | reduce, keep all | selector alone (p >= 0.5) | keep 0.6 / 0.45 / 0.3 "
             "| reduce + exits: best at 1.5x / 2x | stage-1 PABEE / entropy at 1.5x | at 2x | DynaBERT (1, 0.5) / "
             "(0.5, 1) |", "|---|---|---|---|---|---|---|---|---|---|"]
    found = False
    for task in tasks:
        path = REPORTS / f"sweep_{task}_reduce.json"
        if not path.is_file():
            continue
        found = True
        r = json.loads(path.read_text())
        metric = r["metric"]

        def point(p: dict) -> str:
            return f"{p['score']:.2f} @ {p['flops_speedup']:.2f}x ({p['wall_speedup']:.2f}x)"

        kept = {p["policy"].get("keep_ratio"): p for p in r["points"] if p["series"] == "reduce keep_ratio"}
        alone = next((point(p) for p in r["points"] if p["series"] == "none"), "-")
        ratios = " / ".join(f"{kept[k]['score']:.2f} @ {kept[k]['flops_speedup']:.2f}x" if k in kept else "-"
                            for k in (0.6, 0.45, 0.3))
        everything = f"{kept[1.0]['score']:.2f}" if 1.0 in kept else "-"
        with_exits = [p for p in r["points"] if p["series"] not in ("full", "none", "reduce keep_ratio")]
        best = [fmt(score_at(with_exits, x)) for x in (1.5, 2.0)]
        stage1 = REPORTS / f"sweep_{task}.json"
        s1 = json.loads(stage1.read_text()) if stage1.is_file() else None
        full = f"{s1['full_score']:.2f}" if s1 else "-"
        stage1_at = s1["score_at_speedup"] if s1 else {}
        exits15, exits2 = (" / ".join(fmt(stage1_at.get(name, {}).get(x)) for name in
                                      ("patience", "entropy (FastBERT, normalised)")) for x in ("1.5x", "2x"))
        grid = REPORTS / f"dynabert_{task}.json"
        dyna = "-"
        if grid.is_file():
            g = json.loads(grid.read_text())
            cells = {(c["width"], c["depth"]): c for c in g["grid"]}
            dyna = " / ".join(f"{cells[c]['scores'][metric]:.2f} @ {cells[c]['hf_wall_speedup']:.2f}x"
                              if c in cells else "-" for c in ((1.0, 0.5), (0.5, 1.0)))
        lines.append(f"| {task} | {metric} | {full} | {everything} | {alone} | {ratios} | {best[0]} / {best[1]} | "
                     f"{exits15} | {exits2} | {dyna} |")
    commands = [f"`{json.loads((REPORTS / f'sweep_{t}_reduce.json').read_text())['command']}`" for t in tasks
                if (REPORTS / f"sweep_{t}_reduce.json").is_file()]
    return (lines + ["", "Commands: " + "; ".join(commands), ""]) if found else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "rte", "stsb",
                                                       "sst2_mean", "mrpc_mean", "rte_mean", "stsb_mean"])
    parser.add_argument("--out", type=Path, default=REPORTS / "classification.md")
    args = parser.parse_args()
    parts = ["# Sequence classification: PABEE, entropy exits and DynaBERT on GLUE dev (MiniLM-L6)", "",
             "All on 2 CPU cores. Models: `bash scripts/train_glue.sh` (multi-exit classifiers) and "
             "`bash scripts/train_dynabert.sh` (DynaBERT stages 1-2 and grids); sweeps: "
             "`bash scripts/run_classification_reports.sh`.", ""]
    summary = ["| task | metric | full model | PABEE p=1..5: score @ FLOPs speed-up | entropy (FastBERT) @ 1.5x / 2x "
               "| entropy (FastBERT): fastest within 1 point | static @ 1.5x / 2x |", "|---|---|---|---|---|---|---|"]
    sections = []
    for task in args.tasks:
        path = REPORTS / f"sweep_{task}.json"
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        pabee = [p for p in s["points"] if p["series"] == "patience"  # classification
                 or (p["series"].startswith("patience") and p["policy"].get("regression_threshold") == 0.1)]
        cells = ", ".join(f"{p['score']:.1f}@{p['flops_speedup']:.2f}x" for p in pabee)
        at = s["score_at_speedup"]
        ent = at.get("entropy (FastBERT, normalised)", {})
        close = [p for p in s["points"] if p["series"] == "entropy (FastBERT, normalised)"
                 and p["score"] >= s["full_score"] - 1.0]
        best = max(close, key=lambda p: p["flops_speedup"], default=None)
        fastest = "-" if best is None else (f"{best['score']:.2f} @ {best['flops_speedup']:.2f}x "
                                            f"(wall {best['wall_speedup']:.2f}x)")
        summary.append(f"| {task} | {s['metric']} | {s['full_score']:.2f} | {cells} | {fmt(ent.get('1.5x'))} / "
                       f"{fmt(ent.get('2x'))} | {fastest} | {fmt(at['static']['1.5x'])} / {fmt(at['static']['2x'])} |")
        sections.append(sweep_section(task, s))
    parts += ["## Summary", "", *summary, "", "## Early exit per task", "", *sections]
    reduction = reduce_summary(args.tasks)
    if reduction:
        parts += ["## TR-BERT token reduction", "", *reduction]
    grids = [REPORTS / f"dynabert_{t}.md" for t in args.tasks if (REPORTS / f"dynabert_{t}.md").is_file()]
    if grids:
        parts += ["## DynaBERT grids", "", *dynabert_summary(args.tasks)]
        for g in grids:
            parts += [g.read_text().replace("# DynaBERT grid", "### DynaBERT grid", 1), ""]
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
