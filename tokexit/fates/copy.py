"""Halt-and-copy: a stopped token keeps its frozen state, which still serves as key and value for the tokens of
its sentence that go on (the token-level early-exit reference's choice; tokexit's default)."""

from __future__ import annotations

import torch

from tokexit.fates.base import TokenFate


class HaltAndCopy(TokenFate):
    name = "copy"

    def keys(self, real: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
        return real
