"""A classifier's side of a run (:mod:`tokexit.inference.runs`): batches of examples sorted by length, predictions
back in input order (each batch carries its examples' ``index``)."""

from __future__ import annotations

import torch

from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.classify_exit import classification_flops, classify_early_exit
from tokexit.inference.setting import Setting

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExampleBatches:
    """Batches of ``size`` examples; ``result`` puts every example's columns in input order. Predictions are
    class ids, or values for ``regression``, as floats."""

    def __init__(self, size: int, regression: bool):
        self.size, self.regression = size, regression
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def full_flops(self, model: MultiExitClassifier, batch: dict[str, torch.Tensor]) -> float:
        tokens = batch["attention_mask"].sum(1)
        ones = torch.ones_like(tokens)
        return float(classification_flops(tokens, ones * len(model.plan), ones, model.cost_shape()).sum())

    def forward(self, model: MultiExitClassifier, batch: dict[str, torch.Tensor], setting: Setting | None):
        if setting is None:  # (S, B, C) logits of every exit
            return model(*(batch[k] for k in INPUTS))
        return classify_early_exit(model, setting.policy, *(batch[k] for k in INPUTS), fate=setting.fate)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., C) logits -> (...) float class ids, or values for regression."""
        return (logits[..., 0] if self.regression else logits.argmax(-1)).float()

    def collect(self, batch: dict[str, torch.Tensor], output, setting: Setting | None) -> None:
        if setting is None:
            every = self.predict(output)  # (S, B)
            columns = torch.cat([every[-1:], torch.full_like(every[:1], len(every)), every])
        else:
            columns = torch.stack([self.predict(output.logits), output.exit_layers.float()])
        self.parts.append((batch["index"].cpu(), columns.cpu()))

    def result(self) -> torch.Tensor:
        width = self.parts[0][1].shape[0] if self.parts else 2
        table = torch.zeros(width, self.size)
        for index, columns in self.parts:
            table[:, index] = columns
        return table
