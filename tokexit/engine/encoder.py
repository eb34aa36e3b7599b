"""The multi-exit encoder: a Hugging Face backbone run layer by layer, with an exit head after each layer."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from tokexit.backbones import adapter_for
from tokexit.backbones.base import LayerParts
from tokexit.engine.heads import ExitHead
from tokexit.engine.layer import encoder_layer, forget_fused
from tokexit.engine.loop import Exits, run_layers
from tokexit.engine.selector import TokenSelector
from tokexit.engine.subnetwork import SubNetwork, slice_layer
from tokexit.fates.base import TokenFate


class MultiExitEncoder(nn.Module):
    """Backbone + one :class:`ExitHead` per layer, for sequence labeling.

    ``forward`` returns the logits of every exit for every word (first subword) in the batch:
    (S, N, C) with S layers run (all L layers unless a narrower/shallower :class:`SubNetwork` is in use),
    N words in the batch, C labels.

    ``selector``: TR-BERT's token selector (:class:`TokenSelector`), for the ``reduce`` fate; None by default.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, head_dropout: float | None = None,
                 selector: TokenSelector | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter_for(backbone)
        dropout = self.adapter.hidden_dropout if head_dropout is None else head_dropout
        self.exits = nn.ModuleList(
            ExitHead(self.adapter.hidden_size, num_labels, dropout) for _ in range(self.num_layers)
        )
        self.subnetwork = SubNetwork()
        self.selector = selector
        self.train()  # from_pretrained returns the backbone in eval mode; callers pick the mode

    def train(self, mode: bool = True) -> MultiExitEncoder:
        """Set training or evaluation mode, dropping cached fused query/key/value weights (a training step may have
        changed the weights without a trace: :func:`~tokexit.engine.layer.forget_fused`)."""
        forget_fused()
        return super().train(mode)

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def num_labels(self) -> int:
        return self.exits[0].classifier.out_features

    def use_subnetwork(self, subnetwork: SubNetwork) -> MultiExitEncoder:
        """Run only a DynaBERT sub-network from now on (``SubNetwork()``: the whole model again)."""
        self.subnetwork = subnetwork
        return self

    @property
    def plan(self) -> list[tuple[int, int]]:
        """(layer, exit head) of every step that runs: every layer and its own exit for the whole model."""
        key = (self.subnetwork, self.num_layers)
        if getattr(self, "_plan_of", None) != key:  # asked for several times per batch: kept per sub-network
            self._plan, self._plan_of = self.subnetwork.plan(self.num_layers), key
        return self._plan

    def layer_parts(self, index: int) -> LayerParts:
        """The modules of layer ``index``, sliced to the sub-network's width."""
        parts = self.adapter.parts(index)
        return slice_layer(parts, self.subnetwork.heads(parts.num_heads),
                           self.subnetwork.neurons(parts.ffn_in.out_features))

    def cost_shape(self) -> dict[str, int]:
        """What the FLOPs counter needs: hidden size, attention width, feed-forward size, steps, labels."""
        parts = self.layer_parts(0)
        return {"hidden": self.adapter.hidden_size, "attention": parts.num_heads * parts.head_dim,
                "intermediate": parts.ffn_in.out_features, "steps": len(self.plan), "num_labels": self.num_labels}

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run layer ``index`` on (B, T, H) states with the (B, 1, 1, T) key mask."""
        return encoder_layer(
            self.layer_parts(index),
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
        fate: TokenFate | None = None,
    ) -> list[torch.Tensor]:
        """The output of every step of :attr:`plan`: S tensors of (B, T, H), dense and differentiable.

        ``token_masks`` (S, B, T) bool, optional: an exit pattern to train on, h ← mᵢ ⊙ Layerᵢ(h) + (1 − mᵢ) ⊙ h;
        ``fate`` says whether the tokens left out stay keys and values (halt-and-copy, default) or leave.
        """
        states = EveryState(attention_mask, token_masks)
        run_layers(self, input_ids, attention_mask, states, fate, token_type_ids, packed=False)
        return states.states

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_positions: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of every exit at the words' first subwords.

        ``word_positions`` (B, W): subword index of each word's first subword, -1 for padding.
        Returns (S, N, C) where N = number of non-padding entries of ``word_positions``, in row-major order.
        """
        rows, cols = torch.nonzero(word_positions >= 0, as_tuple=True)
        positions = word_positions[rows, cols]  # (N,)
        logits = []
        states = self.hidden_states(input_ids, attention_mask, token_type_ids)
        for (_, exit_index), hidden in zip(self.plan, states, strict=True):
            logits.append(self.exits[exit_index](hidden[rows, positions]))  # (N, C)
        return torch.stack(logits)


class EveryState(Exits):
    """Training's exits: every step's states are kept (the losses of all exits need them); the tokens computed
    are every real token, or those of a given exit pattern ``token_masks`` (S, B, T)."""

    def __init__(self, attention_mask: torch.Tensor, token_masks: torch.Tensor | None = None):
        self.real, self.token_masks = attention_mask.bool(), token_masks
        self.states: list[torch.Tensor] = []

    def computed(self, step: int) -> torch.Tensor:
        return self.real if self.token_masks is None else self.token_masks[step] & self.real

    def after_layer(self, step, exit_index, hidden, rows, real) -> None:
        self.states.append(hidden)
        return None
