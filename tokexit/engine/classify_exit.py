"""Batched early exit for sequence classification (PABEE, entropy exits, truncation).

Every example decides on its own after every step; finished examples leave the batch (their rows are dropped
and the padding that only they needed is trimmed), the others go on. Results do not depend on the batch:
an example sees only its own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.flops import layer_flops
from tokexit.engine.layer import encoder_layer, key_mask
from tokexit.exits.base import ExitPolicy


def classification_flops(tokens: torch.Tensor, layers_run: torch.Tensor, heads_run: torch.Tensor,
                         shape: dict[str, int]) -> torch.Tensor:
    """(B,) analytic FLOPs: ``layers_run`` dense layers over ``tokens`` real tokens and ``heads_run`` exits
    (shared pooler + classifier) per example."""
    h = shape["hidden"]
    per_layer = layer_flops(tokens, tokens, h, shape["intermediate"], shape["attention"])
    per_head = 2.0 * h * h + 2.0 * h * shape["num_labels"]
    return layers_run.double() * per_layer + heads_run.double() * per_head


@dataclass
class ClassifyExitOutput:
    logits: torch.Tensor  # (B, C) each example's logits at its exit
    exit_layers: torch.Tensor  # (B,) 1-based step at which each example stopped
    heads_run: torch.Tensor  # (B,) exit heads evaluated for each example
    tokens: torch.Tensor  # (B,) real tokens of each example
    shape: dict[str, int]  # MultiExitEncoder.cost_shape()

    @property
    def flops(self) -> torch.Tensor:
        return classification_flops(self.tokens, self.exit_layers, self.heads_run, self.shape)


@torch.inference_mode()
def classify_early_exit(
    model: MultiExitClassifier,
    policy: ExitPolicy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> ClassifyExitOutput:
    """Run ``model`` with ``policy`` on a (B, T) batch."""
    plan, shape = model.plan, model.cost_shape()
    b, device = len(input_ids), input_ids.device
    logits_out = torch.zeros(b, shape["num_labels"], device=device)
    exit_layers = torch.zeros(b, dtype=torch.long, device=device)
    heads_run = torch.zeros_like(exit_layers)
    tokens = attention_mask.sum(1)
    rows = torch.arange(b, device=device)  # original index of every example still running
    state = policy.start_examples(b, device)
    mask = attention_mask
    hidden = model.adapter.embed(input_ids, token_type_ids)  # (B, T, H)
    for step, (layer, exit_index) in enumerate(plan):
        hidden = encoder_layer(model.layer_parts(layer), hidden, key_mask(mask))  # (b, t, H)
        last = step == len(plan) - 1
        if not (last or policy.can_stop(step, len(plan))):
            continue
        logits = model.exits[exit_index](model.pooler(hidden, mask)).float()  # (b, C)
        heads_run[rows] += 1
        stop = torch.ones(len(rows), dtype=torch.bool, device=device) if last else \
            policy.decide_examples(step, len(plan), logits, state)
        logits_out[rows[stop]] = logits[stop]
        exit_layers[rows[stop]] = step + 1
        if bool(stop.all()):
            break
        if bool(stop.any()):  # finished examples leave the batch
            keep = ~stop
            rows, hidden, mask = rows[keep], hidden[keep], mask[keep]
            state = {k: v[keep] for k, v in state.items()}
            t = int(mask.any(0).nonzero().max()) + 1  # trailing columns that are padding for every row left
            hidden, mask = hidden[:, :t], mask[:, :t]
    return ClassifyExitOutput(logits_out, exit_layers, heads_run, tokens, shape)
