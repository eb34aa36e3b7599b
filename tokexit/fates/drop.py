"""Drop: a stopped token leaves the sequence. It keeps its state and prediction from the layer where it stopped
but is no query, key or value in any later layer, so attention shrinks with the sequence (unlike halt-and-copy)."""

from __future__ import annotations

import torch

from tokexit.fates.base import TokenFate


class Drop(TokenFate):
    name = "drop"

    def keys(self, real: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
        return computed
