"""The multi-exit classifier: the multi-exit encoder with a shared pooler and one exit head per layer on the
pooled first token ([CLS] / <s>), for sentence(-pair) classification (C classes) or regression (C = 1)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.selector import TokenSelector

POOLING = ("cls", "mean")


class Pooler(nn.Module):
    """tanh(Linear(summary)): (B, T, H) -> (B, H), shared by every exit (as in PABEE). The summary is the first
    token's state (``cls``, PABEE's choice) or the mean over the real tokens (``mean``). Sentence-embedding
    backbones such as all-MiniLM-L6-v2 were trained with mean pooling and leave [CLS] nearly constant in their
    lower layers (measured: its std over SST-2 sentences is 0.001 at layers 1-3 against 0.13-0.19 for the mean),
    so their early exits need ``mean``."""

    def __init__(self, hidden_size: int, mode: str = "cls"):
        super().__init__()
        if mode not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, not '{mode}'")
        self.mode = mode
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            summary = hidden[:, 0]
        else:
            m = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1)
            summary = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.tanh(self.dense(summary))


def backbone_pooler_dense(backbone: PreTrainedModel) -> nn.Linear | None:
    """The pre-trained pooler's linear layer, when the checkpoint has one (BERT: pooler.dense; ALBERT: pooler)."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Linear):
        return pooler
    dense = getattr(pooler, "dense", None)
    return dense if isinstance(dense, nn.Linear) else None


class MultiExitClassifier(MultiExitEncoder):
    """``forward`` returns the logits of every exit for every example: (S, B, C) with S steps run."""

    def __init__(self, backbone: PreTrainedModel, num_labels: int, head_dropout: float | None = None,
                 pooling: str = "cls", selector: TokenSelector | None = None):
        super().__init__(backbone, num_labels, head_dropout, selector)
        self.pooler = Pooler(self.adapter.hidden_size, pooling)
        pretrained = backbone_pooler_dense(backbone)
        if pretrained is not None:  # start from the checkpoint's pooler; the backbone's own copy is never used
            self.pooler.dense.load_state_dict(pretrained.state_dict())
            pretrained.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        states = self.hidden_states(input_ids, attention_mask, token_type_ids)
        pooled = [self.pooler(hidden, attention_mask) for hidden in states]  # S x (B, H)
        return torch.stack([self.exits[e](p) for (_, e), p in zip(self.plan, pooled, strict=True)])  # (S, B, C)
