"""``tokexit.tag``: one streaming pass over a corpus (CoNLL, text, JSONL in; CoNLL or JSONL out, in input order),
the same one-pass path as ``Tagger.tag``, FILE:LINE errors, resume after a crash (byte-identical output) and its
refusal when the model, input or settings changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import REPO, read_predictions, synthetic_sentences, write_conll
from test_pipeline import FAST, config, data_overrides, run_evaluate

from tokexit.api import Tagger, split_words
from tokexit.config import UsageError
from tokexit.data.conll import DataFormatError
from tokexit.exits import TokenWindowExit
from tokexit.inference import tagging
from tokexit.inference.setting import Setting
from tokexit.io.formats import detect_format, read_records
from tokexit.io.progress import ResumeError
from tokexit.io.streaming import tag_file
from tokexit.tag import tag
from tokexit.train import train

EXIT = ["exit=token_window", "exit.threshold=0.7"]


def tiny_tagger(root: Path) -> Path:
    """A tiny 3-layer tagger trained for two epochs on the synthetic NER files (a model, not a good one)."""
    files = {"train": write_conll(root / "train.txt", synthetic_sentences(200, seed=1)),
             "validation": write_conll(root / "dev.txt", synthetic_sentences(41, seed=2)),
             "test": write_conll(root / "test.txt", synthetic_sentences(37, seed=3))}
    fast = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    train(config("train", [*fast, "trainer.max_epochs=2", *data_overrides(files), f"output_dir={root / 'run'}"]))
    return root / "run" / "model"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tag")
    return {"model": tiny_tagger(root), "dev": root / "dev.txt", "test": root / "test.txt"}


def run_tag(model_dir: Path, input: Path, output: Path, *extra: str) -> dict:
    return tag(config("tag", [f"model_dir={model_dir}", f"input={input}", f"output={output}", "batch_size=8",
                              *extra]))


def conll_with_extras(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    """CoNLL-2003-like: -DOCSTART- lines, four columns, a very long sentence (windows), blank lines doubled."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i, s in enumerate(sentences):
        lines += [f"{w} NN I-NP {t}" for w, t in s] + [""] + ([""] if i % 5 == 0 else [])
        if i == 3:
            lines += ["-DOCSTART- -X- -X- O", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_conll_output_is_evaluates_predictions_in_input_order(model, tmp_path):
    sentences = synthetic_sentences(30, seed=5) + [[("alice", "B-PER")] * 700]  # 700 subwords: windows
    data = conll_with_extras(tmp_path / "in.conll", sentences)
    summary = run_tag(model["model"], data, tmp_path / "out.conll", *EXIT, "exit_layer=true", "chunk_sentences=7")
    assert summary["format"] == "conll" and summary["sentences"] == 31 and summary["words"] == sum(map(len, sentences))
    text = (tmp_path / "out.conll").read_text(encoding="utf-8")
    blocks = text.split("\n\n")
    assert blocks[0] == "-DOCSTART- -X- -X- O" and blocks[5] == "-DOCSTART- -X- -X- O" and text.endswith("\n\n")
    tagged = [b for b in blocks if b and not b.startswith("-DOCSTART-")]
    run_evaluate(model["model"], data, tmp_path / "eval", *EXIT)  # the evaluation path: datasets, run_batches
    evaluate = read_predictions(tmp_path / "eval" / "predictions.conll")
    assert len(tagged) == len(evaluate) == 31
    for block, gold, reference in zip(tagged, sentences, evaluate, strict=True):
        rows = [line.split("\t") for line in block.split("\n")]
        assert [r[0] for r in rows] == [w for w, _ in gold]  # every word, in order, labels ignored
        assert [(r[1], r[2]) for r in rows] == [(r[2], r[3]) for r in reference]  # tag and exit layer
    assert {r.split("\t")[2] for b in tagged for r in b.split("\n")} != {"3"}  # the exit policy ran


def test_tagger_tag_is_one_pass_and_shares_the_path(model, monkeypatch):
    calls = []
    forward = tagging.early_exit_forward
    monkeypatch.setattr(tagging, "early_exit_forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    tagger = Tagger.load(model["model"], device="cpu")
    tagged = tagger.tag(["alice went to paris", "", "bob saw carol"], batch_size=2, exit=TokenWindowExit(0.3))
    assert len(calls) == 1  # two sentences, one batch, one forward: no warm-up, no baseline
    assert [len(s) for s in tagged] == [4, 0, 3]
    assert tagger.predict([["alice", "went", "to", "paris"], []], Setting(TokenWindowExit(0.3)), 2) == [
        ([t.tag for t in tagged[0]], [t.exit_layer for t in tagged[0]]), ([], [])]


def test_text_input_gives_conll_with_empty_sentences_kept(model, tmp_path):
    lines = ["alice went to paris .", "", "   ", "bob and carol saw oslo, today!"]
    data = tmp_path / "in.txt"
    data.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    assert run_tag(model["model"], data, tmp_path / "out.conll")["format"] == "text"
    expected = Tagger.load(model["model"], device="cpu").tag(lines)
    text = (tmp_path / "out.conll").read_text(encoding="utf-8")
    assert text == "".join("".join(f"{t.word}\t{t.tag}\n" for t in s) + "\n" for s in expected)
    assert "\n\n\n\nbob\t" in text  # the two blank input lines: an empty sentence (a blank line) each
    assert [t.word for t in expected[3]] == split_words(lines[3])


def test_jsonl_keeps_keys_and_adds_tags(model, tmp_path):
    rows = [{"id": 7, "tokens": ["alice", "went", "to", "paris"], "tags": ["stale"], "meta": {"é": [1]}},
            {"tokens": []}, None, {"tokens": ["New York", "bob"]}]
    data = tmp_path / "in.jsonl"
    data.write_text("".join((json.dumps(r) if r is not None else "") + "\n" for r in rows), encoding="utf-8")
    run_tag(model["model"], data, tmp_path / "out.jsonl", "exit_layer=true")
    out = (tmp_path / "out.jsonl").read_text(encoding="utf-8").split("\n")
    assert out[2] == "" and out[4] == "" and len(out) == 5
    first, empty, last = json.loads(out[0]), json.loads(out[1]), json.loads(out[3])
    assert list(first) == ["id", "tokens", "tags", "meta", "exit_layers"] and first["meta"] == {"é": [1]}
    assert len(first["tags"]) == 4 and "stale" not in first["tags"] and first["exit_layers"] == [3] * 4
    assert empty == {"tokens": [], "tags": [], "exit_layers": []}
    assert len(last["tags"]) == 2


@pytest.mark.parametrize(("name", "content", "where", "problem"), [
    ("bad.jsonl", '{"tokens": ["a"]}\n{"tokens": ["a",\n', 2, "not JSON"),
    ("bad.jsonl", '{"tokens": ["a"]}\n\n[1, 2]\n', 3, "expected a JSON object"),
    ("bad.jsonl", '{"words": ["a"]}\n', 1, "no 'tokens' key"),
    ("bad.jsonl", '{"tokens": "alice went"}\n', 1, "'tokens' is str"),
    ("bad.jsonl", '{"tokens": ["a", 3]}\n', 1, "token 1 is int"),
    ("bad.jsonl", '{"tokens": ["a", " "]}\n', 1, "token 1 is ' '"),
    ("bad.conll", "alice\tB-PER\n\n\tO\n", 3, "empty word"),
    ("bad.txt", "alice went\n\xff\n", 2, "invalid UTF-8"),
])
def test_malformed_input_names_file_and_line(model, tmp_path, name, content, where, problem):
    data = tmp_path / name
    data.write_bytes(content.encode("utf-8") if "\xff" not in content else content.encode("latin-1"))
    fmt = {"jsonl": "jsonl", "conll": "conll", "txt": "text"}[name.split(".")[1]]
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(data))}:{where}: .*{re.escape(problem)}"):
        run_tag(model["model"], data, tmp_path / "out", f"format={fmt}")


