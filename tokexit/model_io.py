"""Save and load a trained tokexit model as a directory: Hugging Face backbone + exit heads + labels.

Layout: ``config.json`` + ``model.safetensors`` (the backbone, loadable with ``AutoModel``), ``exits.safetensors``
(the exit heads; a classifier's also hold its pooler under ``pooler.``), ``tokexit.json`` (kind, labels, task,
max length) and the tokenizer files. Kinds: ``token_tagger`` and ``sequence_classifier``, one
:class:`~tokexit.tasks.base.Task` each: the task says what is saved and how the model is built. A model with a token
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
from tokexit.tasks import Classification, Tagging, Task, task_for, task_from_meta

META_FILE = "tokexit.json"
EXITS_FILE = "exits.safetensors"
SELECTOR_FILE = "selector.safetensors"


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` or None: ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as is."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def read_meta(directory: str | Path) -> dict:
    """The ``tokexit.json`` of a model directory (FileNotFoundError naming the directory if it is not one)."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{directory}: not a tokexit model directory (no {META_FILE})")
    return read_json(directory / META_FILE)


def save_model(model: MultiExitEncoder, tokenizer, labels: LabelSet | ClassificationTask, directory: str | Path,
               max_length: int, extra: dict | None = None) -> Path:
    """Save a tagger or a classifier (``labels`` says which task); ``extra`` goes into the metadata."""
    task = task_for(labels)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    heads = {prefix + k: v.contiguous() for prefix, module in task.heads(model).items()
             for k, v in module.state_dict().items()}
    save_file(heads, directory / EXITS_FILE)
    meta = {"kind": task.kind, **task.model_meta(model), "max_length": max_length, "num_layers": model.num_layers,
            **_save_selector(model, directory), **(extra or {})}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_model(directory: str | Path, kind: str | None = None) -> tuple[MultiExitEncoder, object, Task, dict]:
    """-> (model in eval mode, tokenizer, task, metadata) of whichever kind the directory holds (``kind``: it
    must hold that one, ValueError otherwise)."""
    directory = Path(directory)
    meta = read_meta(directory)
    task = task_from_meta(meta, str(directory / META_FILE))
    if kind is not None and task.kind != kind:
        raise ValueError(f"{directory}: a {task.kind} model, not a {kind}")
    backbone, tokenizer = _load_backbone_and_tokenizer(directory)
    model = task.build(backbone)
    path = directory / EXITS_FILE
    state = read_safetensors(path)
    for prefix, module in task.heads(model).items():
        _load_heads(module, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, path)
    _load_selector(model, directory, meta)
    return model.eval(), tokenizer, task, meta


def load_tagger(directory: str | Path) -> tuple[MultiExitEncoder, object, LabelSet, dict]:
    """-> (encoder in eval mode, tokenizer, label set, metadata); ValueError if the directory holds no tagger."""
    model, tokenizer, task, meta = load_model(directory, Tagging.kind)
    return model, tokenizer, task.labels, meta


def load_classifier(directory: str | Path) -> tuple[MultiExitClassifier, object, ClassificationTask, dict]:
    """-> (classifier in eval mode, tokenizer, task, metadata); ValueError if the directory holds no classifier."""
    model, tokenizer, task, meta = load_model(directory, Classification.kind)
    return model, tokenizer, task.labels, meta


def load_exits(encoder: MultiExitEncoder, labels: LabelSet, directory: str | Path) -> None:
    """Load the exit heads of the tagger in ``directory`` into ``encoder``; its labels must be ``labels``."""
    saved = read_meta(directory)["labels"]
    if saved != labels.labels:
        raise ValueError(f"{directory}: the model's labels {saved} differ from the data's {labels.labels}")
    path = Path(directory) / EXITS_FILE
    _load_heads(encoder.exits, read_safetensors(path), path)


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
