"""ONNX Runtime for a Hugging Face token classifier, shared by the benchmark scripts: export (optionally with dynamic
batch and length), dynamic int8 quantization, and an inference session with a fixed number of threads.

Only ``onnxruntime`` (and ``onnx``/``onnxscript`` for the export) are needed; callers report an ImportError as
"not installed" rather than failing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

INPUTS = ("input_ids", "attention_mask")


def export_tagger(model: PreTrainedModel, example: dict[str, torch.Tensor], path: str | Path,
                  dynamic: bool = False) -> Path:
    """Write ``model`` (``input_ids``, ``attention_mask`` (B, T) -> ``logits`` (B, T, labels)) to ONNX at ``path``.

    ``example`` holds the two inputs traced; ``dynamic``: batch size and length are free dimensions (one file for
    every batch), else the graph is specialised to the example's shape."""
    path = Path(path)
    args = tuple(example[k] for k in INPUTS)
    axes = {name: {0: "batch", 1: "length"} for name in INPUTS} if dynamic else None
    if axes:
        axes["logits"] = {0: "batch", 1: "length"}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(model.eval(), args, str(path), input_names=list(INPUTS), output_names=["logits"],
                          dynamic_axes=axes, dynamo=False)
    return path


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """ONNX Runtime's dynamic quantization (int8 weights, activations quantized at run time) of every MatMul."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


def ort_session(path: str | Path, threads: int, spinning: bool = False, cuda: bool = False):
    """An ``onnxruntime.InferenceSession`` with ``threads`` intra-op threads (one inter-op thread). ``spinning``
    False: idle pool threads sleep instead of busy-waiting, so they do not slow whatever runs next."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    provider = ("CUDAExecutionProvider" if cuda and "CUDAExecutionProvider" in ort.get_available_providers()
                else "CPUExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=[provider])
