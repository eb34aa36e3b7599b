"""Loading a model directory never runs code from it (auto_map, shipped .py files, pickles), and missing or damaged
weight files give errors that name them.

Every hostile directory is also checked the other way round: plain transformers with ``trust_remote_code=True``
(in a fresh interpreter without tokexit) or ``pickle.loads`` does run its code, so a marker that stays absent
proves that tokexit's loaders skipped live code, not that the code was broken.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from tokexit.api import Classifier, Tagger
from tokexit.backbones import ModelFormatError, load_backbone, load_tokenizer
from tokexit.data.classification import ClassificationTask
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.export.__main__ import export
from tokexit.export.slim_bert import SlimBertModel
from tokexit.export.subnetwork import CODE_FILES, SLIM_BERT_CODE
from tokexit.lightning.dynabert_module import DynaBertModule
from tokexit.model_io import load_classifier, load_model, load_tagger, read_meta, save_model

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alice", "bob", "carol", "paris", "oslo", "went", "to", "saw",
         "in", "the", "good", "bad", "film", "."]
SENTENCES = ["alice went to paris", "bob saw carol in oslo .", "the film", "carol went to the bad film in paris"]
LABELS = LabelSet(["O", "B-PER", "I-PER", "B-LOC"], "ner")
TASK = ClassificationTask(["0", "1", "2"])


def tiny_bert(seed: int) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=4,
                        vocab_size=len(WORDS), max_position_embeddings=64)
    return BertModel(config)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random tagger and classifier (model_type bert) and their exported sub-networks (slim_bert)."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})
    dirs = {"tagger": save_model(MultiExitEncoder(tiny_bert(0), len(LABELS.labels)), tokenizer, LABELS,
                                 root / "tagger", 64),
            "classifier": save_model(MultiExitClassifier(tiny_bert(1), TASK.num_outputs), tokenizer, TASK,
                                     root / "classifier", 64)}
    for kind in ("tagger", "classifier"):
        export(str(dirs[kind]), 0.5, 0.5, str(root / f"{kind}-slim"))
        dirs[f"{kind}-slim"] = root / f"{kind}-slim"
    return dirs


def predictions(directory: Path) -> list:
    """What the Python API predicts for SENTENCES (tags and exit layers, or labels and exit layers)."""
    if read_meta(directory)["kind"] == "sequence_classifier":
        return Classifier.load(directory, device="cpu").classify(SENTENCES)
    return Tagger.load(directory, device="cpu").tag(SENTENCES)


def load_any(directory: Path):
    """(model, tokenizer) of whichever kind the directory holds."""
    model, tokenizer, _, _ = load_model(directory)
    return model, tokenizer


MARKER_VARIABLE = "TOKEXIT_TEST_MARKER"


def marker(directory: Path) -> Path:
    """Where the code of a hostile directory leaves its trace when tokexit's process runs it."""
    return directory.parent / f"{directory.name}.marker"


def control_marker(directory: Path) -> Path:
    """Where it leaves its trace when plain transformers runs it (``trust_remote_code=True``, without tokexit)."""
    return directory.parent / f"{directory.name}.trusted"


def marker_code(path: Path) -> str:
    """A line that leaves a trace in ``path`` (or in $TOKEXIT_TEST_MARKER) when Python runs it."""
    return f"open(__import__('os').environ.get({MARKER_VARIABLE!r}) or {str(path)!r}, 'a').write(__name__ + '\\n')\n"


