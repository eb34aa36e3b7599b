"""Self-contained slim BERT classes, copied into exported model directories as remote code."""

from .configuration_slim_bert import SlimBertConfig
from .modeling_slim_bert import SlimBertModel

__all__ = ["SlimBertConfig", "SlimBertModel"]
