"""A slim BERT encoder: :class:`~transformers.BertModel` whose self-attention projects to
``num_attention_heads * attention_head_size`` features instead of ``hidden_size`` (a DynaBERT sub-network with fewer
heads of the original head size), and whose feed-forward block has ``intermediate_size`` neurons.

The state dict has the keys of a plain ``BertModel``; only the shapes of the attention projections differ.

This file is also shipped inside exported model directories, so that transformers alone can load them with
``trust_remote_code=True``: it must import nothing but ``torch`` and ``transformers`` (and its sibling configuration
file). The package that exports them registers and imports its own copy and never runs the shipped one.
"""

from torch import nn
from transformers import BertModel

from .configuration_slim_bert import SlimBertConfig


def _resize_attention(attention: nn.Module, hidden_size: int, heads: int, head_size: int) -> None:
    """Rebuild a ``BertAttention`` for ``heads`` heads of ``head_size`` features each."""
    inner = heads * head_size
    self_attention = attention.self
    self_attention.num_attention_heads = heads
    self_attention.attention_head_size = head_size
    self_attention.all_head_size = inner
    self_attention.scaling = head_size**-0.5
    self_attention.query = nn.Linear(hidden_size, inner)
    self_attention.key = nn.Linear(hidden_size, inner)
    self_attention.value = nn.Linear(hidden_size, inner)
    attention.output.dense = nn.Linear(inner, hidden_size)


class SlimBertModel(BertModel):
    config_class = SlimBertConfig
    config: SlimBertConfig

    def __init__(self, config: SlimBertConfig, add_pooling_layer: bool | None = None):
        if add_pooling_layer is None:
            add_pooling_layer = getattr(config, "add_pooling_layer", True)
        if getattr(config, "add_cross_attention", False):
            raise ValueError("SlimBertModel does not support cross-attention (add_cross_attention=True)")
        heads = config.num_attention_heads
        head_size = getattr(config, "attention_head_size", None) or config.hidden_size // heads  # or a plain BertConfig
        # BertSelfAttention insists that hidden_size be a multiple of the number of heads (and derives the head size
        # from it): build the layers with a single head, then resize their attention projections.
        config.num_attention_heads = 1
        try:
            super().__init__(config, add_pooling_layer=add_pooling_layer)
        finally:
            config.num_attention_heads = heads
        for layer in self.encoder.layer:
            _resize_attention(layer.attention, config.hidden_size, heads, head_size)
        # Initialises only the new projections: modules initialised by BertModel's post_init are flagged as done.
        self.post_init()


__all__ = ["SlimBertModel"]
