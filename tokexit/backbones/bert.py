"""BERT-layout encoders: BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA (and MiniLM, which is a BERT)."""

from __future__ import annotations

import torch

from tokexit.backbones.base import BackboneAdapter, LayerParts, register_adapter


@register_adapter
class BertAdapter(BackboneAdapter):
    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "slim_bert")

    def __init__(self, model):
        super().__init__(model)
        pe = getattr(self.config, "position_embedding_type", "absolute")
        if pe not in (None, "absolute"):
            raise ValueError(f"position_embedding_type '{pe}' is not supported (only absolute positions)")

    @classmethod
    def tokenizer_kwargs(cls, config) -> dict:
        # byte-level BPE tokenizers need a prefix space to tokenise pre-split words as in running text
        return {"add_prefix_space": True} if config.model_type == "roberta" else {}

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        project = getattr(self.model, "embeddings_project", None)  # ELECTRA with embedding_size != hidden
        return project(h) if project is not None else h

    def layer(self, index: int) -> LayerParts:
        layer = self.model.encoder.layer[index]
        attn = layer.attention
        return LayerParts(
            query=attn.self.query,
            key=attn.self.key,
            value=attn.self.value,
            attn_out=attn.output.dense,
            attn_norm=attn.output.LayerNorm,
            ffn_in=layer.intermediate.dense,
            ffn_out=layer.output.dense,
            ffn_norm=layer.output.LayerNorm,
            act=layer.intermediate.intermediate_act_fn,
            num_heads=attn.self.num_attention_heads,
            head_dim=attn.self.attention_head_size,
        )
