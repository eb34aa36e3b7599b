"""Batched early exit for sequence classification (PABEE, entropy exits, truncation) on the layer loop.

Every example decides on its own after every step; a finished example's tokens all stop, so it leaves the batch
(the loop drops its row and trims the padding only it needed), the others go on. Results do not depend on the
batch: an example sees only its own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.flops import layer_flops
from tokexit.engine.loop import Exits, LoopRecord, run_layers
from tokexit.exits.base import ExitPolicy
from tokexit.fates.base import TokenFate


def pooled_head_flops(shape: dict[str, int]) -> float:
    """FLOPs of one exit on one example: the shared pooler (H x H) and the classifier (H x C)."""
    h = shape["hidden"]
    return 2.0 * h * h + 2.0 * h * shape["num_labels"]


def classification_flops(tokens: torch.Tensor, layers_run: torch.Tensor, heads_run: torch.Tensor,
                         shape: dict[str, int]) -> torch.Tensor:
    """(B,) analytic FLOPs of dense runs: ``layers_run`` layers over ``tokens`` real tokens and ``heads_run``
    exits per example (the full model's reference: every layer, the last exit)."""
    per_layer = layer_flops(tokens, tokens, shape["hidden"], shape["intermediate"], shape["attention"])
    return layers_run.double() * per_layer + heads_run.double() * pooled_head_flops(shape)


@dataclass
class ClassifyExitOutput:
    logits: torch.Tensor  # (B, C) each example's logits at its exit
    exit_layers: torch.Tensor  # (B,) 1-based step at which each example stopped
    heads_run: torch.Tensor  # (B,) exit heads evaluated for each example
    record: LoopRecord  # per step run: tokens computed, tokens visible as keys, head FLOPs
    shape: dict[str, int]  # MultiExitEncoder.cost_shape()

    @property
    def flops(self) -> torch.Tensor:
        s = self.shape
        return self.record.flops(s["hidden"], s["intermediate"], s["attention"])


def example_units(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T) units of a classifier's tokens for fates that remove tokens: every real token is its own
    unit (its position), except the first ([CLS] / <s>, what ``cls`` pooling reads), which always stays (-1)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    keep = ~attention_mask.bool()
    keep[:, 0] = True
    return positions.masked_fill(keep, -1)


class ExampleExits(Exits):
    """Per-example exits of a classifier: pooled state -> exit head -> the policy's ``decide_examples``. Tokens a
    fate removes leave the pooling (``mean`` pools the tokens still in the sequence)."""

    def __init__(self, model: MultiExitClassifier, policy: ExitPolicy, attention_mask: torch.Tensor):
        self.model, self.policy, self.num_steps = model, policy, len(model.plan)
        self.real = attention_mask.bool()
        self.kept = self.real.clone()  # (B, T) tokens no fate has removed
        b, device = len(attention_mask), attention_mask.device
        self.shape = model.cost_shape()
        self.running = torch.ones(b, dtype=torch.bool, device=device)
        self.logits = torch.zeros(b, self.shape["num_labels"], device=device)
        self.exit_layers = torch.zeros(b, dtype=torch.long, device=device)
        self.heads_run = torch.zeros_like(self.exit_layers)
        self.state = policy.start_examples(b, device)

    def computed(self, step: int) -> torch.Tensor:
        return self.kept & self.running[:, None]

    @property
    def units(self) -> torch.Tensor:
        return example_units(self.real)

    def removed(self, step, tokens, hidden, rows) -> None:
        self.kept = self.kept & ~tokens
        return None

    def after_layer(self, step, exit_index, hidden, rows, real) -> torch.Tensor | None:
        last = step == self.num_steps - 1
        if not (last or self.policy.can_stop(step, self.num_steps)):
            return None
        kept = self.kept[rows, : real.shape[1]]  # (B', T') the tokens left to pool
        logits = self.model.exits[exit_index](self.model.pooler(hidden, kept)).float()  # (B', C)
        self.heads_run[rows] += 1
        if last:
            stop = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        else:
            state = {k: v[rows] for k, v in self.state.items()}
            stop = self.policy.decide_examples(step, self.num_steps, logits, state)
            for k, v in state.items():  # the policy may update its state in place
                self.state[k][rows] = v
        done = rows[stop]
        self.logits[done] = logits[stop]
        self.exit_layers[done] = step + 1
        self.running[done] = False
        flops = torch.zeros(len(self.running), dtype=torch.float64, device=rows.device)
        flops[rows] = pooled_head_flops(self.shape)
        return flops

    @property
    def finished(self) -> bool:
        return not bool(self.running.any())


@torch.inference_mode()
def classify_early_exit(
    model: MultiExitClassifier,
    policy: ExitPolicy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    fate: TokenFate | None = None,
) -> ClassifyExitOutput:
    """Run ``model`` with ``policy`` on a (B, T) batch."""
    exits = ExampleExits(model, policy, attention_mask)
    _, record = run_layers(model, input_ids, attention_mask, exits, fate, token_type_ids)
    return ClassifyExitOutput(exits.logits, exits.exit_layers, exits.heads_run, record, exits.shape)
