"""scripts/benchmark_tagging.py on a tiny random tagger and a few synthetic sentences: the JSON's structure, every
input word tagged once by every row, the plain-transformers, pipeline and ONNX Runtime rows tagging as tokexit's full
model does (same weights, first-subword labelling), and the helpers that align subwords and pipeline entries."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, synthetic_sentences, write_conll
from transformers import BertConfig, BertModel

from tokexit.backbones import load_tokenizer
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder
from tokexit.model_io import save_model

sys.path.insert(0, str(REPO / "scripts"))
from benchmark_tagging import PipelineTagger, first_subword_positions  # noqa: E402

LABELS = LabelSet(["O", "B-PER", "I-PER", "B-LOC"], "ner")


def test_first_subword_positions():
    assert first_subword_positions([None, 0, 0, 1, 2, 2, 2, None]) == [1, 3, 4]
    assert first_subword_positions([None, None]) == []


def test_pipeline_entries_to_words():
    words = ["Jean-Luc", "went", "to", "Paris"]  # joined: "Jean-Luc went to Paris", starts 0, 9, 14, 17
    entries = [{"start": 0, "entity": "B-PER"}, {"start": 4, "entity": "I-PER"}, {"start": 5, "entity": "B-LOC"},
               {"start": 9, "entity": "O"}, {"start": 17, "entity": "B-LOC"}, {"start": 19, "entity": "I-LOC"}]
    # "to" has no entry (e.g. ignored) -> O; a word's later subwords never override its first
    assert PipelineTagger.words_tags(words, entries) == ["B-PER", "O", "O", "B-LOC"]


HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, list[list[tuple[str, str]]]]:
    root = tmp_path_factory.mktemp("bench_tagging")
    tokenizer = load_tokenizer("minilm-l6")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=3,
                        vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
    model_dir = save_model(MultiExitEncoder(BertModel(config), len(LABELS.labels)), tokenizer, LABELS,
                           root / "model", 128)
    test = synthetic_sentences(23, seed=3)
    for k in range(0, len(test), 3):  # words of several subwords: the first one must carry the tag
        test[k] = [("Jean-Luc", "B-PER"), ("O'Neill", "I-PER"), ("visited", "O"), ("São", "B-LOC"),
                   ("Paulo", "I-LOC"), ("Xzqvwtrk", "O")] + test[k]
    write_conll(root / "test.txt", test)
    write_conll(root / "dev.txt", synthetic_sentences(15, seed=4))
    write_conll(root / "train.txt", synthetic_sentences(11, seed=5))
    out = root / "report"
    command = [sys.executable, str(REPO / "scripts" / "benchmark_tagging.py"), "--model-dir", str(model_dir),
               "--test-file", str(root / "test.txt"), "--calibration-file", str(root / "dev.txt"),
               "--calibration-iterations", "3", "--large-files", str(root / "train.txt"),
               "--large-sentences", "30", "--batch-sizes", "4,1", "--large-batch-sizes", "8", "--repeats", "2",
               "--threads", "1", "--speeds", "2", "--rows", "hf-sorted,hf-pipeline,ort-fp32,tokexit-fp32,"
               "tokexit-2x-fp32,dynabert", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.with_suffix(".md").is_file()
    return json.loads(out.with_suffix(".json").read_text()), test


def test_report_structure_and_words(tiny_run):
    report, test = tiny_run
    for key in ("command", "machine", "settings", "cells", "skipped", "calibrations", "large_corpus", "load"):
        assert key in report
    assert report["machine"]["load_average_end"] is not None
    if not HAS_ORT:  # the onnx extra (scripts/setup.sh installs it) is missing: ORT skipped with the reason
        assert "ort-fp32" in report["skipped"]
        pytest.skip("onnxruntime/onnx not installed (pip install tokexit[onnx]): the ONNX Runtime rows were skipped")
    assert report["machine"]["onnxruntime"]
    assert "dynabert-w0.5-2x" in report["skipped"]  # no --dynabert-dir: skipped with the reason recorded
    test_words = sum(len(s) for s in test)
    cells = {(c["corpus"], c["batch_size"]): c for c in report["cells"]}
    assert set(cells) == {("test.txt", 4), ("test.txt", 1), ("large (30 train sentences)", 8)}
    assert report["large_corpus"]["sentences"] == 30 and report["large_corpus"]["cycles"] > 1
    rows = {"hf-sorted", "hf-pipeline", "ort-fp32", "tokexit-fp32", "tokexit-2x-fp32"}
    for (corpus, _), cell in cells.items():
        words = test_words if corpus == "test.txt" else report["large_corpus"]["words"]
        assert cell["words"] == words and cell["scored"] == (corpus == "test.txt")
        assert {e["row"] for e in cell["rows"]} == rows
        for e in cell["rows"]:
            assert e["status"] == "ok", e
            assert e["words"] == words  # every input word got exactly one tag
            assert len(e["times_s"]) == 2 and e["best_s"] == min(e["times_s"]) > 0
            assert e["words_per_s"] == pytest.approx(words / e["best_s"], rel=1e-3)
            assert e["peak_rss_mib"] > 50
            assert ("f1" in e) == cell["scored"]
        by_row = {e["row"]: e for e in cell["rows"]}
        assert by_row["ort-fp32"]["x_ort_fp32"] == 1.0
        assert by_row["tokexit-fp32"]["avg_exit_layer"] == 3.0 and by_row["hf-sorted"]["avg_exit_layer"] is None
        assert by_row["tokexit-2x-fp32"]["avg_exit_layer"] < 3.0
        if cell["scored"]:
            assert by_row["tokexit-fp32"]["delta_score"] == 0.0
            v = cell["verdict"]  # the fastest tokexit row within 0.3 F1 of tokexit fp32, against ORT fp32
            assert v["row"].startswith("tokexit") and by_row[v["row"]]["delta_score"] >= -0.3
            assert v["x_ort_fp32"] == pytest.approx(by_row[v["row"]]["x_ort_fp32"], abs=2e-3)
            assert v["verdict"] == ("pass" if v["x_ort_fp32"] > 1 else "FAIL")  # batch < 32: ahead of ORT fp32
        else:
            assert cell["verdict"] is None
        # same weights, first-subword labelling: the plain rows tag as tokexit's full model does
        for name in ("hf-sorted", "hf-pipeline", "ort-fp32"):
            assert by_row[name]["agreement"] >= 0.99, (name, by_row[name]["agreement"])
    calibration = report["calibrations"]["2x"]
    assert calibration["flops_speedup"] >= 2 or not calibration["reached"]
