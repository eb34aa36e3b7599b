"""Speed profiles: ``tokexit.evaluate ... exit.target_speedup=X save_profile=true`` stores the calibrated setting in
the model directory's tokexit.json (atomically), with its speed-ups and dev/test scores; ``speed=X`` in
``tokexit.tag``, ``Tagger.tag`` and ``Classifier.classify`` runs exactly that setting; unknown speeds list the stored
ones; profile entries name tokexit's own classes, never an importable path."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from conftest import read_predictions, synthetic_sentences
from test_classification_pipeline import FAST as CLASSIFIER_FAST
from test_classification_pipeline import write_sentiment
from test_pipeline import config
from test_tag import tiny_tagger

from tokexit.api import Classifier, Tagger
from tokexit.backbones import ModelFormatError
from tokexit.config import UsageError
from tokexit.evaluate import evaluate
from tokexit.exits import EntropyExit, TokenWindowExit
from tokexit.io import progress
from tokexit.model_io import read_meta, read_profiles, save_profile
from tokexit.tag import tag
from tokexit.train import train


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("profiles")
    (root / "tagger").mkdir()
    sentiment = {"train": write_sentiment(root / "train.tsv", 80, 1),
                 "validation": write_sentiment(root / "dev.tsv", 30, 2),
                 "test": write_sentiment(root / "test.tsv", 20, 3)}
    train(config("train", [*CLASSIFIER_FAST, "data=sst2", "trainer.max_epochs=1", f"output_dir={root / 'classifier'}",
                           *[f"data.{k}_file={v}" for k, v in sentiment.items()]]))
    return {"tagger": tiny_tagger(root / "tagger"), "dev": root / "tagger" / "dev.txt",
            "test": root / "tagger" / "test.txt", "classifier": root / "classifier" / "model", "sentiment": sentiment}


def copy(model: Path, tmp_path: Path) -> Path:
    """A private copy of a model directory (profiles are written into it)."""
    return Path(shutil.copytree(model, tmp_path / "model"))


def calibrate(model: Path, test: Path, dev: Path, out: Path, *extra: str) -> dict:
    return evaluate(config("evaluate", [f"model_dir={model}", f"data.test_file={test}", f"data.validation_file={dev}",
                                        f"output_dir={out}", "batch_size=8", "timing_repeats=1", *extra]))


def test_saved_profile_records_the_calibration_and_speed_runs_it(models, tmp_path):
    model = copy(models["tagger"], tmp_path)
    m = calibrate(model, models["test"], models["dev"], tmp_path / "cal", "exit=token_window",
                  "exit.target_speedup=1.5", "save_profile=true")
    threshold = m["calibration"]["threshold"]
    profile = read_profiles(model)["1.5"]
    assert profile["exit"] == {"policy": "token_window", "threshold": threshold, "window": 5, "thresholds": None,
                               "upper_factor": 1.0, "uncertainty": "entropy"}
    assert profile["fate"] == {"fate": "copy"} and profile["metric"] == "f1" and profile["reached"] is True
    assert (profile["flops_speedup"], profile["wall_speedup"]) == (m["flops_speedup"], m["wall_speedup"])
    assert profile["dev_flops_speedup"] >= 1.5 and profile["test_score"] == m["score"]["f1"]
    assert profile["validation_file"] == str(models["dev"].resolve()) and profile["target_speedup"] == 1.5
    datetime.fromisoformat(profile["calibrated_on"])
    # dev_score is the calibrated setting's score on the validation file
    dev = evaluate(config("evaluate", [f"model_dir={model}", f"data.test_file={models['dev']}", "batch_size=8",
                                       f"output_dir={tmp_path / 'dev'}", "timing_repeats=1", "exit=token_window",
                                       f"exit.threshold={threshold}"]))
    assert profile["dev_score"] == dev["score"]["f1"]

    tagger = Tagger.load(model, device="cpu")
    assert tagger.profiles == {"1.5": profile}
    words = [[w for w, _ in s] for s in synthetic_sentences(20, seed=4)]
    by_speed = tagger.tag(words, speed=1.5)
    assert by_speed == tagger.tag(words, exit=TokenWindowExit(threshold)) == tagger.tag(words, speed="1.5")
    assert {t.exit_layer for s in by_speed for t in s} != {3}
    # the CLI with speed= writes what evaluate predicted with the calibrated setting
    tag(config("tag", [f"model_dir={model}", f"input={models['test']}", f"output={tmp_path / 'out.conll'}",
                       "speed=1.5", "exit_layer=true", "batch_size=8"]))
    expected = [[(r[2], r[3]) for r in s] for s in read_predictions(tmp_path / "cal" / "predictions.conll")]
    assert [[(r[1], r[2]) for r in s] for s in read_predictions(tmp_path / "out.conll")] == expected

    calibrate(model, models["test"], models["dev"], tmp_path / "cal2", "exit=token_window",
              "exit.target_speedup=1.25", "save_profile=true")
    assert list(read_profiles(model)) == ["1.25", "1.5"] and read_profiles(model)["1.5"] == profile
    assert read_meta(model)["labels"] == read_meta(models["tagger"])["labels"]  # the rest of tokexit.json kept


def test_unknown_speed_lists_the_stored_ones(models, tmp_path):
    model = copy(models["tagger"], tmp_path)
    tagger = Tagger.load(model, device="cpu")
    with pytest.raises(ValueError, match=r"no speed profile '2' \(stored: none\).*exit.target_speedup=2 save_profile"):
        tagger.tag("alice went to paris", speed=2)
    save_profile(model, 2, {"exit": {"policy": "token_window", "threshold": 0.5}, "fate": {"fate": "drop"},
                            "flops_speedup": 2.1, "wall_speedup": 1.6, "dev_score": 80.0, "metric": "f1"})
    tagger = Tagger.load(model, device="cpu")
    with pytest.raises(ValueError, match=r"stored: speed=2 \(2.10x FLOPs, 1.60x wall, dev f1 80.00\)"):
        tagger.tag("alice went to paris", speed=3)
    with pytest.raises(ValueError, match="give speed or exit, not both"):
        tagger.tag("alice went to paris", speed=2, exit=TokenWindowExit(0.1))
    with pytest.raises(ValueError, match="a number >= 1"):
        tagger.tag("alice went to paris", speed=0.5)
    assert len(tagger.tag("alice went to paris", speed=2.0)[0]) == 4
    with pytest.raises(UsageError, match="holds no speed profile '3'.*stored: speed=2"):
        tag(config("tag", [f"model_dir={model}", f"input={models['test']}", f"output={tmp_path / 'o'}", "speed=3"]))


def test_save_profile_needs_a_calibration_of_the_whole_model(models, tmp_path):
    base = [f"model_dir={models['tagger']}", f"data.test_file={models['test']}", f"output_dir={tmp_path}",
            f"data.validation_file={models['dev']}", "save_profile=true"]
    with pytest.raises(UsageError, match="give exit.target_speedup=X"):
        evaluate(config("evaluate", [*base, "exit=token_window", "exit.threshold=0.1"]))
    with pytest.raises(UsageError, match="subnetwork"):
        evaluate(config("evaluate", [*base, "exit=token_window", "exit.target_speedup=2", "subnetwork.depth=0.5"]))
    with pytest.raises(UsageError, match="data.context=sentence"):
        evaluate(config("evaluate", [*base, "exit=token_window", "exit.target_speedup=2", "data.context=document"]))
    assert "profiles" not in read_meta(models["tagger"])


@pytest.mark.parametrize("entry", [
    {"exit": {"policy": "os.system", "command": "true"}, "fate": {"fate": "copy"}},
    {"exit": {"_target_": "os.system", "command": "true"}, "fate": {"fate": "copy"}},
    {"exit": {"policy": "token_window", "threshold": 0.1, "colour": "red"}, "fate": {"fate": "copy"}},
    {"exit": {"policy": "token_window", "threshold": 0.1, "window": 4}, "fate": {"fate": "copy"}},
    {"exit": {"policy": "none"}},
])
def test_bad_profile_entries_name_the_file_and_import_nothing(models, tmp_path, entry):
    model = copy(models["tagger"], tmp_path)
    meta = read_meta(model)
    (model / "tokexit.json").write_text(json.dumps({**meta, "profiles": {"2": entry}}))
    with pytest.raises(ModelFormatError, match=r"tokexit.json: profiles.2: bad speed profile"):
        Tagger.load(model, device="cpu")  # checked when the model loads, not first when speed=2 is asked for
    with pytest.raises(ModelFormatError, match="bad speed profile"):
        save_profile(model, 3, entry)  # checked before it is written
    assert "3" not in read_meta(model)["profiles"]


def test_tokexit_json_is_replaced_whole(models, tmp_path, monkeypatch):
    model = copy(models["tagger"], tmp_path)
    before = (model / "tokexit.json").read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(progress.os, "replace", crash)  # tokexit.json is written by io.progress.write_atomic
    with pytest.raises(OSError, match="disk full"):
        save_profile(model, 2, {"exit": {"policy": "none"}, "fate": {"fate": "copy"}})
    assert (model / "tokexit.json").read_bytes() == before
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in models["tagger"].iterdir())


def test_classifier_speed_profile(models, tmp_path):
    model = copy(models["classifier"], tmp_path)
    files = models["sentiment"]
    m = calibrate(model, files["test"], files["validation"], tmp_path / "cal", "exit=entropy",
                  "exit.target_speedup=1.3", "save_profile=true")
    profile = read_profiles(model)["1.3"]
    assert profile["exit"] == {"policy": "entropy", "threshold": m["calibration"]["threshold"], "normalised": True,
                               "thresholds": None}
    classifier = Classifier.load(model, device="cpu")
    assert classifier.profiles == {"1.3": profile}
    texts = ["the film was good", "a bad plot", "quite good music and a very bad ending"]
    assert classifier.classify(texts, speed=1.3) == classifier.classify(texts, exit=EntropyExit(
        m["calibration"]["threshold"]))
    with pytest.raises(ValueError, match="stored: speed=1.3"):
        classifier.classify(texts, speed=2)
