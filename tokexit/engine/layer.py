"""One post-LN transformer encoder layer, computed from an adapter's :class:`LayerParts`.

This is the single place where tokexit does a layer's arithmetic, for the full model and for early exit.

At inference (no gradients wanted) query, key and value run as one GEMM of their stacked weights
(:func:`fused_qkv`); training, a sliced sub-network and int8 layers call the three modules.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from tokexit.backbones.base import LayerParts

# query module -> (versions and storages of the three weights and biases it was built from, fused weight, bias)
_FUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def key_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean key mask for :func:`attend`, or None where every token
    is real (no mask to apply)."""
    real = attention_mask.bool()
    return None if bool(real.all()) else real[:, None, None, :]


def forget_fused() -> None:
    """Drop every cached fused query/key/value weight. Called whenever a model switches between training and
    evaluation (:meth:`~tokexit.engine.encoder.MultiExitEncoder.train`): fused optimizers (``AdamW(fused=True)``)
    update weights in place without bumping their version counter, so the stamp alone cannot see a training step."""
    _FUSED.clear()


def _stamp(linears: tuple[nn.Linear, ...]) -> tuple:
    """What identifies the current values of the linears' weights and biases (in-place updates bump ``_version``)."""
    return tuple((t.data_ptr(), t._version, t.shape) for m in linears for t in (m.weight, m.bias))


def fused_qkv(parts: LayerParts) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (3·n·d, H) weight and (3·n·d,) bias of query, key and value stacked, for one GEMM instead of three; None
    where they cannot be fused: not three plain biased ``nn.Linear`` (a sliced sub-network, an int8 model) or
    gradients wanted (training keeps the three modules, so gradients reach them as they are). Cached per layer and
    rebuilt whenever a weight changes in place or is replaced."""
    linears = (parts.query, parts.key, parts.value)
    if any(type(m) is not nn.Linear or m.bias is None for m in linears):
        return None
    if any(m.weight.is_inference() for m in linears):  # created under inference_mode: no version counter to check
        return None
    if torch.is_grad_enabled() and any(m.weight.requires_grad or m.bias.requires_grad for m in linears):
        return None
    stamp = _stamp(linears)
    cached = _FUSED.get(parts.query)
    if cached is None or cached[0] != stamp:
        with torch.no_grad():
            weight = torch.cat([m.weight for m in linears])  # (3·n·d, H)
            bias = torch.cat([m.bias for m in linears])
        cached = _FUSED[parts.query] = (stamp, weight, bias)
    return cached[1], cached[2]


def project_qkv(parts: LayerParts, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(…, H) -> query, key and value (…, n·d) each: one fused GEMM where :func:`fused_qkv` allows it."""
    joint = getattr(parts.query, "joint_qkv", None)  # int8 layers carry one module for the three
    if joint is not None and getattr(parts.key, "joint_qkv", None) is joint and \
            getattr(parts.value, "joint_qkv", None) is joint:
        return joint(hidden).chunk(3, dim=-1)
    fused = fused_qkv(parts)
    if fused is None:
        return parts.query(hidden), parts.key(hidden), parts.value(hidden)
    return F.linear(hidden, *fused).chunk(3, dim=-1)


SCORES_LIMIT = 1 << 22  # inference attention materialises at most this many scores (16 MiB fp32) in batched GEMMs


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float = 0.0,
           ) -> torch.Tensor:
    """Attention of (B, n, Q, d) queries over (B, n, K, d) keys and values; ``mask`` (B, 1, 1, K) bool: visible
    keys (each query row sees at least one), or None: every key. Returns (B, n, Q, d) in the queries' dtype.

    On the CPU at inference, while the (B·n, Q, K) scores fit :data:`SCORES_LIMIT`, the scores are one batched
    GEMM in fp32 (the mask, if any, as an additive bias), a softmax and a second batched GEMM: for the short
    sequences of tagging that is faster than PyTorch's CPU flash-attention kernel, whose fixed cost per (sentence,
    head) dominates there, and above all than its bf16 variant. Longer inputs, GPUs and training (dropout, gradients)
    use ``scaled_dot_product_attention``."""
    b, n, q_len, d = q.shape
    k_len, dtype = k.shape[2], q.dtype
    if dropout or q.requires_grad or q.device.type != "cpu" or b * n * q_len * k_len > SCORES_LIMIT:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    def fp32(x: torch.Tensor) -> torch.Tensor:  # (B, n, L, d) view, any dtype -> (B·n, L, d) fp32, one copy
        return torch.empty(x.shape, dtype=torch.float32).copy_(x).view(b * n, x.shape[2], d)

    q32, k32 = fp32(q), fp32(k).transpose(1, 2)
    if mask is None:
        scores = torch.bmm(q32, k32).mul_(d ** -0.5)  # (B·n, Q, K)
    else:
        bias = torch.zeros(mask.shape, dtype=torch.float32).masked_fill_(~mask, float("-inf"))  # (B, 1, 1, K)
        scores = torch.baddbmm(bias.expand(b, n, q_len, k_len).reshape(b * n, q_len, k_len), q32, k32,
                               alpha=d ** -0.5)
    context = torch.bmm(scores.softmax(-1), fp32(v))  # (B·n, Q, d)
    return context.view(b, n, q_len, d).to(dtype)


def encoder_layer(
    parts: LayerParts,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    hidden_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """(B, T, H) -> (B, T, H). ``mask``: :func:`key_mask`'s (B, 1, 1, T) boolean key mask, or None (every token
    is a key: no padding)."""
    b, t, _ = hidden.shape
    n, d = parts.num_heads, parts.head_dim
    q, k, v = (x.view(b, t, n, d).transpose(1, 2) for x in project_qkv(parts, hidden))  # (B, n, T, d) each
    context = attend(q, k, v, mask, attention_dropout if training else 0.0)  # (B, n, T, d)
    attn = parts.attn_out(context.transpose(1, 2).reshape(b, t, n * d))  # (B, T, H)
    if training:
        attn = F.dropout(attn, hidden_dropout, True)
    hidden = parts.attn_norm(attn + hidden)
    ffn = parts.ffn_out(parts.act(parts.ffn_in(hidden)))
    if training:
        ffn = F.dropout(ffn, hidden_dropout, True)
    return parts.ffn_norm(ffn + hidden)
