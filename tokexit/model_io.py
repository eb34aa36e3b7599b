"""Save and load a trained tokexit model as a directory: Hugging Face backbone + exit heads + labels.

Layout: ``config.json`` + ``model.safetensors`` (the backbone, loadable with ``AutoModel``), ``exits.safetensors``
(the exit heads; a classifier's also hold its pooler under ``pooler.``), ``tokexit.json`` (kind, labels, task,
max length) and the tokenizer files. Kinds: ``token_tagger`` and ``sequence_classifier``. A model with a token
selector (TR-BERT, ``model=token_reduction``) also has ``selector.safetensors``, its settings under ``selector`` in
``tokexit.json``.

Loading never runs code from the directory (an exported ``slim_bert`` backbone is built by tokexit's own registered
classes; ``auto_map`` and shipped ``.py`` files are ignored) and never unpickles (safetensors only). A missing,
damaged or truncated file raises FileNotFoundError or :class:`ModelFormatError` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from tokexit.backbones import (
    ModelFormatError,
    adapter_class,
    load_config,
    load_pretrained_model,
    load_pretrained_tokenizer,
    read_json,
    read_safetensors,
)
from tokexit.data.classification import ClassificationTask
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.selector import TokenSelector

META_FILE = "tokexit.json"
EXITS_FILE = "exits.safetensors"
SELECTOR_FILE = "selector.safetensors"


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` or None: ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as is."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def save_tagger(encoder: MultiExitEncoder, tokenizer, labels: LabelSet, directory: str | Path,
                max_length: int, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder.backbone.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_file({k: v.contiguous() for k, v in encoder.exits.state_dict().items()}, directory / EXITS_FILE)
    meta = {"kind": "token_tagger", **labels.to_dict(), "max_length": max_length, "num_layers": encoder.num_layers,
            **_save_selector(encoder, directory), **(extra or {})}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def read_meta(directory: str | Path) -> dict:
    """The ``tokexit.json`` of a model directory (FileNotFoundError naming the directory if it is not one)."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{directory}: not a tokexit model directory (no {META_FILE})")
    return read_json(directory / META_FILE)


def save_classifier(model: MultiExitClassifier, tokenizer, task: ClassificationTask, directory: str | Path,
                    max_length: int, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    heads = {f"exits.{k}": v for k, v in model.exits.state_dict().items()}
    heads.update({f"pooler.{k}": v for k, v in model.pooler.state_dict().items()})
    save_file({k: v.contiguous() for k, v in heads.items()}, directory / EXITS_FILE)
    meta = {"kind": "sequence_classifier", **task.to_dict(), "max_length": max_length,
            "num_layers": model.num_layers, "pooling": model.pooler.mode, **_save_selector(model, directory),
            **(extra or {})}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_classifier(directory: str | Path) -> tuple[MultiExitClassifier, object, ClassificationTask, dict]:
    """-> (classifier in eval mode, tokenizer, task, metadata)."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.get("kind") != "sequence_classifier":
        raise ValueError(f"{directory}: a {meta.get('kind')} model, not a sequence classifier")
    backbone, tokenizer = _load_backbone_and_tokenizer(directory)
    task = ClassificationTask.from_dict(meta)
    model = MultiExitClassifier(backbone, task.num_outputs, pooling=meta.get("pooling", "cls"))
    path = directory / EXITS_FILE
    state = read_safetensors(path)
    _load_heads(model.exits, {k[6:]: v for k, v in state.items() if k.startswith("exits.")}, path)
    _load_heads(model.pooler, {k[7:]: v for k, v in state.items() if k.startswith("pooler.")}, path)
    _load_selector(model, directory, meta)
    return model.eval(), tokenizer, task, meta


def _save_selector(model: MultiExitEncoder, directory: Path) -> dict:
    """Write the model's token selector (if any) to ``selector.safetensors``; its metadata entry."""
    path = directory / SELECTOR_FILE
    if model.selector is None:
        path.unlink(missing_ok=True)  # never leave an earlier model's selector behind
        return {}
    save_file({k: v.contiguous() for k, v in model.selector.state_dict().items()}, path)
    return {"selector": model.selector.config()}


def _load_selector(model: MultiExitEncoder, directory: Path, meta: dict) -> None:
    """Attach the token selector saved with the model, when its metadata names one."""
    config = meta.get("selector")
    if config is None:
        return
    path = directory / SELECTOR_FILE
    try:
        selector = TokenSelector(model.adapter.hidden_size, **config)
    except (TypeError, ValueError) as error:
        raise ModelFormatError(f"{directory / META_FILE}: bad 'selector' entry {config} ({error})") from error
    _load_heads(selector, read_safetensors(path), path)
    model.selector = selector


def _load_heads(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(state)``, a ModelFormatError naming ``path`` if tensors are missing or misshapen."""
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ModelFormatError(f"{path}: damaged or not made for this model ({error})") from error


def _load_backbone_and_tokenizer(directory: Path):
    """The backbone (every weight from model.safetensors) and tokenizer of a model directory; an exported
    ``slim_bert`` sub-network is built by tokexit's own registered classes, never by the directory's code."""
    config = load_config(directory)
    backbone = load_pretrained_model(directory, config, strict=True)
    kwargs = adapter_class(config.model_type).tokenizer_kwargs(config)
    return backbone, load_pretrained_tokenizer(directory, config, **kwargs)


def save_model(encoder: MultiExitEncoder, tokenizer, labels, directory: str | Path, max_length: int,
               extra: dict | None = None) -> Path:
    """Save a tagger or a classifier, whichever ``encoder`` is; ``extra`` goes into the metadata."""
    if isinstance(encoder, MultiExitClassifier):
        return save_classifier(encoder, tokenizer, labels, directory, max_length, extra)
    return save_tagger(encoder, tokenizer, labels, directory, max_length, extra)


def load_exits(encoder: MultiExitEncoder, labels: LabelSet, directory: str | Path) -> None:
    """Load the exit heads of the tokexit model in ``directory`` into ``encoder``; its labels must be ``labels``."""
    saved = read_meta(directory)["labels"]
    if saved != labels.labels:
        raise ValueError(f"{directory}: the model's labels {saved} differ from the data's {labels.labels}")
    path = Path(directory) / EXITS_FILE
    _load_heads(encoder.exits, read_safetensors(path), path)


def load_tagger(directory: str | Path) -> tuple[MultiExitEncoder, object, LabelSet, dict]:
    """-> (encoder in eval mode, tokenizer, label set, metadata)."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.get("kind", "token_tagger") != "token_tagger":
        raise ValueError(f"{directory}: a {meta.get('kind')} model, not a tagger")
    backbone, tokenizer = _load_backbone_and_tokenizer(directory)
    labels = LabelSet(meta["labels"], meta["task"], meta.get("scheme", "bio"))
    encoder = MultiExitEncoder(backbone, len(labels.labels))
    load_exits(encoder, labels, directory)
    _load_selector(encoder, directory, meta)
    return encoder.eval(), tokenizer, labels, meta