def test_format_detection(tmp_path):
    cases = {"a.conll": ("-DOCSTART- -X- O\n\nEU NNP B-ORG\n", "conll"),
             "b": ("EU\tB-ORG\nrejects\tO\n", "conll"),
             "c": ("EU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n", "conll"),
             "d": ("EU rejects German call\nPeter Blackburn\n\nBRUSSELS 1996-08-22\n", "text"),
             "e": ("one line only\n", "text"),
             "f": ('  {"tokens": []}\n', "jsonl"),
             "g.jsonl": ("\n", "jsonl"),
             # the first block alone would look like columns: every line counts
             "h": ("Good morning\nThank you\n\nSee you later alligator\n", "text"),
             "i": ("Title:\tEU rejects German beef\nSecond line here\n", "text"),  # a TAB, but not on every line
             "j.conll": ("Hello O\n\nWorld O\n", "conll"),  # one-word sentences: the tag column decides
             "k": ("EU B-ORG\nrejects O\n", "conll"),  # no blank line: the tag column decides
             "l": ("The DT\ncat NN\n\nA DT\ndog NN\n", "conll"),  # a repeated label column in blocks
             "m": ("EU\nrejects\n\nPeter\n", "conll"),  # one word per line in blocks
             "n": ("EU\nrejects\nPeter\n", "text"),  # one word per line, no blocks: each line a sentence
             "o": ("# sent_id = 1\n# text = EU rejects\n1\tEU\teu\tPROPN\tNNP\t_\t2\tnsubj\t_\t_\n", "conllu"),
             "p.conllu": ("# only a comment\n", "conllu"),
             "q": ("", "text")}
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert detect_format(tmp_path / name) == expected, name
    (tmp_path / "r").write_text("John Smith\nMary Jones\n", encoding="utf-8")  # names per line, or columns?
    with pytest.raises(DataFormatError, match=r"cannot tell .* Give format=conll or format=text"):
        detect_format(tmp_path / "r")


