"""Entropy exits for sequence classification: an example stops when the entropy of its exit's prediction is
below the step's threshold. ``normalised=False``: raw entropy (DeeBERT, thresholds in [0, log C]);
``normalised=True``: entropy / log C (FastBERT, thresholds in [0, 1])."""

from __future__ import annotations

import math

import torch

from tokexit.exits.base import (
    ExitPolicy,
    check_threshold,
    check_threshold_list,
    check_thresholds,
    entropy,
    layer_thresholds,
    normalised_entropy,
)


class EntropyExit(ExitPolicy):
    name = "entropy"
    kinds = ("sequence_classifier",)

    def __init__(self, threshold: float, normalised: bool = True, thresholds: list[float] | None = None):
        super().__init__()
        self.threshold, self.normalised = check_threshold(threshold), normalised
        self.thresholds = check_threshold_list(thresholds)

    def check_depth(self, num_layers) -> None:
        check_thresholds(self.thresholds, num_layers)

    def largest_threshold(self, num_labels: int) -> float:
        return 1.0 if self.normalised else math.log(num_labels)

    def decide_examples(self, step, num_steps, logits, state) -> torch.Tensor:
        if logits.shape[-1] == 1:
            raise ValueError("entropy exits need class probabilities; for regression use exit=patience")
        h = normalised_entropy(logits) if self.normalised else entropy(logits)
        return h < layer_thresholds(self.threshold, num_steps, self.thresholds, 1.0)[step]

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        raise NotImplementedError("exit=entropy is for sequence classification; taggers use token_window")

    def describe(self) -> dict:
        return {"policy": self.name, "threshold": self.threshold, "normalised": self.normalised,
                "thresholds": self.thresholds}
