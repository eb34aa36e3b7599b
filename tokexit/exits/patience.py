"""PABEE's patience-based exit for sequence classification: an example stops when its prediction has stayed the
same for ``patience`` consecutive layers (classification: the same argmax; regression: a change smaller than
``regression_threshold``). With a patience of at least the number of layers nothing stops early."""

from __future__ import annotations

import torch

from tokexit.exits.base import ExitPolicy


class PatienceExit(ExitPolicy):
    name = "patience"
    kinds = ("sequence_classifier",)

    def __init__(self, patience: int = 3, regression_threshold: float = 0.1):
        super().__init__()
        if patience < 1:
            raise ValueError("exit.patience must be >= 1")
        self.patience, self.regression_threshold = patience, regression_threshold

    def start_examples(self, batch_size, device) -> dict[str, torch.Tensor]:
        return {"previous": torch.full((batch_size,), float("nan"), device=device),
                "count": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def decide_examples(self, step, num_steps, logits, state) -> torch.Tensor:
        if logits.shape[-1] == 1:  # regression
            current = logits[:, 0].float()
            same = (current - state["previous"]).abs() < self.regression_threshold
        else:
            current = logits.argmax(-1).float()
            same = current == state["previous"]  # NaN at the first exit: never the same
        state["count"] = torch.where(same, state["count"] + 1, torch.zeros_like(state["count"]))
        state["previous"] = current
        return state["count"] >= self.patience

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        raise NotImplementedError("exit=patience is for sequence classification; taggers use token_window")

    def describe(self) -> dict:
        return {"policy": self.name, "patience": self.patience, "regression_threshold": self.regression_threshold}
