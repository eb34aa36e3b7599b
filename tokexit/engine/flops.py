"""Analytic FLOPs of the halt-and-copy mechanism (a multiply-add counts 2, like ``torch.utils.flop_counter``).

Per layer and sentence with T real tokens of which A are active, hidden H, attention width D (heads x head size;
H unless a narrower sub-network runs), feed-forward I:
K and V projections for all T tokens, everything else for the A active ones.
Only matrix products are counted (as the flop counter does): projections, attention, feed-forward, exit heads.
"""

from __future__ import annotations

import torch


def layer_flops(tokens: torch.Tensor, active: torch.Tensor, hidden: int, intermediate: int,
                attention: int | None = None) -> torch.Tensor:
    """FLOPs of one layer for each sentence: ``tokens`` and ``active`` are (B,) counts."""
    t, a = tokens.double(), active.double()
    d = hidden if attention is None else attention
    kv = 2 * 2 * t * hidden * d
    q_and_out = 2 * 2 * a * hidden * d
    attention = 2 * 2 * a * t * d  # scores QKᵀ and weighted sum of V, over all heads
    ffn = 2 * 2 * a * hidden * intermediate
    return torch.where(a > 0, kv + q_and_out + attention + ffn, torch.zeros_like(t))


def head_flops(words: torch.Tensor, hidden: int, num_labels: int) -> torch.Tensor:
    """FLOPs of an exit head applied to ``words`` (B,) words per sentence."""
    return words.double() * (2.0 * hidden * num_labels)


def full_model_flops(tokens: torch.Tensor, words: torch.Tensor, num_layers: int, hidden: int, intermediate: int,
                     num_labels: int, heads: str = "all", attention: int | None = None) -> torch.Tensor:
    """(B,) FLOPs of the full model: every token through every layer; exit heads after every layer
    (``heads='all'``, what a multi-exit model computes) or only the last (``'last'``, a plain tagger)."""
    per_layer = layer_flops(tokens, tokens, hidden, intermediate, attention)
    n_heads = num_layers if heads == "all" else 1
    return num_layers * per_layer + n_heads * head_flops(words, hidden, num_labels)
