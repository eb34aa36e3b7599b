"""Prescribed exit, for benchmarks: after layer ``layer`` (1-based) a fixed set of about ``fraction`` of every
sentence's words stops, the rest runs to the last layer. Uncertainties are ignored.

Word j stops when ``frac(j * 2654435761 / 2**32) < fraction`` (Knuth's multiplicative hash, the golden ratio in
32-bit fixed point): the pattern is scattered over the sentence rather than a contiguous block, the share of
stopped words is close to ``fraction`` for any sentence length, and it depends only on the word's index, never
on the batch.
"""

from __future__ import annotations

import torch

from tokexit.exits.base import ExitPolicy, check_layer, check_layer_setting

GOLDEN = 2654435761  # round(2**32 / golden ratio), an odd constant


def prescribed_words(num_words: int, fraction: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(num_words,) bool: the word indices that a :class:`PrescribedExit` with ``fraction`` stops."""
    j = torch.arange(num_words, dtype=torch.int64, device=device)
    return ((j * GOLDEN) % 2**32).double() / 2**32 < fraction


class PrescribedExit(ExitPolicy):
    name = "prescribed"
    kinds = ("token_tagger",)

    def __init__(self, fraction: float, layer: int, uncertainty: str = "entropy"):
        super().__init__(uncertainty)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"exit.fraction must be in [0, 1], not {fraction}")
        self.fraction, self.layer = float(fraction), check_layer_setting(layer)

    def check_depth(self, num_layers) -> None:
        check_layer(self.layer, num_layers)

    def can_stop(self, layer, num_layers) -> bool:
        return layer + 1 == self.layer

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        if layer + 1 != self.layer:
            return torch.zeros_like(active)
        return prescribed_words(words.shape[1], self.fraction, words.device)[None, :] & words

    def describe(self) -> dict:
        return {**super().describe(), "fraction": self.fraction, "layer": self.layer}
