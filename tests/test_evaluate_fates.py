"""Token fates at evaluation (``fate=copy|drop|reduce``), in the Python API and in the sweeps; the one calibration
routine (``exit.target_speedup`` moves the threshold, ``fate.target_speedup`` the keep ratio); the one timing
protocol (the full model's last-exit path, timed interleaved with the setting, best of N); the task interface."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO, synthetic_sentences, write_conll
from test_classification_pipeline import FAST as CLASSIFIER_FAST
from test_classification_pipeline import write_sentiment
from test_pipeline import FAST, config, data_overrides, read_predictions

from tokexit.backbones import ModelFormatError
from tokexit.config import UsageError
from tokexit.data.classification import ClassificationTask
from tokexit.data.tagging import LabelSet
from tokexit.engine.selector import TokenSelector, default_steps
from tokexit.evaluate import evaluate
from tokexit.exits import NoExit, PatienceExit, TokenWindowExit
from tokexit.fates import Drop, HaltAndCopy, TokenReduction
from tokexit.inference.calibration import Knob, calibrate
from tokexit.inference.runs import Run, TokenTally
from tokexit.inference.setting import Setting
from tokexit.inference.timing import time_against_full
from tokexit.model_io import load_model, read_meta, save_model
from tokexit.tasks import Classification, Tagging, task_for, task_from_meta
from tokexit.train import train

sys.path.insert(0, str(REPO / "scripts"))


def with_selector(model_dir: Path, out: Path) -> Path:
    """The model of ``model_dir`` with a random token selector (what the plumbing needs, not a trained one)."""
    model, tokenizer, task, meta = load_model(model_dir)
    model.selector = TokenSelector(model.adapter.hidden_size, default_steps(len(model.plan)),
                                   [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    return save_model(model, tokenizer, task.labels, out, meta["max_length"])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A tiny tagger and a tiny classifier, each also with a selector (for fate=reduce)."""
    root = tmp_path_factory.mktemp("fates")
    tagging = {"train": write_conll(root / "train.txt", synthetic_sentences(200, seed=1)),
               "validation": write_conll(root / "dev.txt", synthetic_sentences(41, seed=2)),
               "test": write_conll(root / "test.txt", synthetic_sentences(37, seed=3))}
    train(config("train", [*FAST, *data_overrides(tagging), f"output_dir={root / 'tagger'}"]))
    sentiment = {"train": write_sentiment(root / "train.tsv", 80, 1),
                 "validation": write_sentiment(root / "dev.tsv", 30, 2),
                 "test": write_sentiment(root / "test.tsv", 20, 3)}
    train(config("train", [*CLASSIFIER_FAST, "data=sst2", "trainer.max_epochs=1", "model.pooling=mean",
                           f"output_dir={root / 'classifier'}", *[f"data.{k}_file={v}" for k, v in sentiment.items()]]))
    return {"tagging": tagging, "sentiment": sentiment, "tagger": root / "tagger" / "model",
            "classifier": root / "classifier" / "model",
            "tagger_reduce": with_selector(root / "tagger" / "model", root / "tagger_reduce"),
            "classifier_reduce": with_selector(root / "classifier" / "model", root / "classifier_reduce")}


def run_evaluate(model: Path, test: Path, out: Path, *extra: str) -> dict:
    return evaluate(config("evaluate", [f"model_dir={model}", f"data.test_file={test}", f"output_dir={out}",
                                        "batch_size=8", "timing_repeats=1", *extra]))


# ----------------------------------------------------------------------------- fates at evaluation


def test_the_full_model_is_its_own_baseline(models, tmp_path):
    m = run_evaluate(models["tagger"], models["tagging"]["test"], tmp_path / "full", "timing_repeats=2")
    assert m["exit"] == {"policy": "none", "uncertainty": "entropy"} and m["fate"] == {"fate": "copy"}
    assert m["score"] == m["full_depth"] and m["flops_speedup"] == 1.0 and m["wall_speedup"] == 1.0
    assert m["tokens_per_layer"] == {"computed": [1.0] * 3, "keys": [1.0] * 3}
    assert m["forward_seconds"] == m["full_forward_seconds"] > 0 and m["words_per_second"] > 0
    assert all(len(row) == 3 for s in read_predictions(tmp_path / "full" / "predictions.conll") for row in s)


