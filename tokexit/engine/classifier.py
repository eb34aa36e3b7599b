"""The multi-exit classifier: the multi-exit encoder with a shared pooler and one exit head per layer on the
pooled first token ([CLS] / <s>), for sentence(-pair) classification (C classes) or regression (C = 1)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from tokexit.engine.encoder import MultiExitEncoder


class Pooler(nn.Module):
    """tanh(Linear(h[:, 0])): (B, T, H) -> (B, H), shared by every exit (as in PABEE)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def backbone_pooler_dense(backbone: PreTrainedModel) -> nn.Linear | None:
    """The pre-trained pooler's linear layer, when the checkpoint has one (BERT: pooler.dense; ALBERT: pooler)."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Linear):
        return pooler
    dense = getattr(pooler, "dense", None)
    return dense if isinstance(dense, nn.Linear) else None


class MultiExitClassifier(MultiExitEncoder):
    """``forward`` returns the logits of every exit for every example: (S, B, C) with S steps run."""

    def __init__(self, backbone: PreTrainedModel, num_labels: int, head_dropout: float | None = None):
        super().__init__(backbone, num_labels, head_dropout)
        self.pooler = Pooler(self.adapter.hidden_size)
        pretrained = backbone_pooler_dense(backbone)
        if pretrained is not None:  # start from the checkpoint's pooler; the backbone's own copy is never used
            self.pooler.dense.load_state_dict(pretrained.state_dict())
            pretrained.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        states = self.hidden_states(input_ids, attention_mask, token_type_ids)
        pooled = [self.pooler(hidden) for hidden in states]  # S x (B, H)
        return torch.stack([self.exits[e](p) for (_, e), p in zip(self.plan, pooled, strict=True)])  # (S, B, C)
