"""Per-exit-layer test tables of finished training runs, as Markdown (for reports/).

python scripts/foundation_report.py runs/conll2003-minilm-l6 runs/ewt-minilm-l6 --out reports/foundation.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_section(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    metric = m["metric"]
    val = m.get("validation_layers") or []
    lines = [
        f"## {m['data']} ({m['model']}), task {m['task']}",
        "",
        f"Command: `{m['command']}`",
        "",
        f"Test: {m['counts']['test_sentences']} sentences, {m['counts']['test_words']} words; "
        f"train: {m['counts']['train_sentences']} sentences; {m['counts']['labels']} labels. "
        f"Training epochs took {', '.join(f'{s / 60:.1f}' for s in m['train_epoch_seconds'])} min "
        "(2 CPU cores, wall clock, validation excluded).",
        "",
        f"| exit layer | test {metric} | " + ("precision | recall | " if metric == "f1" else "")
        + f"validation {metric} (last epoch) |",
        "|---|---|" + ("---|---|" if metric == "f1" else "") + "---|",
    ]
    for i, layer in enumerate(m["layers"]):
        extra = f"{layer['precision']:.2f} | {layer['recall']:.2f} | " if metric == "f1" else ""
        v = f"{val[i][metric]:.2f}" if i < len(val) else "-"
        lines.append(f"| {layer['layer']} | {layer[metric]:.2f} | {extra}{v} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--note", action="append", default=[], help="a line for the notes section (repeatable)")
    args = parser.parse_args()
    sections = [run_section(r) for r in args.runs if (r / "metrics.json").is_file()]
    text = "# Foundation: multi-exit MiniLM-L6 taggers, test scores per exit layer\n\n" + "\n".join(sections)
    if args.note:
        text += "\n## Notes\n\n" + "\n".join(f"- {n}" for n in args.note) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