def test_drop_fate_at_evaluate(models, tmp_path):
    test = models["tagging"]["test"]
    copy = run_evaluate(models["tagger"], test, tmp_path / "copy", "exit=token_window", "exit.threshold=0.3")
    drop = run_evaluate(models["tagger"], test, tmp_path / "drop", "exit=token_window", "exit.threshold=0.3",
                        "fate=drop")
    assert drop["fate"] == {"fate": "drop"} and copy["fate"] == {"fate": "copy"}
    tokens = drop["tokens_per_layer"]
    assert tokens["computed"][0] == 1.0 and tokens["computed"][-1] < 1.0  # some words stopped early
    assert tokens["keys"] == tokens["computed"]  # a stopped token left the sequence
    kept = copy["tokens_per_layer"]  # halt-and-copy: a stopped token stays a key while its sentence goes on
    assert kept["computed"] == tokens["computed"] and kept["keys"][-1] > kept["computed"][-1]
    assert drop["flops_speedup"] > copy["flops_speedup"] > 1.0  # the same exits, smaller attention
    assert drop["wall_speedup"] > 0 and sum(drop["exit_histogram"].values()) == drop["counts"]["words"]
    assert set(drop["score"]) == {"f1", "precision", "recall"}
    rows = [r for s in read_predictions(tmp_path / "drop" / "predictions.conll") for r in s]
    assert all(len(r) == 4 for r in rows)


def test_reduce_fate_runs_without_an_exit_policy(models, tmp_path):
    test = models["tagging"]["test"]
    m = run_evaluate(models["tagger_reduce"], test, tmp_path / "reduce", "fate=reduce")
    assert m["exit"]["policy"] == "none" and m["fate"] == {"fate": "reduce", "keep_ratio": None, "threshold": 0.5,
                                                           "label_removed": "last_head"}
    assert m["flops_speedup"] > 1.0 and m["tokens_per_layer"]["computed"][1] < 1.0
    assert m["tokens_per_layer"]["keys"] == m["tokens_per_layer"]["computed"]
    everything = run_evaluate(models["tagger_reduce"], test, tmp_path / "keep", "fate=reduce", "fate.keep_ratio=1.0")
    assert everything["score"] == everything["full_depth"]  # nothing removed: the full model
    assert everything["flops_speedup"] < 1.0  # ... plus what the selector costs
    with pytest.raises(ValueError, match="fate=reduce needs a model with a token selector"):
        run_evaluate(models["tagger"], test, tmp_path / "none", "fate=reduce")


def test_keep_ratio_is_calibrated_like_the_threshold(models, tmp_path, caplog):
    files = models["tagging"]
    args = ("fate=reduce", f"data.validation_file={files['validation']}")
    m = run_evaluate(models["tagger_reduce"], files["test"], tmp_path / "cal", *args, "fate.target_speedup=1.2")
    cal = m["calibration"]
    assert cal["knob"] == "fate.keep_ratio" and cal["target_speedup"] == 1.2 and cal["reached"] is True
    assert cal["trace"][0]["keep_ratio"] == 0.01 and cal["flops_speedup"] >= 1.2
    reached = [t for t in cal["trace"] if t["flops_speedup"] >= 1.2]
    assert max(t["keep_ratio"] for t in reached) <= cal["keep_ratio"] + 1e-9  # the slowest value that reaches it
    assert m["fate"]["keep_ratio"] == cal["keep_ratio"] and m["flops_speedup"] > 1.0

    far = run_evaluate(models["tagger_reduce"], files["test"], tmp_path / "far", *args, "fate.target_speedup=50")
    assert far["calibration"]["reached"] is False
    assert far["calibration"]["flops_speedup"] == pytest.approx(far["calibration"]["reachable_speedup"], rel=1e-6)
    assert "fate.target_speedup=50 is beyond reach: fate=reduce reaches at most" in caplog.text


def test_fate_settings_that_cannot_work_are_usage_errors(models, tmp_path):
    files = models["tagging"]
    base = (models["tagger_reduce"], files["test"], tmp_path / "x", f"data.validation_file={files['validation']}")
    with pytest.raises(UsageError, match=r"fate\.target_speedup needs a fate with a keep_ratio, not 'drop'"):
        run_evaluate(*base, "fate=drop", "+fate.target_speedup=2")
    with pytest.raises(UsageError, match="calibrate one at a time"):
        run_evaluate(*base, "exit=token_window", "exit.target_speedup=2", "fate=reduce", "fate.target_speedup=2")
    with pytest.raises(UsageError, match=r"fate\.keep_ratio=0\.5 is given: give one or the other"):
        run_evaluate(*base, "fate=reduce", "fate.target_speedup=2", "fate.keep_ratio=0.5")
    with pytest.raises(UsageError, match=r"fate\.target_speedup=2 calibrates the keep_ratio on data\.validation_file"):
        run_evaluate(models["tagger_reduce"], files["test"], tmp_path / "x", "fate=reduce", "fate.target_speedup=2")
    assert not (tmp_path / "x").exists()


