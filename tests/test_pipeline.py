"""The real pipeline end to end: files -> datasets -> model -> Lightning -> metrics -> model dir -> evaluate/API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_predictions, synthetic_sentences, write_conll
from hydra import compose, initialize_config_dir

from tokexit import CONFIG_DIR
from tokexit.api import Tagger
from tokexit.data.conll import DataFormatError
from tokexit.evaluate import evaluate
from tokexit.train import train

FAST = ["model=tiny", "model.backbone_lr=2e-3", "model.head_lr=5e-3", "data.batch_size=8",
        "trainer.max_epochs=4", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def data_overrides(files: dict[str, Path]) -> list[str]:
    return [f"data.{split}_file={path}" for split, path in files.items()]


def run_evaluate(model_dir: Path, test_file: Path, out: Path, *extra: str) -> dict:
    return evaluate(config("evaluate", [f"model_dir={model_dir}", f"data.test_file={test_file}",
                                        f"output_dir={out}", "batch_size=5", *extra]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny model trained once on the synthetic NER files; shared by the tests below."""
    root = tmp_path_factory.mktemp("trained")
    files = {
        "train": write_conll(root / "train.txt", synthetic_sentences(200, seed=1)),
        "validation": write_conll(root / "dev.txt", synthetic_sentences(41, seed=2)),
        "test": write_conll(root / "test.txt", synthetic_sentences(37, seed=3), sep=" "),
    }
    result = train(config("train", [*FAST, *data_overrides(files), f"output_dir={root / 'run'}"]))
    return {"root": root, "files": files, "result": result, "model": root / "run" / "model"}


def test_training_writes_model_metrics_and_learns(trained):
    result, run = trained["result"], trained["root"] / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [layer["layer"] for layer in metrics["layers"]] == [1, 2, 3]
    assert metrics["full_depth"] == {k: v for k, v in metrics["layers"][-1].items() if k != "layer"}
    assert metrics["layers"] == result["layers"]
    assert metrics["counts"]["test_sentences"] == 37
    assert metrics["full_depth"]["f1"] > 50, metrics["layers"]  # a tiny random model learns the toy task
    assert len(metrics["train_epoch_seconds"]) == 4
    assert {"config.json", "model.safetensors", "exits.safetensors", "tokexit.json", "tokenizer.json"} <= {
        p.name for p in (run / "model").iterdir()}
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert list((run / "logs").glob("*/metrics.csv"))


def test_evaluate_matches_lightning_test_and_keeps_every_word(trained, tmp_path):
    metrics = run_evaluate(trained["model"], trained["files"]["test"], tmp_path / "eval")
    assert metrics["layers"] == trained["result"]["layers"]  # plain loop == Lightning test loop
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["full_depth"] == metrics["full_depth"] and written["words_per_second"] > 0
    gold = synthetic_sentences(37, seed=3)
    predicted = read_predictions(tmp_path / "eval" / "predictions.conll")
    assert [[row[:2] for row in s] for s in predicted] == [[[w, t] for w, t in s] for s in gold]
    assert all(len(row) == 3 for s in predicted for row in s)


def test_python_api_tags_raw_and_pretokenised_text(trained, tmp_path):
    tagger = Tagger.load(trained["model"])
    words = [w for w, _ in synthetic_sentences(37, seed=3)[0]]
    run_evaluate(trained["model"], trained["files"]["test"], tmp_path / "eval")
    expected = [row[2] for row in read_predictions(tmp_path / "eval" / "predictions.conll")[0]]
    assert [t.tag for t in tagger.tag([words])[0]] == expected
    raw = tagger.tag(["alice went to paris.", ""])
    assert [t.word for t in raw[0]] == ["alice", "went", "to", "paris", "."] and raw[1] == []
    assert raw[0][0].tag == "B-PER" and raw[0][3].tag == "B-LOC"
    assert {t.exit_layer for t in raw[0]} == {3}


def test_long_sentences_are_windowed_not_truncated(trained, tmp_path):
    long = [w for s in synthetic_sentences(40, seed=9) for w in s]  # one sentence of ~300 words
    test = write_conll(tmp_path / "long.txt", [long, long[:5]])
    metrics = run_evaluate(trained["model"], test, tmp_path / "eval")
    predicted = read_predictions(tmp_path / "eval" / "predictions.conll")
    assert [len(s) for s in predicted] == [len(long), 5]
    assert metrics["counts"]["words"] == len(long) + 5
    tagger = Tagger.load(trained["model"])
    tagger.max_length = 24  # force many windows: the same tags as with room to spare, almost everywhere
    narrow = [t.tag for t in tagger.tag([[w for w, _ in long]])[0]]
    assert len(narrow) == len(long)
    assert sum(a == b[2] for a, b in zip(narrow, predicted[0], strict=True)) > 0.9 * len(long)


