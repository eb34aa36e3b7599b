"""What the engine needs from a backbone: embeddings and, per layer, the modules of a post-LN block.

tokexit never copies a model's modeling code. It loads any local Hugging Face checkpoint with
``AutoModel`` and an *adapter* points at the modules inside it. The engine then runs the layers itself
(``tokexit.engine.layer``), which is what lets it compute only the tokens that are still active.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn


@dataclass
class LayerParts:
    """The modules of one post-LayerNorm transformer encoder layer (BERT layout).

    h' = attn_norm(h + attn_out(MultiHeadAttention(query(h), key(h), value(h))))
    out = ffn_norm(h' + ffn_out(act(ffn_in(h'))))
    """

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    attn_norm: nn.LayerNorm
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ffn_norm: nn.LayerNorm
    act: Callable[[torch.Tensor], torch.Tensor]
    num_heads: int
    head_dim: int


# Counts submodule registrations anywhere (``parent.child = module``, ``add_module``): an adapter's cached
# LayerParts are rebuilt after any, so a module swapped in after loading (quantisation, a user's edit) is what runs.
_module_registrations = 0


def _count_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    global _module_registrations
    _module_registrations += 1


nn.modules.module.register_module_module_registration_hook(_count_registration)


class BackboneAdapter:
    """Base class: one subclass per architecture family, registered with :func:`register_adapter`."""

    model_types: tuple[str, ...] = ()

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self._parts: dict[int, LayerParts] = {}
        self._parts_seen = -1  # _module_registrations when _parts was filled

    @classmethod
    def tokenizer_kwargs(cls, config) -> dict:
        """Extra keyword arguments for ``AutoTokenizer.from_pretrained`` with pre-split words."""
        return {}

    @cached_property
    def num_layers(self) -> int:  # read once (as hidden_size): the engine asks every step
        return self.config.num_hidden_layers

    @cached_property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def hidden_dropout(self) -> float:
        return float(self.config.hidden_dropout_prob)

    @property
    def attention_dropout(self) -> float:
        return float(self.config.attention_probs_dropout_prob)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, hidden) input of the first layer."""
        raise NotImplementedError

    def layer(self, index: int) -> LayerParts:
        """The modules of layer ``index`` (0-based)."""
        raise NotImplementedError

    def parts(self, index: int) -> LayerParts:
        """:meth:`layer`, cached (the layer loop asks for it every step) until any module is registered anywhere."""
        if self._parts_seen != _module_registrations:
            self._parts.clear()
            self._parts_seen = _module_registrations
        parts = self._parts.get(index)
        if parts is None:
            parts = self._parts[index] = self.layer(index)
        return parts


_ADAPTERS: dict[str, type[BackboneAdapter]] = {}


def register_adapter(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Class decorator: make ``cls`` the adapter for each of its ``model_types``."""
    for model_type in cls.model_types:
        _ADAPTERS[model_type] = cls
    return cls


def adapter_class(model_type: str) -> type[BackboneAdapter]:
    if model_type not in _ADAPTERS:
        raise ValueError(
            f"no tokexit backbone adapter for model_type '{model_type}'; supported: {sorted(_ADAPTERS)}. "
            "Add one as a small module in tokexit/backbones/."
        )
    return _ADAPTERS[model_type]
