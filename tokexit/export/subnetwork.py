"""Export a DynaBERT sub-network as a plain, smaller Hugging Face model directory.

:func:`slice_bert` copies the first heads and feed-forward neurons of the chosen layers of a ``BertModel`` into a
:class:`~tokexit.export.slim_bert.SlimBertModel` of the real, smaller size (the same weights that
:mod:`tokexit.engine.subnetwork` uses as views). :func:`export_subnetwork` saves it with its code, so that
``AutoModel.from_pretrained(directory, trust_remote_code=True)`` loads it without tokexit, offline. tokexit itself
loads such a directory with the classes it registers (:mod:`tokexit.export.slim_bert`), never with the shipped code.

transformers 5 has no head pruning and ``BertSelfAttention`` derives the head size from ``hidden_size /
num_attention_heads``, which is why fewer heads of the original size need the small ``slim_bert`` model type.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import BertModel, PreTrainedModel

from tokexit.export.slim_bert import SlimBertConfig, SlimBertModel

SLIM_BERT_CODE = Path(__file__).resolve().parent / "slim_bert"
CODE_FILES = ("configuration_slim_bert.py", "modeling_slim_bert.py")
AUTO_MAP = {
    "AutoConfig": "configuration_slim_bert.SlimBertConfig",
    "AutoModel": "modeling_slim_bert.SlimBertModel",
}
SUPPORTED_MODEL_TYPES = ("bert", "slim_bert")
# Config fields not carried over: the exported model is a bare encoder whose class is SlimBertModel.
_DROPPED_FIELDS = {"transformers_version", "architectures", "auto_map", "model_type", "_name_or_path"}


def _bert(model: PreTrainedModel) -> BertModel:
    """The BERT encoder of ``model`` (itself, or ``model.bert`` for a task model), or a ValueError."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"only BERT models can be exported as a sub-network (model_type 'bert'), not model_type {model_type!r} "
            f"({type(model).__name__})"
        )
    base = model.base_model if isinstance(model, PreTrainedModel) else model
    if not isinstance(base, BertModel):
        raise ValueError(f"expected a transformers BertModel (or a model built on one), not {type(base).__name__}")
    if base.config.add_cross_attention:
        raise ValueError("BERT models with cross-attention (add_cross_attention=True) cannot be exported")
    return base


def _check_sizes(config, heads: int, neurons: int, layers: list[int]) -> list[int]:
    layers = [int(i) for i in layers]
    if not 1 <= heads <= config.num_attention_heads:
        raise ValueError(f"heads must lie in [1, {config.num_attention_heads}], not {heads}")
    if not 1 <= neurons <= config.intermediate_size:
        raise ValueError(f"neurons must lie in [1, {config.intermediate_size}], not {neurons}")
    if not layers:
        raise ValueError("at least one layer must be kept")
    if any(not 0 <= i < config.num_hidden_layers for i in layers):
        raise ValueError(f"layer indices must lie in [0, {config.num_hidden_layers - 1}], not {layers}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer indices must be distinct, not {layers}")
    return layers


def slim_config(config, heads: int, neurons: int, num_layers: int, pooler: bool = True) -> SlimBertConfig:
    """The :class:`SlimBertConfig` of a sub-network of a ``bert`` (or ``slim_bert``) config."""
    head_size = getattr(config, "attention_head_size", None) or config.hidden_size // config.num_attention_heads
    values = config.to_dict()
    fields = {
        key: values[key] for key in SlimBertConfig.__dataclass_fields__ if key in values and key not in _DROPPED_FIELDS
    }
    fields.update(num_attention_heads=heads, attention_head_size=head_size, intermediate_size=neurons)
    fields.update(num_hidden_layers=num_layers, add_pooling_layer=pooler)
    return SlimBertConfig(**fields)


@torch.no_grad()
def slice_bert(model: BertModel, heads: int, neurons: int, layers: list[int]) -> SlimBertModel:
    """Keep the first ``heads`` attention heads and first ``neurons`` FFN neurons of every layer and only the layers
    with the given 0-based indices (in that order). Embeddings (and pooler if present) copied unchanged.

    Head ``h`` is rows ``[h*d, (h+1)*d)`` of the query, key and value weights and biases and columns ``[h*d, (h+1)*d)``
    of ``attention.output.dense.weight``; FFN neuron ``j`` is row ``j`` of ``intermediate.dense`` and column ``j`` of
    ``output.dense.weight``. Output biases and LayerNorms are kept whole. A task model (``BertForTokenClassification``
    …) contributes its encoder only. The result is a copy (same dtype, device and train/eval mode as ``model``); its
    state dict has the keys of a ``BertModel``.
    """
    bert = _bert(model)
    config = bert.config
    layers = _check_sizes(config, heads, neurons, layers)
    head_size = getattr(config, "attention_head_size", None) or config.hidden_size // config.num_attention_heads
    width = heads * head_size

    source = bert.state_dict()
    state = {key: value for key, value in source.items() if not key.startswith("encoder.layer.")}
    for new, old in enumerate(layers):
        prefix, new_prefix = f"encoder.layer.{old}.", f"encoder.layer.{new}."
        # LayerNorms and output biases whole, then the sliced projections
        state.update(
            {new_prefix + key[len(prefix) :]: value for key, value in source.items() if key.startswith(prefix)}
        )
        for name in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                key = f"attention.self.{name}.{kind}"
                state[new_prefix + key] = source[prefix + key][:width]
        key = "attention.output.dense.weight"
        state[new_prefix + key] = source[prefix + key][:, :width]
        for kind in ("weight", "bias"):
            key = f"intermediate.dense.{kind}"
            state[new_prefix + key] = source[prefix + key][:neurons]
        key = "output.dense.weight"
        state[new_prefix + key] = source[prefix + key][:, :neurons]

    parameter = next(bert.parameters())
    slim = SlimBertModel(slim_config(config, heads, neurons, len(layers), pooler=bert.pooler is not None))
    slim.to(device=parameter.device, dtype=parameter.dtype)
    slim.load_state_dict(state, strict=True)
    return slim.train(bert.training)


def export_subnetwork(
    model: BertModel, heads: int, neurons: int, layers: list[int], directory: str | Path, tokenizer=None
) -> Path:
    """Write ``directory`` with config.json (model_type slim_bert, auto_map for AutoConfig and AutoModel pointing at
    the two shipped .py files), model.safetensors, the two .py files, and the tokenizer if given.

    Without tokexit, load it with ``AutoModel.from_pretrained(directory, trust_remote_code=True)``; where tokexit is
    imported, ``AutoModel.from_pretrained(directory)`` uses tokexit's registered ``slim_bert`` classes instead.
    """
    directory = Path(directory)
    slim = slice_bert(model, heads, neurons, layers)
    with_code(slim)
    directory.mkdir(parents=True, exist_ok=True)
    slim.save_pretrained(directory)
    copy_code(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def with_code(slim: SlimBertModel) -> SlimBertModel:
    """Point the config's ``auto_map`` at the shipped code, so that ``save_pretrained`` writes a config that
    transformers without tokexit can load (tokexit ignores ``auto_map``)."""
    slim.config.auto_map = dict(AUTO_MAP)
    return slim


def copy_code(directory: str | Path) -> None:
    """Copy the two ``slim_bert`` code files into a saved model directory."""
    for name in CODE_FILES:
        shutil.copyfile(SLIM_BERT_CODE / name, Path(directory) / name)
