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

Speed profiles: ``tokexit.json`` may hold ``profiles``, calibrated settings by FLOPs speed-up (``"2"``, ``"2.5"``):
each the exit policy and token fate (by name and arguments, rebuilt from tokexit's own classes, never imported by
path), the speed-ups and scores measured when it was made (:func:`save_profile`, written by ``tokexit.evaluate
... exit.target_speedup=2 save_profile=true``), used by ``speed=2`` (:func:`profile_setting`).
"""

from __future__ import annotations

import json
import logging
import math
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
from tokexit.exits import EntropyExit, NoExit, PatienceExit, SentenceExit, StaticExit, TokenWindowExit
from tokexit.exits.prescribed import PrescribedExit
from tokexit.fates import FATES
from tokexit.inference.setting import Setting
from tokexit.io.progress import write_atomic
from tokexit.tasks import Classification, Tagging, Task, task_for, task_from_meta

log = logging.getLogger("tokexit")

META_FILE = "tokexit.json"
EXITS_FILE = "exits.safetensors"
SELECTOR_FILE = "selector.safetensors"
PROFILES = "profiles"
#: the exit policies a speed profile may name (by ``name``)
EXIT_POLICIES = {p.name: p for p in (NoExit, TokenWindowExit, SentenceExit, StaticExit, PrescribedExit, EntropyExit,
                                     PatienceExit)}


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
    write_meta(directory, meta)
    return directory


def write_meta(directory: str | Path, meta: dict) -> Path:
    """Write ``tokexit.json`` atomically: a temporary file in the same directory, renamed over the old one, so a
    crash leaves the old file or the new one, never half of one."""
    path = Path(directory) / META_FILE
    write_atomic(path, json.dumps(meta, indent=2))
    return path


def speed_key(speed) -> str:
    """A FLOPs speed-up (2, 2.0, "2", 2.5) -> its profile key ("2", "2.5"); ValueError for anything else."""
    try:
        value = float(speed) if not isinstance(speed, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not value >= 1 or math.isinf(value):
        raise ValueError(f"speed must be a FLOPs speed-up over the full model (a number >= 1, e.g. 2), not {speed!r}")
    return f"{value:g}"


def read_profiles(directory: str | Path) -> dict[str, dict]:
    """The speed profiles stored in a model directory (``{}`` when none), by key."""
    meta = read_meta(directory)
    check_meta(meta, Path(directory) / META_FILE)
    return meta.get(PROFILES, {})


def save_profile(directory: str | Path, speed, profile: dict) -> str:
    """Store ``profile`` (its ``exit`` and ``fate`` as :func:`profile_setting` reads them, plus what was measured)
    under :func:`speed_key` of ``speed`` in ``tokexit.json`` (replacing one of the same key, keeping the others);
    checked by rebuilding its setting first. Returns the key."""
    key = speed_key(speed)
    profile_setting(profile, f"profile {key}")
    meta = read_meta(directory)
    meta[PROFILES] = {**meta.get(PROFILES, {}), key: profile}
    meta[PROFILES] = dict(sorted(meta[PROFILES].items(), key=lambda item: float(item[0])))
    write_meta(directory, meta)
    return key


def profile_setting(profile: dict, where: str) -> Setting:
    """The setting of a speed profile: ``exit`` ``{"policy": NAME, **arguments}`` and ``fate`` ``{"fate": NAME,
    **arguments}``, built from tokexit's own classes; a bad entry is a ModelFormatError naming ``where``."""
    try:
        exit_entry, fate_entry = dict(profile["exit"]), dict(profile["fate"])
        policy_class = EXIT_POLICIES[exit_entry.pop("policy")]
        fate_class = FATES[fate_entry.pop("fate")]
        for name, value in {**exit_entry, **fate_entry}.items():
            if not _setting_value(name, value):
                raise TypeError(f"'{name}' is {value!r}")
        return Setting(policy_class(**exit_entry), fate_class(**fate_entry))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFormatError(f"{where}: bad speed profile {profile!r} ({type(error).__name__}: {error}); known "
                               f"exit policies: {', '.join(EXIT_POLICIES)}; fates: {', '.join(FATES)}") from error


TEXT_SETTINGS = ("uncertainty", "pool", "label_removed")  # the exit and fate arguments that are names, not numbers