def test_iob1_files_are_scored_and_written_in_iob1(trained, tmp_path):
    iob1 = [[("alice", "I-PER"), ("bob", "B-PER"), ("went", "O"), ("to", "O"), ("paris", "I-LOC")]]
    test = write_conll(tmp_path / "iob1.txt", iob1 * 3)
    run_evaluate(trained["model"], test, tmp_path / "eval")
    predicted = read_predictions(tmp_path / "eval" / "predictions.conll")
    assert [row[1] for row in predicted[0]] == ["I-PER", "B-PER", "O", "O", "I-LOC"]
    assert all(not row[2].startswith("B-") or row[2] == "B-PER" for s in predicted for row in s)


def test_unseen_test_label_is_reported(trained, tmp_path, caplog):
    test = write_conll(tmp_path / "unseen.txt", [[("alice", "B-PER"), ("acme", "B-ORG")]])
    metrics = run_evaluate(trained["model"], test, tmp_path / "eval")
    assert metrics["unseen_labels"] == {"B-ORG": {"count": 1, "first_line": 2}}
    assert "unseen.txt:2: label 'B-ORG' never seen in training" in caplog.text


def test_malformed_test_file_names_file_and_line(trained, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("alice\tB-PER\nwent\tO\textra\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: expected 2 columns"):
        run_evaluate(trained["model"], bad, tmp_path / "eval")
    bad.write_bytes(b"alice\tB-PER\n\xff\xfe\tO\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2"):
        run_evaluate(trained["model"], bad, tmp_path / "eval")


def test_empty_test_file_does_not_crash(trained, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    metrics = run_evaluate(trained["model"], empty, tmp_path / "eval")
    assert metrics["counts"] == {"sentences": 0, "words": 0} and metrics["full_depth"] is None
    assert (tmp_path / "eval" / "predictions.conll").read_text() == ""


def test_empty_training_file_is_a_clear_error(ner_files, tmp_path):
    empty = tmp_path / "empty_train.txt"
    empty.write_text("", encoding="utf-8")
    files = {**ner_files, "train": empty}
    with pytest.raises(ValueError, match="empty_train.txt: no sentences to train on"):
        train(config("train", [*FAST, *data_overrides(files), f"output_dir={tmp_path / 'run'}"]))


def test_real_minilm_weights_learn_the_toy_task(ner_files, tmp_path):
    overrides = ["model=minilm", "model.backbone_lr=1e-4", "trainer.max_epochs=1", "data.batch_size=16",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "save_model=false"]
    result = train(config("train", [*overrides, *data_overrides(ner_files), f"output_dir={tmp_path / 'run'}"]))
    assert len(result["layers"]) == 6
    assert result["full_depth"]["f1"] > 60, result["layers"]  # 13 steps from the pretrained weights


def test_evaluate_with_exit_policies(trained, tmp_path):
    model, test = trained["model"], trained["files"]["test"]
    zero = run_evaluate(model, test, tmp_path / "zero", "exit=token_window", "exit.threshold=0.0", "timing_repeats=1")
    assert zero["score"] == zero["full_depth"] and zero["flops_speedup"] <= 1.0
    assert zero["avg_exit_layer"] == 3 and zero["exit_histogram"] == {"1": 0, "2": 0, "3": zero["counts"]["words"]}
    rows = [r for s in read_predictions(tmp_path / "zero" / "predictions.conll") for r in s]
    assert all(len(r) == 4 and r[3] == "3" for r in rows)

    fast = run_evaluate(model, test, tmp_path / "fast", "exit=token_window", "exit.threshold=0.5", "exit.window=3",
                        "timing_repeats=1")
    assert fast["flops_speedup"] > 1.0 and fast["avg_exit_layer"] < 3 and fast["wall_speedup"] > 0
    assert sum(fast["exit_histogram"].values()) == fast["counts"]["words"]
    for args in (["exit=sentence", "exit.threshold=0.5"], ["exit=static", "exit.layer=1"]):
        m = run_evaluate(model, test, tmp_path / args[0][5:], *args, "timing_repeats=1")
        assert m["flops_speedup"] >= 1.0 and set(m["score"]) == {"f1", "precision", "recall"}
    static = json.loads((tmp_path / "static" / "metrics.json").read_text())
    assert static["exit_histogram"]["1"] == static["counts"]["words"]
    assert static["score"] == {k: v for k, v in static["layers"][0].items() if k != "layer"}


def test_calibration_reaches_the_target_speedup(trained, tmp_path):
    m = run_evaluate(trained["model"], trained["files"]["test"], tmp_path / "cal", "exit=token_window",
                     "exit.target_speedup=1.5", f"data.validation_file={trained['files']['validation']}",
                     "timing_repeats=1")
    cal = m["calibration"]
    assert 0 < cal["threshold"] <= 1 and cal["target_speedup"] == 1.5
    reached = [t for t in cal["trace"] if t["flops_speedup"] >= 1.5]
    assert reached and min(t["threshold"] for t in reached) >= cal["threshold"] - 1e-9
    assert m["exit"]["threshold"] == cal["threshold"]


def test_api_returns_exit_layers_with_a_policy(trained):
    from tokexit.exits import TokenWindowExit

    tagger = Tagger.load(trained["model"])
    words = [[w for w, _ in s] for s in synthetic_sentences(10, seed=3)]
    full = tagger.tag(words)
    none = tagger.tag(words, exit=TokenWindowExit(0.0))
    assert [[t.tag for t in s] for s in none] == [[t.tag for t in s] for s in full]
    early = tagger.tag(words, exit=TokenWindowExit(1.01, window=1))
    assert {t.exit_layer for s in early for t in s} == {1}


def self_sampling_module(trained, **settings):
    from tokexit.lightning import SelfSamplingTaggerModule
    from tokexit.model_io import load_tagger

    _, _, labels, _ = load_tagger(trained["model"])
    return SelfSamplingTaggerModule(labels, backbone=str(trained["model"]), **settings), labels


def test_self_sampling_replay_equals_inference(trained):
    """The training-time replay of one fixed setting gives exactly the exit layers of early-exit inference."""
    import torch

    from tokexit.data.tagging import build_dataset, collate, load_corpus
    from tokexit.engine import early_exit_forward
    from tokexit.exits import TokenWindowExit
    from tokexit.model_io import load_tagger

    module, labels = self_sampling_module(trained, windows=(3, 3), thresholds=(0.3, 0.3),
                                          aggressive_fraction=0.0, full_fraction=0.0)
    encoder, tokenizer, _, _ = load_tagger(trained["model"])
    data = build_dataset(load_corpus(str(trained["files"]["test"])), tokenizer, labels, 64)
    batch = collate([data[i] for i in range(12)], pad_id=tokenizer.pad_token_id)
    _, word_masks = module.sample_masks(batch)  # (L, B, W)
    out = early_exit_forward(encoder, TokenWindowExit(0.3, window=3), batch["input_ids"], batch["attention_mask"],
                             batch["word_positions"], batch["token_word"])
    words = batch["word_positions"] >= 0
    assert torch.equal(word_masks.sum(0)[words], out.exit_layers[words])  # active in layers 1..exit layer
    assert (out.exit_layers[words] < encoder.num_layers).any(), "the setting should stop some words early"

    full, _ = self_sampling_module(trained, full_fraction=1.0, aggressive_fraction=0.0)
    tokens, word_masks = full.sample_masks(batch)
    assert word_masks[:, words].all() and tokens[:, batch["attention_mask"].bool()].all()


def test_self_sampling_stage_trains_from_a_stage_one_model(trained, tmp_path):
    overrides = [*FAST, "model=self_sampling", f"model.backbone={trained['model']}", "trainer.max_epochs=1",
                 *data_overrides(trained["files"]), f"output_dir={tmp_path / 'stage2'}"]
    result = train(config("train", overrides))
    assert result["full_depth"]["f1"] > 50
    metrics = run_evaluate(tmp_path / "stage2" / "model", trained["files"]["test"], tmp_path / "eval",
                           "exit=token_window", "exit.threshold=0.2")
    assert metrics["flops_speedup"] > 1.0


def test_dynabert_tagger_narrower_and_exporting(trained, tmp_path):
    """A tagger distilled into widths x depths; its exported sub-network tags exactly like the sub-network run
    inside the model, and still exits early with a token-level policy."""
    from tokexit.export.__main__ import export

    overrides = [*FAST, "model=dynabert", f"model.teacher={trained['model']}", "model.stage=2",
                 "model.widths=[1.0,0.5]", "model.depths=[1.0,0.5]", "trainer.max_epochs=1",
                 *data_overrides(trained["files"]), f"output_dir={tmp_path / 'dyna'}"]
    result = train(config("train", overrides))
    assert [(s["width"], s["depth"]) for s in result["subnetworks"]] == [(1.0, 1.0), (1.0, 0.5), (0.5, 1.0),
                                                                          (0.5, 0.5)]
    assert result["full_depth"]["f1"] > 50
    export(str(tmp_path / "dyna" / "model"), 0.5, 0.5, str(tmp_path / "small"))
    test = trained["files"]["test"]
    inside = run_evaluate(tmp_path / "dyna" / "model", test, tmp_path / "inside", "subnetwork.width=0.5",
                          "subnetwork.depth=0.5", "exit=token_window", "exit.threshold=0.3")
    alone = run_evaluate(tmp_path / "small", test, tmp_path / "alone", "exit=token_window", "exit.threshold=0.3")
    written = [(tmp_path / d / "predictions.conll").read_text() for d in ("inside", "alone")]
    assert written[0] == written[1]
    assert inside["score"] == alone["score"] and inside["flops_speedup"] == alone["flops_speedup"]