def test_classifier_with_a_fate(models, tmp_path):
    test = models["sentiment"]["test"]
    m = run_evaluate(models["classifier_reduce"], test, tmp_path / "reduce", "fate=reduce", "exit=patience",
                     "exit.patience=1")
    assert m["fate"]["fate"] == "reduce" and m["exit"]["policy"] == "patience" and m["flops_speedup"] > 1.0
    assert len((tmp_path / "reduce" / "predictions.tsv").read_text().splitlines()) == 20
    assert m["examples_per_second"] > 0 and m["tokens_per_layer"]["computed"][0] == 1.0
    drop = run_evaluate(models["classifier"], test, tmp_path / "drop", "fate=drop", "exit=patience",
                        "exit.patience=1")
    copy = run_evaluate(models["classifier"], test, tmp_path / "copy", "exit=patience", "exit.patience=1")
    assert drop["score"] == copy["score"]  # an example's tokens stop together: nothing is left to see them


# ----------------------------------------------------------------------------- the API


def test_api_takes_a_fate(models):
    from tokexit.api import Classifier, Tagger

    words = [[w for w, _ in s] for s in synthetic_sentences(10, seed=3)]
    tagger = Tagger.load(models["tagger_reduce"])
    full = [[t.tag for t in s] for s in tagger.tag(words)]
    assert [[t.tag for t in s] for s in tagger.tag(words, fate=TokenReduction(keep_ratio=1.0))] == full
    assert [[t.tag for t in s] for s in tagger.tag(words, fate=Drop())] == full  # no exit: nothing stops early
    reduced = tagger.tag(words, fate=TokenReduction(keep_ratio=0.3))
    assert [len(s) for s in reduced] == [len(w) for w in words]
    assert min(t.exit_layer for s in reduced for t in s) < 3  # removed words are labelled where they left
    early = tagger.tag(words, exit=TokenWindowExit(0.3, window=3), fate=Drop())
    assert [len(s) for s in early] == [len(w) for w in words]
    with pytest.raises(TypeError, match=r"fate must be a token fate from tokexit\.fates"):
        tagger.tag(words, fate="drop")

    classifier = Classifier.load(models["classifier_reduce"], device="cpu")
    texts = ["the film was good", "a bad plot", "very good music and a good ending"]
    full = [c.label for c in classifier.classify(texts)]
    assert [c.label for c in classifier.classify(texts, fate=TokenReduction(keep_ratio=1.0))] == full
    assert len(classifier.classify(texts, exit=PatienceExit(1), fate=TokenReduction())) == 3


# ----------------------------------------------------------------------------- the sweeps


