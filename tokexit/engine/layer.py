"""One post-LN transformer encoder layer, computed from an adapter's :class:`LayerParts`.

This is the single place where tokexit does a layer's arithmetic, for the full model and for early exit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokexit.backbones.base import LayerParts


def key_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean mask for ``scaled_dot_product_attention``."""
    return attention_mask.bool()[:, None, None, :]


def encoder_layer(
    parts: LayerParts,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    *,
    hidden_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """(B, T, H) -> (B, T, H). ``mask`` is :func:`key_mask`'s (B, 1, 1, T) boolean key mask."""
    b, t, _ = hidden.shape
    n, d = parts.num_heads, parts.head_dim

    def heads(x: torch.Tensor) -> torch.Tensor:  # (B, T, n*d) -> (B, n, T, d)
        return x.view(b, t, n, d).transpose(1, 2)

    q, k, v = heads(parts.query(hidden)), heads(parts.key(hidden)), heads(parts.value(hidden))
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=attention_dropout if training else 0.0
    )  # (B, n, T, d)
    context = context.transpose(1, 2).reshape(b, t, n * d)
    attn = F.dropout(parts.attn_out(context), hidden_dropout, training)
    hidden = parts.attn_norm(attn + hidden)
    ffn = F.dropout(parts.ffn_out(parts.act(parts.ffn_in(hidden))), hidden_dropout, training)
    return parts.ffn_norm(ffn + hidden)
