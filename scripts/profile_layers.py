"""Where the full-model path's time goes, against plain transformers and ONNX Runtime on the same batches.

A trained tagger's full model (``early_exit_forward`` with ``NoExit``: the packed layer loop in
``tokexit/engine/loop.py`` -> ``halting.sparse_layer`` -> ``layer.encoder_layer`` when every token is computed)
runs on length-sorted batches of a CoNLL file, interleaved with ``AutoModelForTokenClassification`` holding the
same weights (backbone + last exit head) and with ONNX Runtime on that model exported with dynamic axes (when
``onnxruntime`` is installed). Every runner sees the same padded batches; the best of ``--repeats`` passes over
the sample is kept. Then ``torch.profiler`` prints the per-op self CPU time of one tokexit pass, and the ratio
``ours / ORT`` in throughput (ORT time / tokexit time; the issue's goal is >= 0.9).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/profile_layers.py --threads 2
    OMP_NUM_THREADS=2 .venv/bin/python scripts/profile_layers.py --threads 2 --quantize int8

The batches are a sample spread over the length distribution (``--batches``, every k-th of the sorted loader),
so the mix of lengths is that of the whole file.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForTokenClassification

from tokexit.data.tagging import load_corpus
from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.engine.quantize import quantize_model
from tokexit.exits import NoExit
from tokexit.inference.tagging import corpus_loader
from tokexit.model_io import load_tagger

Batch = dict[str, torch.Tensor]


def hf_tagger(encoder: MultiExitEncoder) -> torch.nn.Module:
    """``AutoModelForTokenClassification`` with the encoder's backbone weights and its last exit head."""
    config = copy.deepcopy(encoder.backbone.config)
    config.num_labels = encoder.num_labels
    model = AutoModelForTokenClassification.from_config(config)
    missing, unexpected = model.base_model.load_state_dict(encoder.backbone.state_dict(), strict=False)
    if missing or any(not k.startswith("pooler.") for k in unexpected):
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    model.classifier.load_state_dict(encoder.exits[-1].classifier.state_dict())
    return model.eval()


def ort_session(model: torch.nn.Module, batch: Batch, folder: str, threads: int):
    """An ONNX Runtime session of ``model`` with dynamic batch and length, or a string saying why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime not installed"
    path = str(Path(folder) / "tagger.onnx")
    axes = {0: "batch", 1: "length"}
    torch.onnx.export(model, (batch["input_ids"], batch["attention_mask"]), path, dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def runners(encoder: MultiExitEncoder, hf: torch.nn.Module, session, batches: list[Batch]) -> dict[str, Callable]:
    def ours() -> None:
        for b in batches:
            early_exit_forward(encoder, NoExit(), b["input_ids"], b["attention_mask"], b["word_positions"],
                               b["token_word"])

    def plain() -> None:
        for b in batches:
            hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)

    out = {"tokexit": ours, "transformers": plain}
    if not isinstance(session, str):
        feeds = [{"input_ids": b["input_ids"].numpy(), "attention_mask": b["attention_mask"].numpy()}
                 for b in batches]

        def onnx() -> None:
            for feed in feeds:
                session.run(None, feed)[0].argmax(-1)

        out["onnxruntime"] = onnx
    return out


def time_interleaved(fns: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, the functions alternating within a round."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/conll2003-minilm-l6/model", help="a tokexit tagger directory")
    p.add_argument("--data", default="/work/shared/data/conll2003/eng.testb")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=12, help="batches in the sample (spread over the lengths)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quantize", default=None, help="quantize tokexit's model (int8) before timing")
    p.add_argument("--rows", type=int, default=25, help="profiler rows to print")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    encoder, tokenizer, labels, _ = load_tagger(args.model)
    encoder.eval()
    hf = hf_tagger(encoder)
    quantize_model(encoder, args.quantize)
    loader = list(corpus_loader(load_corpus(args.data), tokenizer, labels, args.batch_size, 512))
    loader.sort(key=lambda b: b["attention_mask"].shape[1])
    step = max(1, len(loader) // args.batches)
    batches = loader[step // 2::step][: args.batches]
    tokens = sum(int(b["attention_mask"].numel()) for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    print(f"{len(batches)} batches of {args.batch_size}, {tokens} padded / {real} real subwords, "
          f"lengths {[b['attention_mask'].shape[1] for b in batches]}, {args.threads} threads")

    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        session = ort_session(hf, batches[-1], folder, args.threads)
        fns = runners(encoder, hf, session, batches)
        best = time_interleaved(fns, args.repeats)
        for name, seconds in best.items():
            print(f"{name:14s} {seconds * 1e3:9.1f} ms  {real / seconds:9.0f} real subwords/s  "
                  f"x{best['tokexit'] / seconds:.2f} of tokexit's time")
        if "onnxruntime" in best:
            print(f"tokexit / ORT throughput: {best['onnxruntime'] / best['tokexit']:.3f}  "
                  f"(transformers / ORT: {best['onnxruntime'] / best['transformers']:.3f})")
        else:
            print(f"ONNX Runtime: {session}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fns["tokexit"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fns["transformers"]()
        print("transformers:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
