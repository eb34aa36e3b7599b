"""Save and load a trained tokexit model as a directory: Hugging Face backbone + exit heads + labels.

Layout: ``config.json`` + ``model.safetensors`` (the backbone, loadable with ``AutoModel``), ``exits.safetensors``
(the exit heads), ``tokexit.json`` (labels, task, scheme, max length) and the tokenizer files.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from tokexit.backbones import adapter_class
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder

META_FILE = "tokexit.json"
EXITS_FILE = "exits.safetensors"


def save_tagger(encoder: MultiExitEncoder, tokenizer, labels: LabelSet, directory: str | Path,
                max_length: int) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder.backbone.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_file({k: v.contiguous() for k, v in encoder.exits.state_dict().items()}, directory / EXITS_FILE)
    meta = {"kind": "token_tagger", **labels.to_dict(), "max_length": max_length, "num_layers": encoder.num_layers}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_exits(encoder: MultiExitEncoder, labels: LabelSet, directory: str | Path) -> None:
    """Load the exit heads of the tokexit model in ``directory`` into ``encoder``; its labels must be ``labels``."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{directory}: not a tokexit model directory (no {META_FILE})")
    saved = json.loads((directory / META_FILE).read_text())["labels"]
    if saved != labels.labels:
        raise ValueError(f"{directory}: the model's labels {saved} differ from the data's {labels.labels}")
    encoder.exits.load_state_dict(load_file(directory / EXITS_FILE))


def load_tagger(directory: str | Path) -> tuple[MultiExitEncoder, object, LabelSet, dict]:
    """-> (encoder in eval mode, tokenizer, label set, metadata)."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{directory}: not a tokexit model directory (no {META_FILE})")
    meta = json.loads((directory / META_FILE).read_text())
    hf_logging.disable_progress_bar()
    backbone = AutoModel.from_pretrained(directory, local_files_only=True)
    kwargs = adapter_class(backbone.config.model_type).tokenizer_kwargs(backbone.config)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, use_fast=True, **kwargs)
    labels = LabelSet(meta["labels"], meta["task"], meta.get("scheme", "bio"))
    encoder = MultiExitEncoder(backbone, len(labels.labels))
    load_exits(encoder, labels, directory)
    return encoder.eval(), tokenizer, labels, meta
