"""ALBERT: layers share weights in groups; embeddings are projected up to the hidden size."""

from __future__ import annotations

import torch

from tokexit.backbones.base import BackboneAdapter, LayerParts, register_adapter


@register_adapter
class AlbertAdapter(BackboneAdapter):
    model_types = ("albert",)

    def __init__(self, model):
        super().__init__(model)
        if self.config.inner_group_num != 1:
            raise ValueError("ALBERT with inner_group_num != 1 is not supported")

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.model.encoder.embedding_hidden_mapping_in(h)

    def layer(self, index: int) -> LayerParts:
        per_group = self.config.num_hidden_layers // self.config.num_hidden_groups
        block = self.model.encoder.albert_layer_groups[index // per_group].albert_layers[0]
        attn = block.attention
        return LayerParts(
            query=attn.query,
            key=attn.key,
            value=attn.value,
            attn_out=attn.dense,
            attn_norm=attn.LayerNorm,
            ffn_in=block.ffn,
            ffn_out=block.ffn_output,
            ffn_norm=block.full_layer_layer_norm,
            act=block.activation,
            num_heads=attn.num_attention_heads,
            head_dim=attn.attention_head_size,
        )