def test_conllu_input_tags_the_form_column(model, tmp_path):
    """Comments, multiword-token lines and empty nodes are skipped; every syntactic word gets a tag, in order."""
    row = "{}\t{}\t_\tX\t_\t_\t0\troot\t_\t_\n"
    text = ("# newdoc id = d1\n# text = Alice went to the park\n" + row.format(1, "Alice") + row.format(2, "went")
            + row.format("3-4", "to_the") + row.format(3, "to") + row.format(4, "the") + row.format("4.1", "ghost")
            + row.format(5, "park") + "\n" + row.format(1, "Bob") + "\n")
    data = tmp_path / "in.conllu"
    data.write_text(text, encoding="utf-8")
    summary = run_tag(model["model"], data, tmp_path / "out", *EXIT)
    assert summary["format"] == "conllu" and summary["output_format"] == "conll" and summary["words"] == 6
    assert [[w for w, _ in s] for s in read_predictions(tmp_path / "out")] == [
        ["Alice", "went", "to", "the", "park"], ["Bob"]]
    (tmp_path / "bad.conllu").write_text(row.format(1, "a") + "2\tb\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.conllu:2: not a CoNLL-U token line .*2 fields"):
        run_tag(model["model"], tmp_path / "bad.conllu", tmp_path / "out2", *EXIT)


def test_conll_tab_columns_keep_the_whole_word(tmp_path):
    (tmp_path / "a.conll").write_text("New\xa0York\tNNP\tB-LOC\nis\tVBZ\tO\n", encoding="utf-8")
    assert [r.words for r in read_records(tmp_path / "a.conll", "conll")] == [["New\xa0York", "is"]]
    (tmp_path / "b.conll").write_text("EU\tB-ORG\nNew York\tB-LOC\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"b.conll:2: the word column 'New York' holds a space"):
        list(read_records(tmp_path / "b.conll", "conll"))


def test_split_words_keeps_what_a_reader_sees_as_one_character():
    nfd = unicodedata.normalize("NFD", "São Bürgermeister é.")
    assert split_words(nfd) == [unicodedata.normalize("NFD", w) for w in ("São", "Bürgermeister", "é", ".")]
    assert split_words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert split_words("Ber\u00adlin a\u200bb") == ["Ber\u00adlin", "a", "b"]  # soft hyphen joins, ZWSP splits
    assert split_words("❤️ 👩\u200d💻 👍🏽! 🇫🇷🇩🇪 1️⃣") == ["❤️", "👩\u200d💻", "👍🏽", "!", "🇫🇷", "🇩🇪", "1️⃣"]
    assert split_words("well-known U.S. don't, e.g.") == ["well-known", "U.S", ".", "don't", ",", "e.g", "."]
    for text in ("São Paulo", nfd, "👩\u200d💻 x 🇫🇷!"):  # nothing but whitespace is dropped
        assert "".join(split_words(text)) == "".join(text.split())


def test_lone_surrogates_are_refused_with_their_place(model, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"tokens": ["ok"]}\n{"tokens": ["a\\ud800b", "x"]}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"in.jsonl:2: token 0 .*lone surrogate"):
        run_tag(model["model"], data, tmp_path / "out", *EXIT)
    tagger = Tagger.load(model["model"], device="cpu")
    with pytest.raises(ValueError, match="text 0 holds a lone surrogate"):
        tagger.tag("a\ud800b")
    with pytest.raises(ValueError, match="word 0 of sentence 1 .*lone surrogate"):
        tagger.tag([["fine"], ["a\ud800b"]])


