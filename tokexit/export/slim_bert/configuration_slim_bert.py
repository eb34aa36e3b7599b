"""Configuration of a slim BERT: a BERT encoder whose layers keep fewer attention heads of the original head size
and fewer feed-forward neurons than ``hidden_size`` alone would imply (a DynaBERT sub-network).

This file is also shipped inside exported model directories, so that transformers alone can load them with
``trust_remote_code=True``: it must import nothing but ``transformers``. The package that exports them registers and
imports its own copy and never runs the shipped one.
"""

from transformers import BertConfig


class SlimBertConfig(BertConfig):
    r"""A :class:`~transformers.BertConfig` with an explicit per-head size.

    ``num_attention_heads`` is the number of heads each layer keeps, ``intermediate_size`` the number of feed-forward
    neurons, ``num_hidden_layers`` the number of layers; ``hidden_size`` is that of the original model. Self-attention
    projects to ``num_attention_heads * attention_head_size`` features, which need not equal ``hidden_size``.

    attention_head_size (`int`, *optional*):
        Size of one attention head; defaults to ``hidden_size // num_attention_heads`` (plain BERT).
    add_pooling_layer (`bool`, *optional*, defaults to `True`):
        Whether the model has a pooler (the encoder of a task model such as ``BertForTokenClassification`` has none).
    """

    model_type = "slim_bert"
    attribute_map = {"head_dim": "attention_head_size"}

    attention_head_size: int | None = None
    add_pooling_layer: bool = True

    def __post_init__(self, **kwargs):
        if self.attention_head_size is None:
            self.attention_head_size = self.hidden_size // self.num_attention_heads
        if not isinstance(self.attention_head_size, int) or self.attention_head_size < 1:
            raise ValueError(f"attention_head_size must be a positive integer, not {self.attention_head_size!r}")
        super().__post_init__(**kwargs)


__all__ = ["SlimBertConfig"]
