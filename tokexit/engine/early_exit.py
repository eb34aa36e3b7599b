"""Early-exit inference for sequence labeling: the layer loop with an exit policy and a token fate.

After every layer, the exit head of that layer classifies the active words (first subwords); the policy
decides which words stop; a stopped word keeps that layer's prediction and all its subwords stop (the fate says
whether they stay keys and values). [CLS]/[SEP] go on while their sentence has an active word; the loop ends when
nothing is active.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.flops import head_flops
from tokexit.engine.loop import Exits, LoopRecord, run_layers
from tokexit.exits.base import ExitPolicy
from tokexit.fates.base import TokenFate


@dataclass
class ExitOutput:
    predictions: torch.Tensor  # (B, W) label id of each word at its exit layer (0 for padding)
    exit_layers: torch.Tensor  # (B, W) 1-based exit layer of each word (0 for padding)
    hidden: torch.Tensor  # (B, T, H) final states (each token's state where it stopped)
    record: LoopRecord  # per step run: tokens computed, tokens visible as keys, head FLOPs
    shape: dict[str, int]  # MultiExitEncoder.cost_shape(): hidden, attention, intermediate, steps, num_labels

    @property
    def token_active(self) -> list[torch.Tensor]:
        """Per step run, the (B, T) tokens that were computed."""
        return self.record.computed

    @property
    def flops(self) -> torch.Tensor:
        """(B,) analytic FLOPs spent on each sentence (bookkeeping, computed on demand, not during the run)."""
        s = self.shape
        return self.record.flops(s["hidden"], s["intermediate"], s["attention"])


def token_activity(word_active: torch.Tensor, token_word: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, W) active words -> (B, T) active tokens: a word's subwords, plus the special tokens of every
    sentence that still has an active word. ``token_word`` (B, T) is each subword's word, -1 for the rest."""
    return TokenWords(token_word, attention_mask).tokens(word_active)


class TokenWords:
    """Which word each token of a (B, T) batch belongs to, prepared once for :meth:`tokens` at every step."""

    def __init__(self, token_word: torch.Tensor, attention_mask: torch.Tensor):
        self.word = token_word.clamp(min=0)  # (B, T): a subword's word (0 for the rest, masked by ``is_word``)
        self.is_word = token_word >= 0  # (B, T) subwords of words
        self.special = ~self.is_word & attention_mask.bool()  # (B, T) [CLS], [SEP] and other real non-word tokens

    def tokens(self, word_active: torch.Tensor) -> torch.Tensor:
        """(B, W) active words -> (B, T) active tokens (see :func:`token_activity`)."""
        special = self.special & word_active.any(1, keepdim=True)
        return torch.where(self.is_word, word_active.gather(1, self.word), special)


class WordExits(Exits):
    """Per-word exits of a tagger: predictions, uncertainties and exit layers of the (B, W) words."""

    def __init__(self, encoder: MultiExitEncoder, policy: ExitPolicy, attention_mask: torch.Tensor,
                 word_positions: torch.Tensor, token_word: torch.Tensor, label_removed: str = "exit_head"):
        self.encoder, self.policy, self.num_steps = encoder, policy, len(encoder.plan)
        self.label_removed = label_removed  # which head labels the words a fate removes (TokenFate.label_removed)
        self.attention_mask, self.word_positions, self.token_word = attention_mask, word_positions, token_word
        self.words = word_positions >= 0  # (B, W)
        self.real, self.token_words = attention_mask.bool(), TokenWords(token_word, attention_mask)
        self.active = self.words.clone()
        self.uncertainty = torch.zeros(self.words.shape, device=self.words.device)  # latest, frozen once stopped
        self.predictions = torch.zeros(self.words.shape, dtype=torch.long, device=self.words.device)
        self.exit_layers = torch.zeros_like(self.predictions)
        self._all_active = True

    def computed(self, step: int) -> torch.Tensor:
        if self._all_active:  # nothing stopped yet: every real token
            return self.real
        return self.token_words.tokens(self.active)

    def after_layer(self, step, exit_index, hidden, rows, real) -> torch.Tensor | None:
        last = step == self.num_steps - 1
        if not (last or self.policy.can_stop(step, self.num_steps)):
            return None
        counts = self.active.sum(1)  # (B,) words the head classifies
        every_row = len(rows) == len(self.active)  # the working batch is the whole batch: no row lookups
        active = self.active if every_row else self.active[rows]  # (B', W)
        positions = self.word_positions if every_row else self.word_positions[rows]
        r, c = active.nonzero(as_tuple=True)  # active words of the working rows, packed
        logits = self.encoder.exits[exit_index](hidden[r, positions[r, c]])  # (N, C)
        r = r if every_row else rows[r]
        self.predictions[r, c] = logits.argmax(-1)
        self.uncertainty[r, c] = self.policy.uncertainty(logits)
        if last:
            stop = self.active
        else:
            stop = self.policy.decide(step, self.num_steps, self.uncertainty, self.active, self.words) & self.active
        self._stop(stop, step)
        return head_flops(counts, self.encoder.adapter.hidden_size, self.encoder.num_labels)

    @property
    def units(self) -> torch.Tensor:
        """(B, T) each subword's word (all subwords of a word leave together), -1 for [CLS]/[SEP] and padding."""
        return self.token_word

    def removed(self, step, tokens, hidden, rows) -> torch.Tensor:
        """A word whose first subword the fate took out stops, labelled once from its state at removal (the
        output of step ``step - 1``): by that step's exit head (``exit_head``) or by the last exit head
        (``last_head``; the state is the word's final, restored state)."""
        first = tokens.gather(1, self.word_positions.clamp(min=0)) & self.active  # (B, W)
        counts = first.sum(1)  # (B,) words labelled now
        r, c = first[rows].nonzero(as_tuple=True)  # removed words of the working rows, packed
        head = self.encoder.plan[-1 if self.label_removed == "last_head" else step - 1][1]
        logits = self.encoder.exits[head](hidden[r, self.word_positions[rows][r, c]])  # (N, C)
        r = rows[r]
        self.predictions[r, c] = logits.argmax(-1)
        self.uncertainty[r, c] = self.policy.uncertainty(logits)
        self._stop(first, step - 1)
        return head_flops(counts, self.encoder.adapter.hidden_size, self.encoder.num_labels)

    def _stop(self, stop: torch.Tensor, step: int) -> None:
        """The active words ``stop`` (B, W) stop after step ``step`` (0-based)."""
        self.exit_layers.masked_fill_(stop, step + 1)
        self._all_active = self._all_active and not bool(stop.any())
        self.active ^= stop  # stop ⊆ active (it may be ``active`` itself)

    @property
    def finished(self) -> bool:
        return not bool(self.active.any())


@torch.inference_mode()
def early_exit_forward(
    encoder: MultiExitEncoder,
    policy: ExitPolicy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    word_positions: torch.Tensor,
    token_word: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    fate: TokenFate | None = None,
) -> ExitOutput:
    """Run ``encoder`` with ``policy`` and ``fate`` (default halt-and-copy).
    Shapes: ids/mask/token_word (B, T), word_positions (B, W) (-1 padding)."""
    label_removed = fate.label_removed if fate is not None else "exit_head"
    exits = WordExits(encoder, policy, attention_mask, word_positions, token_word, label_removed)
    hidden, record = run_layers(encoder, input_ids, attention_mask, exits, fate, token_type_ids)
    return ExitOutput(exits.predictions, exits.exit_layers, hidden, record, encoder.cost_shape())