def test_jsonl_drops_stale_exit_layers(model, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"tokens": ["EU", "rejects"], "tags": ["old"], "exit_layers": [9], "id": 7}\n', encoding="utf-8")
    run_tag(model["model"], data, tmp_path / "out.jsonl", *EXIT)
    value = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert value["id"] == 7 and len(value["tags"]) == 2 and "exit_layers" not in value
    run_tag(model["model"], data, tmp_path / "out2.jsonl", *EXIT, "exit_layer=true")
    assert len(json.loads((tmp_path / "out2.jsonl").read_text(encoding="utf-8"))["exit_layers"]) == 2


def test_empty_input_and_usage_errors(model, tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert run_tag(model["model"], tmp_path / "empty.txt", tmp_path / "out")["sentences"] == 0
    assert (tmp_path / "out").read_bytes() == b""
    data = model["test"]
    with pytest.raises(UsageError, match="input, output are not set"):
        tag(config("tag", [f"model_dir={model['model']}"]))
    with pytest.raises(UsageError, match="give speed or exit, not both"):
        run_tag(model["model"], data, tmp_path / "o", "speed=2", *EXIT)
    with pytest.raises(UsageError, match="exit=token_window exit.target_speedup=2 save_profile=true, then tag with "
                                         "speed=2"):
        run_tag(model["model"], data, tmp_path / "o", "exit=token_window", "exit.target_speedup=2")
    with pytest.raises(UsageError, match="exit.layer=9"):
        run_tag(model["model"], data, tmp_path / "o", "exit=static", "exit.layer=9")
    with pytest.raises(UsageError, match="fate=reduce needs a model with a token selector"):
        run_tag(model["model"], data, tmp_path / "o", *EXIT, "fate=reduce")
    assert not (tmp_path / "o").exists()  # refused before anything was written
    with pytest.raises(UsageError, match="is the input file"):
        run_tag(model["model"], data, data)
    for bad, message in (("format=xml", "format=xml is not a format"), ("chunk_sentences=0", "chunk_sentences=0"),
                         ("quantize=fp16", "quantize=fp16 is not a scheme")):
        with pytest.raises(UsageError, match=message):
            run_tag(model["model"], data, tmp_path / "o", bad)
    with pytest.raises(UsageError, match="writes plain text"):
        run_tag(model["model"], data, tmp_path / "o.conll.gz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_tag(model["model"], tmp_path / "absent.conll", tmp_path / "o")


@pytest.mark.parametrize("scheme", ["int8", "bf16"])
def test_quantized_tagger_tags_every_word(model, tmp_path, scheme):
    from tokexit.engine.bf16 import Bf16Linear
    from tokexit.engine.quantize import Int8Linear

    tagger = Tagger.load(model["model"], device="cpu", quantize=scheme)
    assert any(isinstance(m, {"int8": Int8Linear, "bf16": Bf16Linear}[scheme]) for m in tagger.encoder.modules())
    sentences = [[w for w, _ in s] for s in synthetic_sentences(20, seed=6)] + [["alice"] * 600, []]
    tagged = tagger.tag(sentences, exit=TokenWindowExit(0.7), batch_size=4)
    assert [[t.word for t in s] for s in tagged] == sentences
    assert {t.tag for s in tagged for t in s} <= {"O", "B-PER", "I-PER", "B-LOC"}
    summary = run_tag(model["model"], model["test"], tmp_path / "out.conll", f"quantize={scheme}", *EXIT)
    assert summary["words"] == sum(len(r) for r in read_predictions(tmp_path / "out.conll"))
    with pytest.raises(ValueError, match="int8"):
        Tagger.load(model["model"], device="cpu", quantize="int4")


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_is_byte_identical(model, tmp_path):
    data = write_conll(tmp_path / "in.conll", synthetic_sentences(45, seed=8))
    tagger = Tagger.load(model["model"], device="cpu")
    setting = Setting(TokenWindowExit(0.3))
    chunks = []

    def tag_words(words, crash_at=None):
        chunks.append(len(words))
        if crash_at is not None and len(chunks) == crash_at:
            raise Crash("killed")
        return tagger.predict(words, setting, 8)

    kwargs = dict(chunk_sentences=10, exit_layer=True, settings={"setting": "a"}, progress_seconds=0)
    tag_file(tag_words, data, tmp_path / "reference.conll", **kwargs)
    out = tmp_path / "out.conll"
    chunks.clear()
    with pytest.raises(Crash):
        tag_file(lambda w: tag_words(w, crash_at=3), data, out, **kwargs)
    progress = json.loads((tmp_path / "out.conll.progress.json").read_text())
    assert progress["chunks_done"] == 2 and progress["records_done"] == 20
    assert out.stat().st_size == progress["output_bytes"]
    with open(out, "ab") as f:  # as if the killed run had written a chunk and more after its last record
        f.write(b"alice\tB-PER\t1\n" * 1000)
    chunks.clear()
    summary = tag_file(tag_words, data, out, resume=True, **kwargs)
    assert chunks == [10, 10, 5] and summary["chunks"] == 5 and summary["chunks_resumed"] == 2
    assert summary["sentences"] == 45  # the whole output's, not only this run's 25
    assert out.read_bytes() == (tmp_path / "reference.conll").read_bytes()
    assert not (tmp_path / "out.conll.progress.json").exists()


def test_resume_with_other_settings_input_or_model_is_refused(model, tmp_path, monkeypatch):
    data = write_conll(tmp_path / "in.conll", synthetic_sentences(30, seed=9))
    out = tmp_path / "out.conll"
    predict, calls = Tagger.predict, []

    def crash_on_second_chunk(self, words, setting, batch_size=32):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("killed")
        return predict(self, words, setting, batch_size)

    monkeypatch.setattr(Tagger, "predict", crash_on_second_chunk)
    with pytest.raises(Crash):
        run_tag(model["model"], data, out, "chunk_sentences=10", *EXIT)
    monkeypatch.undo()
    other = tmp_path / "other_model"
    shutil.copytree(model["model"], other)
    refusals = {"model_dir": [f"model_dir={other}", f"input={data}", *EXIT],
                "batch_size: 8 -> 4": [f"model_dir={model['model']}", f"input={data}", *EXIT, "batch_size=4"],
                "threshold": [f"model_dir={model['model']}", f"input={data}", "exit=token_window"],
                "chunk_sentences: 10 -> 5": [f"model_dir={model['model']}", f"input={data}", *EXIT,
                                             "chunk_sentences=5"]}
    for change, overrides in refusals.items():
        overrides = ["batch_size=8", "chunk_sentences=10", *overrides, f"output={out}", "resume=true"]
        with pytest.raises(ResumeError, match=re.escape(change)):
            tag(config("tag", overrides))
    summary = run_tag(model["model"], data, out, "chunk_sentences=10", "resume=true", *EXIT)
    assert summary["chunks_resumed"] == 1 and summary["sentences"] == 30  # the whole file's (20 in this run)
    run_tag(model["model"], data, tmp_path / "reference.conll", "chunk_sentences=10", *EXIT)
    assert out.read_bytes() == (tmp_path / "reference.conll").read_bytes()
    # another input (appended to) is refused too
    with pytest.raises(Crash):
        monkeypatch.setattr(Tagger, "predict", crash_on_second_chunk)
        calls.clear()
        run_tag(model["model"], data, out, "chunk_sentences=10", *EXIT)
    monkeypatch.undo()
    with open(data, "a", encoding="utf-8") as f:
        f.write("extra\tO\n")
    with pytest.raises(ResumeError, match="'input'|input:"):
        run_tag(model["model"], data, out, "chunk_sentences=10", "resume=true", *EXIT)


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_bytes(model, tmp_path):
    """A real crash: the tagging process is SIGKILLed after a few chunks, then resumed with resume=true."""
    data = write_conll(tmp_path / "in.conll", synthetic_sentences(1500, seed=10))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "tokexit.tag", f"model_dir={model['model']}", f"input={data}", *EXIT,
            "exit_layer=true", "chunk_sentences=20", "batch_size=8"]
    reference = subprocess.run([*args, f"output={tmp_path / 'reference.conll'}"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out, progress = tmp_path / "out.conll", tmp_path / "out.conll.progress.json"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([*args, f"output={out}"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    deadline = time.monotonic() + 240
    while not (progress.exists() and json.loads(progress.read_text())["chunks_done"] >= 3):
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    done = json.loads(progress.read_text())["chunks_done"]
    assert 3 <= done < 75, "killed too late: the run had finished"
    resumed = subprocess.run([*args, f"output={out}", "resume=true"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already written, continuing" in resumed.stderr
    assert out.read_bytes() == (tmp_path / "reference.conll").read_bytes()
