"""DynaBERT grid: score, parameters, FLOPs and wall-clock time of every exported (width, depth) sub-network.

Each sub-network of a DynaBERT model is exported (``python -m tokexit.export``) to a temporary directory, scored
on the labelled TSV file with tokexit (its last exit, the same as running the sub-network inside the full model),
and timed on the same length-sorted batches with tokexit's engine and as a plain Hugging Face model
(``AutoModel`` with the ``slim_bert`` classes tokexit registers, never code from the directory; encoder forward
only). Speed-ups are against the
fine-tuned full model (the teacher), timed alternately with each sub-network (warm-up batch untimed, best of
--repeats each: :mod:`tokexit.inference.timing`), so both see the same load.

Example (reports/dynabert_mrpc.md; scripts/train_dynabert.sh runs it for every task):
    .venv/bin/python scripts/dynabert_grid.py --model-dir runs/mrpc-dynabert-stage2/model \
        --teacher runs/mrpc-minilm-l6-classifier/model --test-file ../shared/data/glue/MRPC/dev.tsv \
        --out reports/dynabert_mrpc --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tokexit.backbones import load_pretrained_model
from tokexit.export.__main__ import export
from tokexit.inference.evaluator import Evaluator
from tokexit.inference.setting import Setting
from tokexit.inference.timing import best_of_interleaved
from tokexit.model_io import load_model, read_meta
from tokexit.reporting.output import command_line, write_json


@torch.inference_mode()
def hf_seconds(model, loader) -> float:
    """Wall clock of a plain Hugging Face encoder forward over every batch (one untimed warm-up batch)."""
    model.eval()
    for batch in loader:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              token_type_ids=batch["token_type_ids"])
        break
    start = time.perf_counter()
    for batch in loader:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              token_type_ids=batch["token_type_ids"])
    return time.perf_counter() - start


class Measured:
    """A model directory scored on the test file, ready to be timed on its length-sorted batches."""

    def __init__(self, model_dir: str | Path, path: str, columns: dict, batch_size: int):
        model, tokenizer, task, meta = load_model(model_dir, "sequence_classifier")
        read = task.reader(columns, tokenizer, batch_size, meta.get("max_length", 512))
        self.evaluator = Evaluator(model, task, read)
        self.data = self.evaluator.read(path)
        self.hf = load_pretrained_model(model_dir, strict=True)  # an exported sub-network: tokexit's slim_bert
        run = self.evaluator.run(self.data, Setting())  # the last exit, as inference runs the full model
        self.result = {"scores": task.scores(self.data, run.predictions),
                       "flops_per_example": run.full_flops / len(run.predictions),
                       "backbone_parameters": sum(p.numel() for p in model.backbone.parameters())}

    def timings(self, name: str) -> dict:
        """Seconds over every batch with tokexit's engine (last exit only, as inference runs it) and as a plain
        Hugging Face encoder, as measures for :func:`best_of_interleaved`."""
        return {f"{name}_tokexit": lambda: self.evaluator.run(self.data, Setting()).seconds,
                f"{name}_hf": lambda: hf_seconds(self.hf, self.data.loader)}


def timed_pair(sub: Measured, teacher: Measured, repeats: int) -> tuple[dict, dict]:
    """Best of ``repeats`` timings each, alternating sub-network and teacher so both see the same load."""
    best = best_of_interleaved({**sub.timings("sub"), **teacher.timings("teacher")}, repeats)
    return ({"tokexit_seconds": best["sub_tokexit"], "hf_seconds": best["sub_hf"]},
            {"tokexit_seconds": best["teacher_tokexit"], "hf_seconds": best["teacher_hf"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="a DynaBERT (stage 2) tokexit model directory")
    parser.add_argument("--teacher", required=True, help="the fine-tuned full model it was distilled from")
    parser.add_argument("--test-file", required=True)
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.json and PREFIX.md")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_meta(args.model_dir)
    columns = meta["columns"]  # the layout the model was trained on
    metric = meta["metric"]
    teacher_model = Measured(args.teacher, args.test_file, columns, args.batch_size)
    teacher = teacher_model.result
    teacher_times: list[dict[str, float]] = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in meta["dynabert"]["widths"]:
            for depth in meta["dynabert"]["depths"]:
                out = Path(tmp) / f"w{width}_d{depth}"
                exported = export(args.model_dir, width, depth, str(out))
                sub = Measured(out, args.test_file, columns, args.batch_size)
                m, t = timed_pair(sub, teacher_model, args.repeats)
                teacher_times.append(t)
                rows.append({"width": width, "depth": depth, "heads": exported["heads"],
                             "neurons": exported["neurons"], "layers": exported["layers"], **sub.result, **m,
                             "tokexit_wall_speedup": t["tokexit_seconds"] / m["tokexit_seconds"],
                             "hf_wall_speedup": t["hf_seconds"] / m["hf_seconds"]})
                print(f"w={width} d={depth}: {metric} {sub.result['scores'][metric]:.2f}  params "
                      f"{sub.result['backbone_parameters'] / 1e6:.1f}M  "
                      f"{sub.result['flops_per_example'] / 1e9:.2f} GFLOPs", flush=True)
    for key in ("tokexit_seconds", "hf_seconds"):
        teacher[key] = min(t[key] for t in teacher_times)
    for r in rows:
        r["flops_speedup"] = teacher["flops_per_example"] / r["flops_per_example"]
    write_json(Path(args.out).with_suffix(".json"), {
        "command": command_line(), "model_dir": args.model_dir, "teacher": args.teacher, "test_file": args.test_file,
        "metric": metric, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "teacher_result": teacher,
        "grid": rows})
    lines = [f"# DynaBERT grid: {Path(args.test_file).parent.name} dev ({metric})", "",
             f"Command: `{command_line()}`", "",
             f"Fine-tuned full model (teacher): {metric} {teacher['scores'][metric]:.2f}, "
             f"{teacher['backbone_parameters'] / 1e6:.1f}M backbone parameters, "
             f"{teacher['flops_per_example'] / 1e9:.2f} GFLOPs per example.", "",
             f"| width | depth | heads | FFN | layers | {metric} | backbone params | GFLOPs/example | FLOPs speed-up "
             "| wall speed-up (tokexit) | wall speed-up (plain HF) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['width']} | {r['depth']} | {r['heads']} | {r['neurons']} | {len(r['layers'])} | "
                     f"{r['scores'][metric]:.2f} | {r['backbone_parameters'] / 1e6:.1f}M | "
                     f"{r['flops_per_example'] / 1e9:.2f} | {r['flops_speedup']:.2f}x | "
                     f"{r['tokexit_wall_speedup']:.2f}x | {r['hf_wall_speedup']:.2f}x |")
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
