"""Sentence-level exit: a sentence stops when its pooled word uncertainty is below the layer's threshold."""

from __future__ import annotations

import torch

from tokexit.exits.base import ExitPolicy, check_threshold, check_threshold_list, check_thresholds, layer_thresholds


class SentenceExit(ExitPolicy):
    name = "sentence"
    kinds = ("token_tagger",)

    def __init__(self, threshold: float, pool: str = "max", thresholds: list[float] | None = None,
                 upper_factor: float = 1.0, uncertainty: str = "entropy"):
        super().__init__(uncertainty)
        if pool not in ("max", "mean"):
            raise ValueError(f"exit.pool must be 'max' or 'mean', not '{pool}'")
        self.threshold, self.pool = check_threshold(threshold), pool
        self.thresholds = check_threshold_list(thresholds)
        self.upper_factor = check_threshold(upper_factor, "exit.upper_factor")

    def check_depth(self, num_layers) -> None:
        check_thresholds(self.thresholds, num_layers)

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        delta = layer_thresholds(self.threshold, num_layers, self.thresholds, self.upper_factor)[layer]
        if self.pool == "max":
            pooled = uncertainty.masked_fill(~words, float("-inf")).amax(1)  # (B,)
        else:
            pooled = (uncertainty * words).sum(1) / words.sum(1).clamp(min=1)  # (B,)
        return (pooled < delta)[:, None] & words  # (B, W)

    def describe(self) -> dict:
        return {**super().describe(), "threshold": self.threshold, "pool": self.pool,
                "thresholds": self.thresholds, "upper_factor": self.upper_factor}