def write_evil_module(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(marker_code(marker(directory)) + textwrap.dedent(body))


def hostile_export(source: Path, target: Path) -> Path:
    """A copy of an exported slim_bert directory whose shipped code (which its auto_map points at) leaves a marker
    when imported, and otherwise still works."""
    shutil.copytree(source, target)
    for name in CODE_FILES:
        code = marker_code(marker(target)) + (SLIM_BERT_CODE / name).read_text(encoding="utf-8")
        (target / name).write_text(code)
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "slim_bert" and set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    return target


EVIL_MODEL = """
    from transformers import BertConfig, BertModel


    class EvilConfig(BertConfig):
        model_type = "evil_bert"


    class EvilModel(BertModel):
        config_class = EvilConfig
"""

EVIL_TOKENIZER = """
    from transformers import BertTokenizer


    class EvilTokenizer(BertTokenizer):
        pass
"""


def with_auto_map(source: Path, target: Path, model_type: str) -> Path:
    """A copy of a tokexit model directory whose config.json has ``model_type`` and an auto_map to code that leaves
    a marker on import."""
    shutil.copytree(source, target)
    write_evil_module(target, "evil", EVIL_MODEL)
    config = json.loads((target / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (target / "config.json").write_text(json.dumps(config))
    return target


def with_tokenizer_auto_map(source: Path, target: Path, keep_class: bool) -> Path:
    """A copy of a tokexit model directory whose tokenizer_config.json has an auto_map to code that leaves a marker
    on import (and, unless ``keep_class``, no tokenizer_class)."""
    shutil.copytree(source, target)
    write_evil_module(target, "evil_tokenizer", EVIL_TOKENIZER)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", "evil_tokenizer.EvilTokenizer"]}
    if not keep_class:
        del config["tokenizer_class"]
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def hostile(models, tmp_path_factory) -> dict[str, Path]:
    """Hostile copies of the models: name -> directory."""
    root = tmp_path_factory.mktemp("hostile")
    return {
        "tagger-slim": hostile_export(models["tagger-slim"], root / "tagger-slim"),
        "classifier-slim": hostile_export(models["classifier-slim"], root / "classifier-slim"),
        "evil_bert": with_auto_map(models["tagger"], root / "evil_bert", "evil_bert"),
        "bert": with_auto_map(models["classifier"], root / "bert", "bert"),
        "tokenizer-tagger": with_tokenizer_auto_map(models["tagger"], root / "tokenizer-tagger", True),
        "tokenizer-classifier-slim": with_tokenizer_auto_map(models["classifier-slim"],
                                                             root / "tokenizer-classifier-slim", False),
    }


#: the auto class whose ``from_pretrained(..., trust_remote_code=True)`` runs each hostile directory's code
TRUSTED_LOADS = {"tagger-slim": "AutoModel", "classifier-slim": "AutoModel", "evil_bert": "AutoConfig",
                 "bert": "AutoModel", "tokenizer-tagger": "AutoTokenizer", "tokenizer-classifier-slim": "AutoTokenizer"}


@pytest.fixture(scope="module")
def trusted(hostile, tmp_path_factory) -> dict[str, bool]:
    """name -> whether plain transformers, in a fresh interpreter without tokexit, runs the hostile directory's code
    when told to trust it (each load may fail afterwards): the control that shows each marker can appear."""
    loads = [(TRUSTED_LOADS[name], str(path), str(control_marker(path))) for name, path in hostile.items()]
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.modules["tokexit"] = None
        import transformers
        for auto, directory, marker in {loads!r}:
            os.environ[{MARKER_VARIABLE!r}] = marker
            try:
                getattr(transformers, auto).from_pretrained(directory, trust_remote_code=True, local_files_only=True)
            except Exception as error:
                print(auto, directory, type(error).__name__, error, file=sys.stderr)
        """
    )
    root = tmp_path_factory.mktemp("trusted")
    env = dict(os.environ, HF_MODULES_CACHE=str(root / "hf_modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: control_marker(directory).exists() for name, directory in hostile.items()}


@pytest.mark.parametrize("kind", ["tagger", "classifier"])
def test_exported_directory_code_never_runs(models, hostile, trusted, tmp_path, kind):
    """Tagger/Classifier.load, load_tagger/load_classifier, export, the DynaBERT teacher (and init_from) and its
    tokenizer all build the slim_bert backbone with tokexit's classes: no marker, the same predictions."""
    name = f"{kind}-slim"
    clean, directory = models[name], hostile[name]

    assert predictions(directory) == predictions(clean)
    model, tokenizer = load_any(directory)
    assert type(model.backbone) is SlimBertModel  # tokexit's own class, not the directory's
    reference, _ = load_any(clean)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    summary = export(str(directory), 1.0, 1.0, str(tmp_path / "again"))
    assert summary["from"] == str(directory)
    for file in CODE_FILES:  # the re-export ships tokexit's code, not the hostile copy
        assert (tmp_path / "again" / file).read_text() == (SLIM_BERT_CODE / file).read_text()
    assert predictions(tmp_path / "again") == predictions(clean)

    labels = LABELS if kind == "tagger" else TASK
    module = DynaBertModule(labels, teacher=str(directory), init_from=str(directory))
    assert type(module.teacher.backbone) is SlimBertModel and type(module.encoder.backbone) is SlimBertModel
    assert load_tokenizer(str(directory))("alice went")["input_ids"] == tokenizer("alice went")["input_ids"]
    assert type(load_backbone(str(directory))) is SlimBertModel
    assert not marker(directory).exists()
    assert trusted[name], "the hostile code should run where remote code is trusted"


def test_unknown_architecture_with_auto_map_is_refused(hostile, trusted, tmp_path):
    directory = hostile["evil_bert"]
    loaders = {"load_tagger": load_tagger, "Tagger.load": Tagger.load, "load_backbone": load_backbone,
               "load_tokenizer": load_tokenizer, "export": lambda d: export(d, 1.0, 1.0, str(tmp_path / "out")),
               "DynaBERT teacher": lambda d: DynaBertModule(LABELS, teacher=d)}
    for name, load in loaders.items():
        with pytest.raises(ModelFormatError, match="never runs code") as error:
            load(str(directory))
        assert "'evil_bert'" in str(error.value) and str(directory / "config.json") in str(error.value), name
    assert not (tmp_path / "out").exists()
    assert not marker(directory).exists()
    assert trusted["evil_bert"], "the hostile code should run where remote code is trusted"


def test_auto_map_of_a_known_architecture_is_ignored(models, hostile, trusted):
    """model_type bert with an auto_map to other code: tokexit builds transformers' BertModel and ignores it."""
    directory = hostile["bert"]
    assert predictions(directory) == predictions(models["classifier"])
    assert type(load_any(directory)[0].backbone) is BertModel
    assert type(load_backbone(str(directory))) is BertModel
    assert not marker(directory).exists()
    assert trusted["bert"], "the hostile code should run where remote code is trusted"


@pytest.mark.parametrize("kind", ["tagger", "classifier-slim"])
def test_tokenizer_auto_map_is_ignored(models, hostile, trusted, kind):
    """A tokenizer_config.json whose auto_map points at code that leaves a marker (for the slim_bert directory,
    without a tokenizer_class either): transformers' BERT tokenizer is used, predictions are unchanged."""
    directory = hostile[f"tokenizer-{kind}"]
    assert predictions(directory) == predictions(models[kind])
    _, tokenizer = load_any(directory)
    assert type(tokenizer) is BertTokenizer and type(load_tokenizer(str(directory))) is BertTokenizer
    assert not marker(directory).exists()
    assert trusted[f"tokenizer-{kind}"], "the hostile code should run where remote code is trusted"


class Payload:
    """Unpickling it runs ``code``."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_pickle_only_weights_are_refused(models, tmp_path):
    directory = tmp_path / "pickled"
    shutil.copytree(models["tagger"], directory)
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker_code(marker(directory)))))
    for load in (load_tagger, load_backbone, lambda d: DynaBertModule(LABELS, teacher=d)):
        with pytest.raises(ModelFormatError, match="convert it to safetensors") as error:
            load(str(directory))
        assert str(directory) in str(error.value) and "pytorch_model.bin" in str(error.value)
    assert not marker(directory).exists()

    pickle.loads((directory / "pytorch_model.bin").read_bytes())
    assert marker(directory).exists(), "unpickling the file should run its code"


def truncate(path: Path, size: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


@pytest.mark.parametrize("kind", ["tagger", "classifier", "tagger-slim"])
@pytest.mark.parametrize("name", ["model.safetensors", "exits.safetensors"])
def test_damaged_or_missing_weights_name_the_file(models, tmp_path, kind, name):
    directory = tmp_path / "model"
    shutil.copytree(models[kind], directory)
    path = directory / name
    load_any(directory)  # the intact copy loads
    for size in (None, 4, 100):  # half the file; shorter than the header's length; a cut-off header
        shutil.copyfile(models[kind] / name, path)
        truncate(path, size)
        for load in (load_any, predictions):
            with pytest.raises(ModelFormatError, match="damaged or truncated") as error:
                load(directory)
            assert str(path) in str(error.value)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing") as error:
        load_any(directory)
    assert str(path) in str(error.value)


def test_exits_of_another_model_name_the_file(models, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(models["tagger"], directory)
    shutil.copyfile(models["classifier"] / "exits.safetensors", directory / "exits.safetensors")
    with pytest.raises(ModelFormatError, match="damaged or not made for this model") as error:
        load_tagger(directory)
    assert str(directory / "exits.safetensors") in str(error.value)


def test_backbone_weights_with_missing_tensors_are_damaged(models, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "model"
    shutil.copytree(models["classifier"], directory)
    state = load_file(directory / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layer.1." not in k}, directory / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelFormatError, match="tensors missing") as error:
        load_classifier(directory)
    assert str(directory / "model.safetensors") in str(error.value)


def test_damaged_json_names_the_file(models, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(models["tagger"], directory)
    for name in ("config.json", "tokexit.json"):
        shutil.copyfile(models["tagger"] / name, directory / name)
        truncate(directory / name)
        with pytest.raises(ModelFormatError, match="damaged") as error:
            load_tagger(directory)
        assert str(directory / name) in str(error.value)
        shutil.copyfile(models["tagger"] / name, directory / name)


# ----------------------------------------------------------------------------- tokenizer files and tokexit.json


DELETE = object()  # a tokexit.json entry to remove


def damaged_copy(models: dict[str, Path], tmp_path: Path, kind: str = "tagger") -> Path:
    copy = tmp_path / f"{kind}-copy"
    shutil.copytree(models[kind], copy)
    return copy


def test_missing_tokenizer_vocabulary_is_refused(models, tmp_path):
    """Without its vocabulary files transformers builds a 5-token tokenizer that maps every word to [UNK]."""
    copy = damaged_copy(models, tmp_path)
    big = json.loads((copy / "config.json").read_text())
    big["vocab_size"] = 200  # a model whose vocabulary the few tokens left cannot be
    (copy / "config.json").write_text(json.dumps(big))
    for name in ("vocab.txt", "tokenizer.json"):
        (copy / name).unlink(missing_ok=True)
    with pytest.raises(ModelFormatError, match=r"its tokenizer has \d+ tokens but the model's vocabulary 200"):
        load_tokenizer(str(copy))


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json"])
def test_truncated_tokenizer_json_names_the_file(models, tmp_path, name):
    copy = damaged_copy(models, tmp_path)
    path = copy / name
    assert path.is_file(), sorted(p.name for p in copy.iterdir())
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    with pytest.raises(ModelFormatError, match=rf"{name}: damaged or truncated JSON"):
        Tagger.load(copy, device="cpu")


@pytest.mark.parametrize(("change", "problem"), [
    ({"profiles": 5}, "'profiles' must be an object, not int"),
    ({"profiles": {"2": {"exit": {"policy": "token_window", "threshold": "abc", "window": 3},
                         "fate": {"fate": "copy"}}}}, r"profiles.2: bad speed profile .*'threshold' is 'abc'"),
    ({"max_length": 0}, "'max_length' must be a whole number >= 8"),
    ({"max_length": "512"}, "'max_length' must be a whole number"),
    ({"labels": None}, "not a valid token_tagger model description: labels must be a non-empty list"),
    ({"scheme": "bioes2"}, "scheme must be one of bio, iob1, none, not 'bioes2'"),
    ({"task": "parsing"}, "task must be one of ner, tagging"),
    ({"labels": DELETE}, "not a valid token_tagger model description: no 'labels' entry"),
])
def test_bad_tokexit_json_entries_are_refused_on_load(models, tmp_path, change, problem):
    copy = damaged_copy(models, tmp_path)
    meta = read_meta(copy)
    meta.update(change)
    meta = {k: v for k, v in meta.items() if v is not DELETE}
    (copy / "tokexit.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=rf"tokexit.json: .*{problem}"):
        Tagger.load(copy, device="cpu")


def test_profiles_are_a_copy_and_hints_name_the_right_policy(models, tmp_path):
    copy = damaged_copy(models, tmp_path)
    meta = read_meta(copy)
    meta["profiles"] = {"2": {"exit": {"policy": "token_window", "threshold": 0.01, "window": 3},
                              "fate": {"fate": "copy"}}}
    (copy / "tokexit.json").write_text(json.dumps(meta))
    tagger = Tagger.load(copy, device="cpu")
    tagger.profiles["2"]["exit"]["threshold"] = 1.0  # editing what was returned leaves the model as it was
    assert tagger.setting(speed=2).policy.threshold == 0.01
    with pytest.raises(ValueError, match="exit=token_window exit.target_speedup=3"):
        tagger.setting(speed=3)
    with pytest.raises(ValueError, match="exit=entropy exit.target_speedup=3"):
        Classifier.load(models["classifier"], device="cpu").classify("the film", speed=3)
    with pytest.raises(ValueError, match="max_length must be a whole number >= 8"):
        Tagger(tagger.encoder, tagger.tokenizer, tagger.labels, max_length=1)
