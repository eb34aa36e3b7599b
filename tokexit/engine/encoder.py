"""The multi-exit encoder: a Hugging Face backbone run layer by layer, with an exit head after each layer."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from tokexit.backbones import adapter_for
from tokexit.engine.heads import TokenExitHead
from tokexit.engine.layer import encoder_layer, key_mask


class MultiExitEncoder(nn.Module):
    """Backbone + one :class:`TokenExitHead` per layer.

    ``forward`` returns the logits of every exit for every word (first subword) in the batch:
    (L, N, C) with L layers, N words in the batch, C labels.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, head_dropout: float | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter_for(backbone)
        dropout = self.adapter.hidden_dropout if head_dropout is None else head_dropout
        self.exits = nn.ModuleList(
            TokenExitHead(self.adapter.hidden_size, num_labels, dropout) for _ in range(self.num_layers)
        )
        self.train()  # from_pretrained returns the backbone in eval mode; callers pick the mode

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def num_labels(self) -> int:
        return self.exits[0].classifier.out_features

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run layer ``index`` on (B, T, H) states with the (B, 1, 1, T) key mask."""
        return encoder_layer(
            self.adapter.layer(index),
            hidden,
            mask,
            hidden_dropout=self.adapter.hidden_dropout,
            attention_dropout=self.adapter.attention_dropout,
            training=self.training,
        )

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        token_masks: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The output of every layer: L tensors of (B, T, H).

        ``token_masks`` (L, B, T) bool, optional: halt-and-copy computed densely, with gradients:
        h ← mᵢ ⊙ Layerᵢ(h) + (1 − mᵢ) ⊙ h. Halted tokens keep their state and still serve as keys and values.
        """
        mask = key_mask(attention_mask)
        hidden = self.adapter.embed(input_ids, token_type_ids)
        states = []
        for i in range(self.num_layers):
            updated = self.layer(i, hidden, mask)
            hidden = updated if token_masks is None else torch.where(token_masks[i][..., None], updated, hidden)
            states.append(hidden)
        return states

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_positions: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of every exit at the words' first subwords.

        ``word_positions`` (B, W): subword index of each word's first subword, -1 for padding.
        Returns (L, N, C) where N = number of non-padding entries of ``word_positions``, in row-major order.
        """
        rows, cols = torch.nonzero(word_positions >= 0, as_tuple=True)
        positions = word_positions[rows, cols]  # (N,)
        logits = []
        for i, hidden in enumerate(self.hidden_states(input_ids, attention_mask, token_type_ids)):
            logits.append(self.exits[i](hidden[rows, positions]))  # (N, C)
        return torch.stack(logits)
