"""DynaBERT grid: score, parameters, FLOPs and wall-clock time of every exported (width, depth) sub-network.

Each sub-network of a DynaBERT model is exported (``python -m tokexit.export``) to a temporary directory, scored
on the labelled TSV file with tokexit (its last exit, the same as running the sub-network inside the full model),
and timed on the same length-sorted batches with tokexit's engine and as a plain Hugging Face model
(``AutoModel`` with the ``slim_bert`` classes tokexit registers, never code from the directory; encoder forward
only). Speed-ups are against the
fine-tuned full model (the teacher), timed alternately with each sub-network (warm-up batch untimed, best of
--repeats each), so both see the same load.

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
from tokexit.classify import run_examples
from tokexit.data.classification import encode_examples, sorted_example_loader
from tokexit.data.glue import TsvColumns, read_tsv
from tokexit.evaluation import classification_scores
from tokexit.exits import NoExit
from tokexit.export.__main__ import export
from tokexit.model_io import load_classifier, read_meta
from tokexit.reporting import command_line, write_json


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

    def __init__(self, model_dir: str | Path, path: str, columns: TsvColumns, batch_size: int):
        self.model, tokenizer, self.task, meta = load_classifier(model_dir)
        examples = read_tsv(path, columns, regression=self.task.regression)
        rows = encode_examples(examples, tokenizer, self.task, meta.get("max_length", 512), path)
        self.loader = sorted_example_loader(rows, batch_size, tokenizer.pad_token_id)
        self.hf = load_pretrained_model(model_dir, strict=True)  # an exported sub-network: tokexit's slim_bert
        run = run_examples(self.model, self.loader, self.task.regression, NoExit())  # the last exit
        gold = [r["target"] for r in rows]
        pred = run.predictions.tolist() if self.task.regression else run.predictions.long().tolist()
        self.result = {"scores": classification_scores(gold, pred, self.task),
                       "flops_per_example": run.full_flops / len(rows),
                       "backbone_parameters": sum(p.numel() for p in self.model.backbone.parameters())}

    def time(self) -> dict[str, float]:
        """Seconds over every batch with tokexit's engine (last exit only, as inference runs it) and as a plain
        Hugging Face encoder."""
        return {"tokexit_seconds": run_examples(self.model, self.loader, self.task.regression, NoExit()).seconds,
                "hf_seconds": hf_seconds(self.hf, self.loader)}


def timed_pair(sub: Measured, teacher: Measured, repeats: int) -> tuple[dict, dict]:
    """Best of ``repeats`` timings each, alternating sub-network and teacher so both see the same load."""
    best: list[dict[str, float]] = [{}, {}]
    for _ in range(repeats):
        for b, model in zip(best, (sub, teacher), strict=True):
            for key, seconds in model.time().items():
                b[key] = min(seconds, b.get(key, seconds))
    return best[0], best[1]


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
    columns = TsvColumns(**meta["columns"])
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