def _setting_value(name: str, value) -> bool:
    """Whether ``value`` can be exit or fate argument ``name`` of a stored profile: a name for
    :data:`TEXT_SETTINGS`, else a number, a switch (true/false), None, or a list of numbers (per-layer
    thresholds)."""
    if name in TEXT_SETTINGS:
        return isinstance(value, str)
    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return value is None or isinstance(value, bool) or number(value) or \
        isinstance(value, list) and all(number(v) for v in value)


MIN_MAX_LENGTH = 8  # the shortest input a model may declare: [CLS], [SEP] and a few subwords of context


def warn_untrained_subnetwork(meta: dict, width: float, depth: float, directory: str | Path) -> None:
    """Log a warning when a (``width``, ``depth``) sub-network other than the whole model is asked of a model
    that DynaBERT did not train for it (its ``tokexit.json`` has no ``dynabert`` entry, or other sizes): the slice
    runs, but its predictions are usually close to useless."""
    if (width, depth) == (1.0, 1.0):
        return
    trained = meta.get("dynabert") or {}
    if width in trained.get("widths", []) and depth in trained.get("depths", []):
        return
    sizes = (f"DynaBERT trained widths {trained.get('widths')} and depths {trained.get('depths')}" if trained
             else "it was not trained with DynaBERT (model=dynabert)")
    log.warning("%s: width %s, depth %s is not a sub-network this model was trained for (%s): expect a large "
                "loss of accuracy", directory, width, depth, sizes)


def check_meta(meta: dict, path: str | Path) -> None:
    """What tokexit.json must hold beyond its kind and labels (checked by the task), or ModelFormatError naming
    ``path``: ``profiles`` an object of valid speed profiles, ``max_length`` a whole number >=
    :data:`MIN_MAX_LENGTH`."""
    profiles = meta.get(PROFILES, {})
    if not isinstance(profiles, dict):
        raise ModelFormatError(f"{path}: '{PROFILES}' must be an object, not {type(profiles).__name__}")
    for key, profile in profiles.items():
        profile_setting(profile, f"{path}: profiles.{key}")
    length = meta.get("max_length", 512)
    if isinstance(length, bool) or not isinstance(length, int) or length < MIN_MAX_LENGTH:
        raise ModelFormatError(f"{path}: 'max_length' must be a whole number >= {MIN_MAX_LENGTH} (subwords per "
                               f"input), not {length!r}")


def describe_profiles(profiles: dict[str, dict]) -> str:
    """One line per stored profile: key, speed-ups and scores (for messages and listings)."""
    def line(key: str, p: dict) -> str:
        parts = [f"{p[k]:.2f}x {name}" for k, name in (("flops_speedup", "FLOPs"), ("wall_speedup", "wall"))
                 if isinstance(p.get(k), int | float)]
        parts += [f"{what} {p.get('metric', 'score')} {p[k]:.2f}" for k, what in (("dev_score", "dev"),
                                                                                   ("test_score", "test"))
                  if isinstance(p.get(k), int | float)]
        return f"speed={key}" + (f" ({', '.join(parts)})" if parts else "")
    return "; ".join(line(k, p) for k, p in profiles.items()) or "none"


def select_profile(profiles: dict[str, dict], speed, directory: str | Path, policy: str = "token_window") -> Setting:
    """The setting stored for ``speed`` in ``directory``'s profiles; an unknown speed is a ValueError listing the
    stored ones and how to make one (calibrating exit ``policy``: a tagger's token window, a classifier's entropy)."""
    key = speed_key(speed)
    if key not in profiles:
        raise ValueError(f"speed={speed}: {Path(directory) / META_FILE} holds no speed profile '{key}' (stored: "
                         f"{describe_profiles(profiles)}); make one with python -m tokexit.evaluate "
                         f"model_dir={directory} data.test_file=TEST data.validation_file=DEV exit={policy} "
                         f"exit.target_speedup={key} save_profile=true")
    return profile_setting(profiles[key], f"{Path(directory) / META_FILE}: profiles.{key}")


def load_model(directory: str | Path, kind: str | None = None) -> tuple[MultiExitEncoder, object, Task, dict]:
    """-> (model in eval mode, tokenizer, task, metadata) of whichever kind the directory holds (``kind``: it
    must hold that one, ValueError otherwise)."""
    directory = Path(directory)
    meta = read_meta(directory)
    check_meta(meta, directory / META_FILE)
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
