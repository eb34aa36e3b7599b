"""bfloat16 inference: the backbone's weights and states in bfloat16, its matrix products on the CPU's bf16 units.

On CPUs with AMX or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) PyTorch runs bf16 matrix
products through oneDNN at several times the fp32 rate; bf16 keeps fp32's range with an 8-bit mantissa, so a
trained fp32 model runs in it as it is, without calibration. On CPUs without them bf16 is *slower* than fp32:
:func:`tokexit.engine.quantize.quantize_model` warns.

oneDNN builds (and caches, a bounded number of) kernels per matrix shape, at about a millisecond each, and the
packed layer loop multiplies a different number of rows almost every call (the tokens still computed).
:class:`Bf16Linear` therefore pads the rows to a *bucket* (:func:`row_bucket`, at most 1/8 more rows) so that a
whole corpus needs a few hundred kernels, built once. Padding rows are zeros and are cut off: a row's result
depends on that row alone (up to the kernel's rounding, as in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EXACT_ROWS = 64  # up to this many rows a matrix product runs unpadded (few shapes)


def row_bucket(rows: int) -> int:
    """``rows`` rounded up to the next bucket: itself up to :data:`EXACT_ROWS`, then eight buckets per power of two
    (65-72 -> 72, 129-144 -> 144, ...)."""
    if rows <= EXACT_ROWS:
        return rows
    step = 1 << (rows.bit_length() - 4)
    return -(-rows // step) * step


class Bf16Linear(nn.Module):
    """Inference-only bfloat16 version of an ``nn.Linear``: (..., in_features) -> (..., out_features), bf16 out.

    Not differentiable and not saveable (save the fp32 model and convert after loading)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.gelu = False  # True: this layer applies the exact GELU to its output (fused: :func:`fuse_gelu`)
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16).clone(), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16).clone(),
                             persistent=False)
        self.packed = prepacked(self.weight)  # oneDNN's blocked copy of the weight (CPU), or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16:
            x = x.to(torch.bfloat16)
        if self.packed is None or x.device.type != "cpu":
            y = F.linear(x, self.weight, self.bias)
            return F.gelu(y) if self.gelu else y
        post_op, algorithm = ("gelu", "none") if self.gelu else ("none", "")  # "none": erf GELU, not tanh
        m = x.numel() // self.in_features
        if (rows := row_bucket(m)) == m:  # (..., in) -> (..., out) as it is
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, post_op, [], algorithm)
        padded = F.pad(x.reshape(m, self.in_features), (0, 0, 0, rows - m))  # (M', in): zero rows past M
        y = torch.ops.mkldnn._linear_pointwise(padded, self.packed, self.bias, post_op, [], algorithm)
        return y[:m].view(*x.shape[:-1], self.out_features)  # (..., out)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError("a bf16-converted model cannot be saved: save the fp32 model and convert it after "
                           "loading (quantize='bf16')")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, gelu={self.gelu}"


def exact_gelu(module: nn.Module) -> bool:
    """Whether ``module`` is the exact (erf) GELU: ``nn.GELU()`` or Hugging Face's ``GELUActivation``."""
    if type(module) is nn.GELU:
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is F.gelu


def fuse_gelu(root: nn.Module, ffn_in: nn.Module, act: nn.Module) -> bool:
    """Fold the activation ``act`` that follows ``ffn_in`` (a :class:`Bf16Linear`) into it, replacing ``act`` by
    ``nn.Identity`` wherever ``root`` holds it; False (nothing changed) unless ``act`` is the exact GELU."""
    if not isinstance(ffn_in, Bf16Linear) or not exact_gelu(act):
        return False
    ffn_in.gelu = True
    for parent in root.modules():
        for name, child in list(parent.named_children()):
            if child is act:
                setattr(parent, name, nn.Identity())
    return True


PACK_ROWS = 256  # the row count oneDNN lays the prepacked weight out for (a hint; any count runs)


def prepacked(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (out, in) bf16 reordered once into oneDNN's blocked layout, as ``torch.compile``'s CPU freezing
    does (``mkldnn._reorder_linear_weight``): a bf16 matrix product then skips the per-call reorder (faster, most of
    all for few rows), with the same results. None where that private op is absent or refuses the weight (another
    PyTorch build, a GPU tensor): :class:`Bf16Linear` then calls ``F.linear``."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
        probe = torch.zeros(1, weight.shape[1], dtype=weight.dtype)
        torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return None
    return packed


def float_inputs(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: floating-point tensor arguments to float32 (fp32 heads fed bf16 states)."""
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX512-BF16)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe is not None and probe() for probe in probes)
