"""Halt-and-copy: run a layer for the active tokens only.

Stopped tokens keep their hidden state (it is copied upward unchanged) and still serve as keys and values for
the active tokens of their sentence, but get no query, attention output, residual or feed-forward compute.
Active tokens of the whole batch are *gathered* into one packed (N_active, H) matrix for every per-token
operation and *scattered* back; only attention needs the sentence structure, for which queries are padded per
sentence to the largest number of active tokens in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokexit.backbones.base import LayerParts
from tokexit.engine.layer import encoder_layer


def gather_active(hidden: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, H), (B, T) bool -> packed (N, H) states of the active tokens and their (N,) row and column."""
    rows, cols = active.nonzero(as_tuple=True)
    return hidden[rows, cols], rows, cols


def scatter_active(hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Write packed (N, H) states back into (B, T, H) ``hidden`` at (rows, cols), in place."""
    return hidden.index_put_((rows, cols), packed)


def halted_layer(
    parts: LayerParts, hidden: torch.Tensor, attention_mask: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """One layer with halt-and-copy, in place on ``hidden`` (B, T, H).

    ``attention_mask`` (B, T) marks real tokens (keys), ``active`` (B, T) the tokens to update (a subset).
    Sentences without active tokens are skipped entirely. With every real token active this is the dense layer.
    """
    if bool((active == attention_mask.bool()).all()):
        return encoder_layer(parts, hidden, attention_mask.bool()[:, None, None, :])
    busy = active.any(1).nonzero().squeeze(1)  # (B',) sentences with work
    if busy.numel() == 0:
        return hidden
    if len(busy) == len(hidden):  # every sentence busy: slices, no copies
        busy_mask, busy_active, busy_hidden = attention_mask, active, hidden
    else:
        busy_mask, busy_active, busy_hidden = attention_mask[busy], active[busy], hidden[busy]
    t = int(busy_mask.sum(1).max())  # keys beyond the longest busy sentence are all padding
    states = busy_hidden[:, :t]  # (B', T', H)
    keys = busy_mask[:, :t].bool()[:, None, None, :]  # (B', 1, 1, T')
    act = busy_active[:, :t]  # (B', T')
    x, r, c = gather_active(states, act)  # (N, H)
    slot = (act.cumsum(1) - 1)[r, c]  # position of each active token among its sentence's active tokens
    b, n, d = len(busy), parts.num_heads, parts.head_dim
    q_max = int(act.sum(1).max())

    q = x.new_zeros(b, q_max, n * d)  # (B', Q, H) padded queries
    q[r, slot] = parts.query(x)
    k = parts.key(states).view(b, t, n, d).transpose(1, 2)  # (B', n, T', d)
    v = parts.value(states).view(b, t, n, d).transpose(1, 2)
    context = F.scaled_dot_product_attention(q.view(b, q_max, n, d).transpose(1, 2), k, v, attn_mask=keys)
    context = context.transpose(1, 2).reshape(b, q_max, n * d)[r, slot]  # (N, H) back to packed
    x = parts.attn_norm(parts.attn_out(context) + x)
    x = parts.ffn_norm(parts.ffn_out(parts.act(parts.ffn_in(x))) + x)
    return scatter_active(hidden, busy[r], c, x)
