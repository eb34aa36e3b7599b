"""Lower-precision inference for the backbone: ``int8`` (weights int8, activations quantized on the fly) or ``bf16``
(the backbone in bfloat16, :mod:`tokexit.engine.bf16`); exit heads, pooler and selector stay fp32 in both.

``quantize_model(model, "int8")`` swaps each ``nn.Linear`` of the backbone's layers (query, key, value, attention
output, feed-forward) for an :class:`Int8Linear`. The engine calls a layer's parts as modules
(``parts.query(x)``), so the packed gather/scatter loop, every token fate and every exit policy run unchanged on
the quantized model.

Kernel (chosen by measurement on this project's 2-core Sapphire Rapids CPU, MiniLM-L6, batch 32): PyTorch's own
fbgemm dynamic linear (``torch.ops.quantized.linear_dynamic``, the kernel behind the deprecated
``torch.ao.quantization.quantize_dynamic``) with per-output-channel int8 weights. torchao 0.18's
``quantize_(model, Int8DynamicActivationInt8WeightConfig())`` ran the full model at 0.6-1.0x fp32 eagerly (tensor
subclass dispatch, ``torch._int_mm``), and under ``torch.compile`` its CPU path multiplies in float (1.1-1.3x);
this module ran it at 1.3-1.4x with one thread (a loaded machine: see scripts/profile_layers.py for timing).
Query, key and value share one :class:`Int8Linear` of their stacked weights (``joint_qkv``), so a layer quantizes
its input once for the three. Embeddings, exit heads, the pooler and the selector stay fp32 (their GEMMs are a few
columns wide). F1 cost of the full model: reports/benchmark_tagging.md (CoNLL-2003 eng.testb 86.63 -> 86.44).

Batch independence: the fbgemm kernel picks *one* activation scale for the whole input matrix, and the engine's
input is the packed batch, so a sentence's output would depend on its neighbours. :class:`Int8Linear` therefore
scales every row (token) to max |x| = 1 before the kernel and back after it (per-token activation scales), and
appends one constant row ``[1, -1, 0, ...]`` so that the kernel's tensor range is always exactly [-1, 1]: the
quantization of a token then depends on that token alone.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from tokexit.engine.bf16 import Bf16Linear, float_inputs, fuse_gelu, has_fast_bf16

SCHEMES = ("int8", "bf16")


def _has_vnni() -> bool:
    """Whether this CPU has AVX512-VNNI/AMX int8 dot products (no int16 saturation with full 8-bit activations)."""
    for probe in (getattr(torch._C._cpu, "_is_vnni_supported", None), getattr(torch.cpu, "_is_vnni_supported", None)):
        if probe is not None:
            return bool(probe())
    return False


class Int8Linear(nn.Module):
    """Inference-only int8 version of an ``nn.Linear``: (..., in_features) -> (..., out_features).

    Weights: int8, one scale per output channel. Activations: one scale per row (token), computed on the fly.
    Not differentiable, CPU only, and not saveable: ``state_dict()`` raises, so a quantized model is never
    written as if it were the fp32 one (save the fp32 model and quantize after loading).
    """

    def __init__(self, linear: nn.Linear, reduce_range: bool | None = None):
        super().__init__()
        if linear.weight.device.type != "cpu":
            raise ValueError(f"int8 quantization runs on CPU only; the model is on {linear.weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()  # (out, in)
        scales = (weight.abs().amax(1) / 127).clamp(min=1e-12).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch, but still the packing input
            warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel")
            qweight = torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0,
                                                 torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)  # bias added after the row scales
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone(),
                             persistent=False)
        pin = torch.zeros(self.in_features)
        pin[0], pin[-1] = 1.0, -1.0
        self.register_buffer("pin", pin, persistent=False)  # (in,) the range-pinning row
        # without VNNI, fbgemm's u8*s8 pairs saturate int16 unless activations use 7 bits
        self.reduce_range = not _has_vnni() if reduce_range is None else reduce_range

    def __getattr__(self, name: str):
        if name == "weight":
            raise AttributeError("an int8-quantized linear layer has no float weight (DynaBERT sub-networks and "
                                 "training need the fp32 model)")
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)  # (M, in)
        scale = torch.maximum(x.amax(1, keepdim=True), -x.amin(1, keepdim=True)).clamp_(min=1e-12)  # (M, 1) max |x|
        rows = x.new_empty(len(x) + 1, self.in_features)  # (M + 1, in): the last row pins the range to [-1, 1]
        torch.div(x, scale, out=rows[:-1])
        rows[-1] = self.pin
        y = torch.ops.quantized.linear_dynamic(rows, self._packed, self.reduce_range)[:-1]  # (M, out)
        y = torch.addcmul(self.bias, y, scale) if self.bias is not None else y * scale
        return y.reshape(*shape[:-1], self.out_features)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError("an int8-quantized model cannot be saved (its weights are packed int8): save the fp32 "
                           "model and quantize it after loading (quantize='int8')")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, reduce_range={self.reduce_range}"


def _swap_linears(module: nn.Module, make: type[nn.Module]) -> int:
    """Replace every ``nn.Linear`` under ``module`` by ``make(linear)``; returns how many."""
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            count += 1
        else:
            count += _swap_linears(child, make)
    return count


def _stacked(linears: list[nn.Linear]) -> nn.Linear:
    """One ``nn.Linear`` whose outputs are those of ``linears`` side by side (same input)."""
    first = linears[0].weight
    joint = nn.Linear(first.shape[1], sum(m.out_features for m in linears), device=first.device, dtype=first.dtype)
    with torch.no_grad():
        joint.weight.copy_(torch.cat([m.weight for m in linears]))
        joint.bias.copy_(torch.cat([m.bias for m in linears]))
    return joint


def _joint_projections(model: nn.Module, make: type[nn.Module]) -> dict[int, nn.Module]:
    """Per distinct layer of a tokexit model (layer index -> module): one ``make`` linear of its query, key and
    value stacked, so that the layer runs one GEMM (and quantizes its input once) for all three
    (:func:`tokexit.engine.layer.project_qkv`)."""
    adapter = getattr(model, "adapter", None)
    if adapter is None:
        return {}
    seen, out = set(), {}
    for index in range(adapter.num_layers):
        parts = adapter.layer(index)
        trio = [parts.query, parts.key, parts.value]
        if id(parts.query) in seen or any(type(m) is not nn.Linear or m.bias is None for m in trio):
            continue
        seen.add(id(parts.query))
        out[index] = make(_stacked(trio))
    return out


def backbone_layers(model: nn.Module) -> list[nn.Module]:
    """The modules holding the layers' linear layers: the encoder of a tokexit model's backbone."""
    backbone = getattr(model, "backbone", model)
    encoder = getattr(backbone, "encoder", None)
    if encoder is None:
        raise ValueError(f"quantize_model: {type(backbone).__name__} has no .encoder (not a Hugging Face encoder)")
    return [encoder]


def quantize_model(model: nn.Module, scheme: str | None) -> nn.Module:
    """Convert ``model``'s backbone in place for inference and return it; ``scheme`` None leaves it unchanged.

    ``model``: a :class:`~tokexit.engine.encoder.MultiExitEncoder` (tagger or classifier) or a bare Hugging Face
    encoder; it is put in eval mode. Its exit heads, pooler and selector stay fp32 (bf16 states reach them as fp32),
    so exit decisions are computed in fp32 from the converted layers' states. Schemes:

    - ``"int8"``: the layers' linear layers int8 (:class:`Int8Linear`; CPU only); embeddings stay fp32;
    - ``"bf16"``: the whole backbone (embeddings, layers) bfloat16, its linear layers
      :class:`~tokexit.engine.bf16.Bf16Linear` (any device; on a CPU without native bf16 it is slower: a warning).
    """
    if scheme is None:
        return model
    if scheme not in SCHEMES:
        raise ValueError(f"quantize: unknown scheme {scheme!r}; accepted: {', '.join(SCHEMES)} (or None)")
    subnetwork = getattr(model, "subnetwork", None)
    if subnetwork is not None and not subnetwork.is_full:
        raise ValueError("quantize: a DynaBERT sub-network slices the float weights; export it "
                         "(tokexit.export) and quantize the exported model")
    model.eval()
    make = Int8Linear if scheme == "int8" else Bf16Linear
    joints = _joint_projections(model, make)
    count = sum(_swap_linears(part, make) for part in backbone_layers(model))
    for index, joint in joints.items():
        parts = model.adapter.layer(index)
        for module in (parts.query, parts.key, parts.value):
            module.__dict__["joint_qkv"] = joint  # a plain attribute: not a submodule of each of the three
    if count == 0:
        raise ValueError(f"quantize: no nn.Linear found in the layers of {type(model).__name__} (already quantized?)")
    if scheme == "bf16":
        _backbone_to_bf16(model)
    return model


def _backbone_to_bf16(model: nn.Module) -> None:
    """The backbone's remaining parameters (embeddings, layer norms) to bf16; every fp32 linear layer outside it
    (exit heads, pooler, selector) casts its bf16 input to fp32."""
    backbone = getattr(model, "backbone", model)
    backbone.to(torch.bfloat16)
    adapter = getattr(model, "adapter", None)
    for index in range(adapter.num_layers if adapter is not None else 0):  # the feed-forward GELU into its GEMM
        parts = adapter.layer(index)
        fuse_gelu(backbone, parts.ffn_in, parts.act)
    if next(backbone.parameters()).device.type == "cpu" and not has_fast_bf16():
        warnings.warn("quantize='bf16': this CPU has no native bf16 matrix units (AMX or AVX512-BF16); bf16 runs "
                      "slower than fp32 here", stacklevel=3)
    inside = {id(m) for m in backbone.modules()}
    for module in model.modules():
        if type(module) is nn.Linear and id(module) not in inside:
            module.register_forward_pre_hook(float_inputs)
