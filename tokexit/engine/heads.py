"""Exit classifiers: one after every layer."""

from __future__ import annotations

import torch
from torch import nn


class ExitHead(nn.Module):
    """Dropout + linear classifier: (N, H) -> (N, C), on the words' first subwords or on pooled sentences."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(states) if self.training else states)
