"""No early exit: every word or example runs all layers (the full model)."""

from __future__ import annotations

import torch

from tokexit.exits.base import ExitPolicy


class NoExit(ExitPolicy):
    name = "none"

    def can_stop(self, layer, num_layers) -> bool:
        return False

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        return torch.zeros_like(active)

    def decide_examples(self, step, num_steps, logits, state) -> torch.Tensor:
        return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
