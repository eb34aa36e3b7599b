"""Save and load a trained tokexit model as a directory: Hugging Face backbone + exit heads + labels.

Layout: ``config.json`` + ``model.safetensors`` (the backbone, loadable with ``AutoModel``), ``exits.safetensors``
(the exit heads; a classifier's also hold its pooler under ``pooler.``), ``tokexit.json`` (kind, labels, task,
max length) and the tokenizer files. Kinds: ``token_tagger`` and ``sequence_classifier``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from tokexit.backbones import adapter_class
from tokexit.data.classification import ClassificationTask
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder
from tokexit.engine.classifier import MultiExitClassifier

META_FILE = "tokexit.json"
EXITS_FILE = "exits.safetensors"



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
            **(extra or {})}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def read_meta(directory: str | Path) -> dict:
    """The ``tokexit.json`` of a model directory (FileNotFoundError naming the directory if it is not one)."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{directory}: not a tokexit model directory (no {META_FILE})")
    return json.loads((directory / META_FILE).read_text())


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
            "num_layers": model.num_layers, "pooling": model.pooler.mode, **(extra or {})}
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
    state = load_file(directory / EXITS_FILE)
    model.exits.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("exits.")})
    model.pooler.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("pooler.")})
    return model.eval(), tokenizer, task, meta


def _load_backbone_and_tokenizer(directory: Path):
    hf_logging.disable_progress_bar()
    config = json.loads((directory / "config.json").read_text())
    # an exported DynaBERT sub-network ships its own small model code (tokexit/export/slim_bert)
    remote = config.get("model_type") == "slim_bert"
    backbone = AutoModel.from_pretrained(directory, local_files_only=True, trust_remote_code=remote)
    kwargs = adapter_class(backbone.config.model_type).tokenizer_kwargs(backbone.config)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, use_fast=True,
                                              trust_remote_code=remote, **kwargs)
    return backbone, tokenizer


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
    encoder.exits.load_state_dict(load_file(Path(directory) / EXITS_FILE))


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
    return encoder.eval(), tokenizer, labels, meta
