"""Self-contained slim BERT classes, registered with transformers under ``model_type`` ``slim_bert``.

Importing this package registers :class:`SlimBertConfig`, :class:`SlimBertModel` and BERT's tokenizer with
``AutoConfig``, ``AutoModel`` and ``AutoTokenizer``, so that tokexit loads exported sub-networks with these classes,
from its own package. The two modules are also copied into every exported model directory, for users without
tokexit (``trust_remote_code=True`` in plain transformers); tokexit itself never imports code from a model directory
and ignores its ``auto_map``.
"""

from transformers import AutoConfig, AutoModel, AutoTokenizer, BertTokenizer

from .configuration_slim_bert import SlimBertConfig
from .modeling_slim_bert import SlimBertModel


def register() -> None:
    """Register the ``slim_bert`` model type with transformers' auto classes (idempotent)."""
    AutoConfig.register(SlimBertConfig.model_type, SlimBertConfig, exist_ok=True)
    AutoModel.register(SlimBertConfig, SlimBertModel, exist_ok=True)
    AutoTokenizer.register(SlimBertConfig, tokenizer_class=BertTokenizer, exist_ok=True)


register()

__all__ = ["SlimBertConfig", "SlimBertModel", "register"]
