"""Static truncation: every word or example stops after layer ``layer`` (1-based); the baseline for any exit
method."""

from __future__ import annotations

import torch

from tokexit.exits.base import ExitPolicy, check_layer, check_layer_setting


class StaticExit(ExitPolicy):
    name = "static"

    def __init__(self, layer: int, uncertainty: str = "entropy"):
        super().__init__(uncertainty)
        self.layer = check_layer_setting(layer)

    def check_depth(self, num_layers) -> None:
        check_layer(self.layer, num_layers)

    def can_stop(self, layer, num_layers) -> bool:
        return layer + 1 >= self.layer

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        return torch.full_like(active, layer + 1 >= self.layer)

    def decide_examples(self, step, num_steps, logits, state) -> torch.Tensor:
        return torch.full((len(logits),), step + 1 >= self.layer, device=logits.device)

    def describe(self) -> dict:
        return {**super().describe(), "layer": self.layer}