def test_sweeps_take_and_record_a_fate(models, tmp_path, monkeypatch):
    import sweep_classification
    import sweep_exits

    out = tmp_path / "tagger"
    monkeypatch.setattr(sys, "argv", ["sweep_exits.py", "--model-dir", str(models["tagger_reduce"]), "--test-file",
                                      str(models["tagging"]["test"]), "--out", str(out), "--windows", "3",
                                      "--thresholds", "0.3", "--fate", "reduce", "--timing-repeats", "1",
                                      "--keep-ratios", "0.8,0.3"])
    sweep_exits.main()
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["fate"]["fate"] == "reduce"
    assert {p["series"] for p in report["points"]} == {"full", "none", "reduce keep_ratio", "token_window w=3",
                                                       "sentence", "static"}
    kept = [p for p in report["points"] if p["series"] == "reduce keep_ratio"]
    assert [p["policy"]["keep_ratio"] for p in kept] == [0.8, 0.3]
    assert kept[0]["flops_speedup"] < kept[1]["flops_speedup"]  # keeping fewer tokens is cheaper
    assert all("tokens_per_layer" in p and p["full_forward_seconds"] > 0 for p in report["points"][1:])
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".png").is_file()

    out = tmp_path / "classifier"
    monkeypatch.setattr(sys, "argv", ["sweep_classification.py", "--model-dir", str(models["classifier"]),
                                      "--test-file", str(models["sentiment"]["test"]), "--out", str(out), "--fate",
                                      "drop", "--timing-repeats", "1"])
    sweep_classification.main()
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["fate"] == {"fate": "drop"} and len(report["layer_scores"]) == 3
    assert {p["series"] for p in report["points"]} >= {"full", "none", "patience", "static"}

    out = tmp_path / "classifier_reduce"
    monkeypatch.setattr(sys, "argv", ["sweep_classification.py", "--model-dir", str(models["classifier_reduce"]),
                                      "--test-file", str(models["sentiment"]["test"]), "--out", str(out), "--fate",
                                      "reduce", "--keep-ratios", "0.9,0.4", "--timing-repeats", "1"])
    sweep_classification.main()
    report = json.loads(out.with_suffix(".json").read_text())
    kept = [p for p in report["points"] if p["series"] == "reduce keep_ratio"]
    assert [p["policy"]["keep_ratio"] for p in kept] == [0.9, 0.4]
    assert kept[0]["flops_speedup"] < kept[1]["flops_speedup"]
    assert {p["policy"]["fate"] for p in report["points"][1:]} == {"reduce"}


# ----------------------------------------------------------------------------- timing and calibration


def fake_run(seconds: float) -> Run:
    return Run(None, None, None, 1.0, 1.0, seconds, TokenTally.empty(1))


def test_a_setting_is_timed_against_the_last_exit_path_interleaved():
    calls, times = [], iter([5.0, 3.0, 4.0, 1.0, 6.0, 2.0])  # full, setting, full, setting, ...

    def run(setting: Setting) -> Run:
        calls.append("full" if setting.is_full_model else "setting")
        return fake_run(next(times))

    setting = Setting(TokenWindowExit(0.1), Drop())
    best, full = time_against_full(run, setting, repeats=3)
    assert calls == ["full", "setting"] * 3 and best.seconds == 1.0 and full == 4.0
    calls.clear()
    times = iter([3.0, 2.0])
    best, full = time_against_full(run, Setting(NoExit(), HaltAndCopy()), repeats=2)
    assert calls == ["full", "full"] and best.seconds == full == 2.0  # the full model is its own baseline


@pytest.mark.parametrize(("name", "slowest", "fastest"), [("exit.threshold", 0.0, 1.0), ("fate.keep_ratio", 1.0, 0.01)])
def test_calibration_bisects_a_knob_in_either_direction(name, slowest, fastest):
    def speedup(setting):  # 1x at the slowest value, 3x at the fastest, linear in between
        return 1.0 + 2.0 * (setting - slowest) / (fastest - slowest)

    knob = Knob(name, "option", slowest, fastest, lambda value: value)
    found = calibrate(knob, 2.0, speedup)
    key = name.split(".")[1]
    assert found["reached"] and found["reachable_speedup"] == 3.0 and found["trace"][0][key] == fastest
    assert found["flops_speedup"] >= 2.0 and found[key] == pytest.approx((slowest + fastest) / 2, abs=1e-3)
    beyond = calibrate(knob, 5.0, speedup)
    assert not beyond["reached"] and beyond[key] == pytest.approx(fastest, abs=1e-3)


# ----------------------------------------------------------------------------- the task interface


def test_every_kind_of_model_has_one_task(models):
    assert read_meta(models["tagger"])["kind"] == "token_tagger"  # saved directories keep their kind
    assert read_meta(models["classifier"])["kind"] == "sequence_classifier"
    for key, kind in (("tagger", Tagging), ("classifier", Classification)):
        _, _, task, meta = load_model(models[key])
        assert type(task) is kind and task.kind == meta["kind"] and type(task_from_meta(meta)) is kind
    assert type(task_for(LabelSet(["O", "B-X"], "ner"))) is Tagging
    assert type(task_for(ClassificationTask(["0", "1"]))) is Classification
    assert type(task_from_meta({"labels": ["O"], "task": "tagging"})) is Tagging  # older taggers have no kind
    with pytest.raises(ModelFormatError, match="unknown kind 'parser'"):
        task_from_meta({"kind": "parser"})
    with pytest.raises(ValueError, match="a sequence_classifier model, not a token_tagger"):
        load_model(models["classifier"], "token_tagger")
