"""Early-exit inference for sequence labeling: the layer loop with an exit policy and halt-and-copy.

After every layer, the exit head of that layer classifies the active words (first subwords); the policy
decides which words stop; a stopped word keeps that layer's prediction and all its subwords halt. [CLS]/[SEP]
stay active while their sentence has an active word; the loop ends when nothing is active.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.flops import head_flops, layer_flops
from tokexit.engine.halting import halted_layer
from tokexit.engine.layer import encoder_layer
from tokexit.exits.base import ExitPolicy


@dataclass
class ExitOutput:
    predictions: torch.Tensor  # (B, W) label id of each word at its exit layer (0 for padding)
    exit_layers: torch.Tensor  # (B, W) 1-based exit layer of each word (0 for padding)
    token_active: list[torch.Tensor]  # per layer run, the (B, T) tokens that were computed
    hidden: torch.Tensor  # (B, T, H) final states (each token's state at its exit)
    word_counts: list[torch.Tensor | None]  # per layer run, (B,) words its exit head classified (None: skipped)
    shape: dict[str, int]  # MultiExitEncoder.cost_shape(): hidden, attention, intermediate, steps, num_labels

    @property
    def flops(self) -> torch.Tensor:
        """(B,) analytic FLOPs spent on each sentence (bookkeeping, computed on demand, not during the run)."""
        tokens = self.token_active[0].sum(1)  # the first layer always computes every real token
        s = self.shape
        return run_flops(self.token_active, self.word_counts, tokens, s["hidden"], s["intermediate"],
                         s["num_labels"], s["attention"])


def token_activity(word_active: torch.Tensor, token_word: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, W) active words -> (B, T) active tokens: a word's subwords, plus the special tokens of every
    sentence that still has an active word. ``token_word`` (B, T) is each subword's word, -1 for the rest."""
    words_of_tokens = word_active.gather(1, token_word.clamp(min=0))  # (B, T)
    special = (token_word < 0) & attention_mask.bool() & word_active.any(1, keepdim=True)
    return torch.where(token_word >= 0, words_of_tokens, special)


def run_flops(history: list[torch.Tensor], word_counts: list[torch.Tensor | None], tokens: torch.Tensor,
              hidden: int, intermediate: int, num_labels: int, attention: int | None = None) -> torch.Tensor:
    """(B,) analytic FLOPs of a run, from the tokens computed in each layer and the words each exit head saw."""
    flops = torch.zeros(len(tokens), dtype=torch.float64, device=tokens.device)
    for token_active, words in zip(history, word_counts, strict=True):
        flops += layer_flops(tokens, token_active.sum(1), hidden, intermediate, attention)
        if words is not None:
            flops += head_flops(words, hidden, num_labels)
    return flops


@torch.inference_mode()
def early_exit_forward(
    encoder: MultiExitEncoder,
    policy: ExitPolicy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    word_positions: torch.Tensor,
    token_word: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> ExitOutput:
    """Run ``encoder`` with ``policy``. Shapes: ids/mask/token_word (B, T), word_positions (B, W) (-1 padding)."""
    adapter, plan = encoder.adapter, encoder.plan
    num_steps = len(plan)
    words = word_positions >= 0  # (B, W)
    active = words.clone()
    uncertainty = torch.zeros(words.shape, device=words.device)  # latest per word, frozen once it stops
    predictions = torch.zeros(words.shape, dtype=torch.long, device=words.device)
    exit_layers = torch.zeros_like(predictions)
    history, word_counts, all_active = [], [], True

    hidden = adapter.embed(input_ids, token_type_ids)  # (B, T, H)
    for i, (layer, exit_index) in enumerate(plan):
        parts = encoder.layer_parts(layer)
        if all_active:  # nothing stopped yet: the dense layer, no bookkeeping
            token_active = attention_mask.bool()
            hidden = encoder_layer(parts, hidden, token_active[:, None, None, :])
        else:
            token_active = token_activity(active, token_word, attention_mask)  # (B, T)
            hidden = halted_layer(parts, hidden, attention_mask, token_active)
        history.append(token_active)
        last = i == num_steps - 1
        if not (last or policy.can_stop(i, num_steps)):
            word_counts.append(None)
            continue
        word_counts.append(active.sum(1))
        rows, cols = active.nonzero(as_tuple=True)  # active words, packed
        logits = encoder.exits[exit_index](hidden[rows, word_positions[rows, cols]])  # (N, C)
        predictions[rows, cols] = logits.argmax(-1)
        uncertainty[rows, cols] = policy.uncertainty(logits)
        stop = active if last else policy.decide(i, num_steps, uncertainty, active, words) & active
        exit_layers[stop] = i + 1
        active &= ~stop
        all_active = all_active and not bool(stop.any())
        if not bool(active.any()):
            break
    return ExitOutput(predictions, exit_layers, history, hidden, word_counts, encoder.cost_shape())
