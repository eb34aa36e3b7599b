"""One layer for a subset of the tokens: the packed compute behind every token fate.

Only the tokens that are *computed* get a query, attention output, residual and feed-forward compute; they are
*gathered* from the whole batch into one packed (N, H) matrix for every per-token operation and *scattered* back.
The *keys* are the tokens visible as keys and values: all real tokens (halt-and-copy: a stopped token's frozen
state still serves as key and value) or only the computed ones (drop: a stopped token has left the sequence).
Only attention needs the sentence structure, for which queries (and, when keys are a subset, keys and values)
are padded per sentence to the largest count in the batch.

A small block (at most :data:`DENSE_ROWS` token slots, e.g. one sentence at batch size 1) is computed whole and
the states of the tokens not computed are put back: a matrix product of a few rows costs the reading of its weights,
not its rows, so gathering would only add operations. Both ways compute the same thing for the computed tokens
(queries over the same keys); they differ only in the rounding of matrix products of different sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from tokexit.backbones.base import LayerParts
from tokexit.engine.layer import attend, encoder_layer, key_mask, project_qkv

DENSE_ROWS = 64  # blocks of at most this many (B x T) slots are computed whole (scripts/benchmark_dense_blocks.py)


def gather_active(hidden: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, H), (B, T) bool -> packed (N, H) states of the active tokens and their (N,) row and column."""
    rows, cols = active.nonzero(as_tuple=True)
    return hidden[rows, cols], rows, cols


def scatter_active(hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Write packed (N, H) states back into (B, T, H) ``hidden`` at (rows, cols), in place."""
    return hidden.index_put_((rows, cols), packed)


def _padded(values: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, b: int, width: int) -> torch.Tensor:
    """Packed (N, F) -> (b, width, F), row ``rows[i]``, position ``slots[i]``; zeros elsewhere."""
    out = values.new_zeros(b, width, values.shape[-1])
    out[rows, slots] = values
    return out


def whole_layer(layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], hidden: torch.Tensor, real: torch.Tensor,
                keys: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
    """Every token of ``hidden`` (B, T, H) through ``layer(states, key_mask)``, then the states of the tokens not
    ``computed`` put back: h ← m ⊙ Layer(h; keys) + (1 − m) ⊙ h. Differentiable (the training path); ``real``,
    ``keys``, ``computed`` (B, T) as in :func:`sparse_layer`."""
    if not torch.equal(keys, real):
        keys = keys | ~keys.any(1, keepdim=True) & real  # a row without keys: any (its states are put back)
    updated = layer(hidden, key_mask(keys))  # (B, T, H)
    return updated if torch.equal(computed, real) else torch.where(computed[..., None], updated, hidden)


def sparse_layer(
    parts: LayerParts, hidden: torch.Tensor, real: torch.Tensor, keys: torch.Tensor, computed: torch.Tensor
) -> torch.Tensor:
    """One layer for the ``computed`` tokens of ``hidden`` (B, T, H), in place; the others keep their state.

    ``real`` (B, T): non-padding tokens; ``keys`` (B, T): tokens visible as keys and values (``computed`` ⊆
    ``keys`` ⊆ ``real``). Sentences without computed tokens are skipped. With every real token computed this is
    the dense layer.
    """
    if torch.equal(computed, real):
        return encoder_layer(parts, hidden, key_mask(real))
    if hidden.shape[0] * hidden.shape[1] <= DENSE_ROWS:
        return whole_layer(partial(encoder_layer, parts), hidden, real, keys, computed)
    busy = computed.any(1).nonzero().squeeze(1)  # (B',) sentences with work
    if busy.numel() == 0:
        return hidden
    if len(busy) == len(hidden):  # every sentence busy: slices, no copies
        busy_real, busy_keys, busy_computed, busy_hidden = real, keys, computed, hidden
    else:
        busy_real, busy_keys, busy_computed, busy_hidden = real[busy], keys[busy], computed[busy], hidden[busy]
    t = int(busy_real.sum(1).max())  # columns beyond the longest busy sentence are all padding
    states = busy_hidden[:, :t]  # (B', T', H)
    act, visible = busy_computed[:, :t], busy_keys[:, :t]  # (B', T')
    x, r, c = gather_active(states, act)  # (N, H)
    slot = (act.cumsum(1) - 1)[r, c]  # position of each computed token among its sentence's computed tokens
    b, n, d = len(busy), parts.num_heads, parts.head_dim
    q_max = int(act.sum(1).max())
    every_key = torch.equal(visible, busy_real[:, :t])  # halt-and-copy: every real token is a key
    own_keys = not every_key and torch.equal(visible, act)  # drop: the computed tokens are the keys
    if own_keys:  # queries, keys and values of the same packed rows: one fused GEMM
        qx, kx, vx = project_qkv(parts, x)  # (N, n*d) each
    else:
        qx = parts.query(x)
    q = _padded(qx, r, slot, b, q_max)  # (B', Q, n*d) padded queries

    if every_key:
        k = parts.key(states)  # (B', T', n*d)
        v = parts.value(states)
        visible_keys = visible
    else:  # keys are a subset: pack them too, so attention shrinks with the sequence
        if own_keys:
            kr, kslot, k_max = r, slot, q_max
        else:
            kx, kr, kc = gather_active(states, visible)
            kslot, k_max = (visible.cumsum(1) - 1)[kr, kc], int(visible.sum(1).max())
            kx, vx = parts.key(kx), parts.value(kx)
        k = _padded(kx, kr, kslot, b, k_max)  # (B', K, n*d)
        v = _padded(vx, kr, kslot, b, k_max)
        visible_keys = torch.arange(k_max, device=x.device)[None, :] < visible.sum(1)[:, None]  # (B', K)
    k_len = k.shape[1]
    k = k.view(b, k_len, n, d).transpose(1, 2)  # (B', n, K, d)
    v = v.view(b, k_len, n, d).transpose(1, 2)
    context = attend(q.view(b, q_max, n, d).transpose(1, 2), k, v, visible_keys[:, None, None, :])
    context = context.transpose(1, 2).reshape(b, q_max, n * d)[r, slot]  # (N, n*d) back to packed
    x = parts.attn_norm(parts.attn_out(context) + x)
    x = parts.ffn_norm(parts.ffn_out(parts.act(parts.ffn_in(x))) + x)
    return scatter_active(hidden, busy[r], c, x)
