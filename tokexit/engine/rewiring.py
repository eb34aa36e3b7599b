"""DynaBERT rewiring: measure how much every attention head and feed-forward neuron matters, then reorder them
so that the first ones (those a narrower sub-network keeps) are the most important. Reordering changes nothing
in the full model's output.

Importance of head h (first-order, = |∂L/∂head_mask_h|): |Σ over the attention-output columns j of h of
W_o[:, j] · ∂L/∂W_o[:, j]|. Neuron i: |Σⱼ W1ᵢⱼ ∂W1ᵢⱼ + b1ᵢ ∂b1ᵢ| + |Σⱼ W2ⱼᵢ ∂W2ⱼᵢ|. Both summed over batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from tokexit.engine.encoder import MultiExitEncoder


def importance(encoder: MultiExitEncoder, batches: Iterable[dict], loss_fn: Callable[[dict], torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, heads) and (L, neurons) importance scores, from the gradients of ``loss_fn(batch)`` on ``batches``."""
    parts = [encoder.adapter.layer(i) for i in range(encoder.num_layers)]
    heads = torch.zeros(len(parts), parts[0].num_heads)
    neurons = torch.zeros(len(parts), parts[0].ffn_in.out_features)
    weights = [p for p in encoder.parameters() if p.requires_grad]
    for batch in batches:
        encoder.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        with torch.no_grad():
            for i, p in enumerate(parts):
                wo = p.attn_out.weight * p.attn_out.weight.grad  # (H, heads * d)
                heads[i] += wo.sum(0).view(p.num_heads, p.head_dim).sum(1).abs().cpu()
                w1 = (p.ffn_in.weight * p.ffn_in.weight.grad).sum(1) + p.ffn_in.bias * p.ffn_in.bias.grad
                w2 = (p.ffn_out.weight * p.ffn_out.weight.grad).sum(0)
                neurons[i] += (w1.abs() + w2.abs()).cpu()
    for w in weights:
        w.grad = None
    return heads, neurons


@torch.no_grad()
def rewire(encoder: MultiExitEncoder, head_scores: torch.Tensor, neuron_scores: torch.Tensor) -> None:
    """Reorder every layer's heads and neurons by descending score, in place (the full model is unchanged)."""
    if len({id(encoder.adapter.layer(i).query) for i in range(encoder.num_layers)}) != encoder.num_layers:
        raise ValueError("rewiring needs separate weights per layer (ALBERT shares them)")
    for i in range(encoder.num_layers):
        p = encoder.adapter.layer(i)
        d = p.head_dim
        head_order = torch.argsort(head_scores[i], descending=True)
        rows = (head_order[:, None] * d + torch.arange(d)).flatten()  # the rows of the heads, in the new order
        for linear in (p.query, p.key, p.value):
            linear.weight.copy_(linear.weight[rows])
            linear.bias.copy_(linear.bias[rows])
        p.attn_out.weight.copy_(p.attn_out.weight[:, rows])
        order = torch.argsort(neuron_scores[i], descending=True)
        p.ffn_in.weight.copy_(p.ffn_in.weight[order])
        p.ffn_in.bias.copy_(p.ffn_in.bias[order])
        p.ffn_out.weight.copy_(p.ffn_out.weight[:, order])
