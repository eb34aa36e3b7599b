"""Bad input in the readers and in training: CR-only line ends, TABs and spaces mixed as separators, files that
are empty or unlabelled where training needs labels, unlabelled test files (tagged, not scored), unseen IOB1
labels named as written, and metrics.json naming the data a run really used."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import logging
import re
from pathlib import Path

import pytest
from conftest import REPO, read_predictions, shared, synthetic_sentences, write_conll
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from tokexit import CONFIG_DIR
from tokexit.data.conll import (
    DataFormatError,
    Sentence,
    _raw_lines,
    bio_to_iob1,
    open_text_lines,
    read_conll,
    read_corpus,
)
from tokexit.data.glue import TsvColumns, read_tsv
from tokexit.data.tagging import LabelSet, report_unseen_labels
from tokexit.train import describe_data, train


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def raises_at(path, line: int | None, match: str):
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    return pytest.raises(DataFormatError, match=re.escape(where) + ".*" + match)


# ----------------------------------------------------------------------------- line ends


@pytest.mark.parametrize("compress", [False, True])
def test_cr_only_files_are_read_line_by_line(tmp_path, compress):
    text = b"EU\tB-ORG\rrejects\tO\r\rPeter\tB-PER\rBlackburn\tI-PER\r"
    path = write_bytes(tmp_path / "mac.conll", gzip.compress(text) if compress else text)
    assert list(open_text_lines(path)) == [(1, "EU\tB-ORG"), (2, "rejects\tO"), (3, ""), (4, "Peter\tB-PER"),
                                           (5, "Blackburn\tI-PER")]
    c = read_corpus(path)
    assert c.sentences == [Sentence(["EU", "rejects"], ["B-ORG", "O"], 1),
                           Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"], 4)]
    bad = write_bytes(tmp_path / "bad.conll", b"a\tO\rb\tO\rc\tO\textra\r")
    with raises_at(bad, 3, r"expected 2 columns \(as on line 1\), found 3"):
        read_conll(bad)
    utf8 = write_bytes(tmp_path / "utf8.conll", b"a\tO\r\rb\xff\tO\r")
    with raises_at(utf8, 3, "invalid UTF-8"):
        read_conll(utf8)
    conllu = "# text = Hi there\r1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\r2\tthere\tthere\tADV\tRB\t_\t1\tadvmod\t_\t_\r"
    path = write_bytes(tmp_path / "mac.conllu", gzip.compress(conllu.encode()) if compress else conllu.encode())
    c = read_corpus(path)
    assert c.format == "conllu" and c.sentences == [Sentence(["Hi", "there"], ["INTJ", "ADV"], 2)]


def test_corrupt_gzip_data_names_the_file(tmp_path):
    data = bytearray(gzip.compress("".join(f"w{i}\tO\n" for i in range(20000)).encode()))
    data[10] = 0xFF  # the first deflate block header: an invalid block type (zlib.error, not a short file)
    path = write_bytes(tmp_path / "damaged.gz", bytes(data))
    with raises_at(path, None, "corrupt gzip data after line 0"):
        read_conll(path)
    data = bytearray(gzip.compress("".join(f"w{i}\tO\n" for i in range(20000)).encode()))
    data[-8] ^= 0xFF  # the CRC
    path = write_bytes(tmp_path / "crc.gz", bytes(data))
    with raises_at(path, None, "corrupt gzip data after line"):
        read_conll(path)


def test_mixed_line_ends_in_one_file(tmp_path):
    path = write_bytes(tmp_path / "mixed", b"a\tB-x\r\nb\tI-x\rc\tO\n\r\nd\tO\r\re\tO")
    assert [n for n, _ in open_text_lines(path)] == [1, 2, 3, 4, 5, 6, 7]
    c = read_conll(path)
    assert [(s.words, s.line) for s in c.sentences] == [(["a", "b", "c"], 1), (["d"], 5), (["e"], 7)]
    # CR CR LF (line ends converted twice) stays one line break, as it always was read
    doubled = write_bytes(tmp_path / "doubled", b"a\tO\r\r\nb\tO\r\r\n\r\r\nc\tO\r\r\n")
    assert [s.words for s in read_conll(doubled).sentences] == [["a", "b"], ["c"]]


def reference_lines(data: bytes) -> list[bytes]:
    parts = re.split(rb"\r*\n|\r", data)
    return parts[:-1] if parts[-1] == b"" else parts


@settings(deadline=None, max_examples=300)
@given(st.lists(st.sampled_from([b"a", b"\t", b"\r", b"\n", b"\r\n", "é".encode()]), max_size=40),
       st.integers(1, 9))
def test_line_splitter_does_not_depend_on_chunk_boundaries(pieces, chunk_size):
    data = b"".join(pieces)
    assert list(_raw_lines(io.BytesIO(data), chunk_size)) == reference_lines(data)


def test_glue_reader_line_ends_gzip_and_bad_bytes(tmp_path):
    columns = TsvColumns("sentence", label="label")
    cr = write_bytes(tmp_path / "cr.tsv", b"sentence\tlabel\rgood film\t1\rbad\t0\r")
    assert [(e.text_a, e.label, e.line) for e in read_tsv(cr, columns)] == [("good film", "1", 2), ("bad", "0", 3)]
    short = write_bytes(tmp_path / "short.tsv", b"sentence\tlabel\r\nok\t1\rno label\n")
    with raises_at(short, 3, "expected at least 2 tab-separated fields, found 1"):
        read_tsv(short, columns)
    packed = write_bytes(tmp_path / "packed.tsv", gzip.compress(b"sentence\tlabel\ngood\t1\n"))
    assert [e.text_a for e in read_tsv(packed, columns)] == ["good"]
    undecodable = write_bytes(tmp_path / "latin1.tsv", "sentence\tlabel\nok\t1\ncafé\t0\n".encode("latin-1"))
    with raises_at(undecodable, 3, "invalid UTF-8"):
        read_tsv(undecodable, columns)
    leading = write_bytes(tmp_path / "leading.tsv", b"\nsentence\tlabel\nok\t1\n")
    with raises_at(leading, 1, "blank line before the first row"):
        read_tsv(leading, columns)


# ----------------------------------------------------------------------------- TABs and spaces mixed


def test_tab_before_the_tag_in_a_space_separated_file_is_read_as_whitespace(tmp_path, caplog):
    text = "-DOCSTART- -X- O O\n\nJAPAN NNP I-NP I-LOC\nSOCCER NN I-NP\tO\n- : O O\n\nwin VB I-VP\tO\n"
    path = write_bytes(tmp_path / "eng.mixed", text.encode())
    with caplog.at_level(logging.WARNING, logger="tokexit.data.conll"):
        c = read_conll(path)
    assert c.sentences == [Sentence(["JAPAN", "SOCCER", "-"], ["I-LOC", "O", "O"], 3), Sentence(["win"], ["O"], 7)]
    assert c.label_column == 3
    assert f"{path}:4: TAB-separated field 'SOCCER NN I-NP' contains spaces (2 such lines)" in caplog.text
    assert "read that way" in caplog.text


def test_a_file_written_as_spaces_then_a_tab_on_every_line(tmp_path):
    path = write_bytes(tmp_path / "x", b"EU NNP I-NP\tI-ORG\nrejects VBZ I-VP\tO\n\nPeter NNP I-NP\tI-PER\n")
    c = read_corpus(path, to_bio=False)
    assert [s.words for s in c.sentences] == [["EU", "rejects"], ["Peter"]]
    assert [s.tags for s in c.sentences] == [["I-ORG", "O"], ["I-PER"]] and c.label_column == 3


def test_a_space_inside_a_tab_separated_word_is_an_error(tmp_path):
    path = write_bytes(tmp_path / "wnut.conll", b"@user\tO\nlives\tO\nin\tO\n\nNew York\tB-location\ncity\tO\n")
    with raises_at(path, 5, r"TAB-separated field 'New York' contains spaces, but a CoNLL word cannot contain a "
                            r"space.*line 1: 2 columns, line 5: 3"):
        read_conll(path)


def test_column_count_error_names_the_separators(tmp_path):
    path = write_bytes(tmp_path / "x", b"EU NNP I-NP I-ORG\nrejects\tO\n")
    with raises_at(path, 2, r"expected 4 columns \(as on line 1\), found 2; line 1 is space-separated, this line "
                            "TAB-separated"):
        read_conll(path)


# sentences, words, distinct tags: the counts every real file had before CR-only and mixed-separator support
REAL_FILES = {
    "conll2003/eng.train": (14041, 203621, 9), "conll2003/eng.testa": (3250, 51362, 9),
    "conll2003/eng.testb": (3453, 46435, 9), "conll2000/train.txt.gz": (8936, 211727, 22),
    "conll2000/test.txt.gz": (2012, 47377, 19), "wnut17/wnut17train.conll": (3394, 62730, 13),
    "wnut17/emerging.dev.conll": (1009, 15733, 13), "wnut17/emerging.test.annotated": (1287, 23394, 13),
    "weibo_ner/weiboNER_2nd_conll.train": (1350, 73778, 17), "weibo_ner/weiboNER_2nd_conll.dev": (270, 14509, 17),
    "weibo_ner/weiboNER_2nd_conll.test": (270, 14842, 17),
    "ud_english_ewt/en_ewt-ud-train.conllu.gz": (12544, 204577, 17),
    "ud_english_ewt/en_ewt-ud-dev.conllu": (2001, 25147, 17), "ud_english_ewt/en_ewt-ud-test.conllu": (2077, 25094, 17),
}  # fmt: skip


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_files_read_as_before(name, caplog):
    path = shared(name)
    with caplog.at_level(logging.WARNING, logger="tokexit.data.conll"):
        c = read_corpus(path, strip_position_digit=name.startswith("weibo"))
    counts = (len(c.sentences), sum(len(s.words) for s in c.sentences), len({t for s in c.sentences for t in s.tags}))
    assert counts == REAL_FILES[name]
    assert "contains spaces" not in caplog.text


# ----------------------------------------------------------------------------- unseen labels in IOB1 files


def test_unseen_labels_are_named_as_written_in_the_file(tmp_path, caplog):
    labels = LabelSet(["O", "B-PER", "I-PER"], "ner")
    path = write_bytes(tmp_path / "test.iob1", b"Alice I-PER\nmet O\nAcme I-FOO\nCorp I-FOO\n\nBob I-PER\n")
    corpus = read_corpus(path)
    assert corpus.scheme == "iob1" and corpus.sentences[0].tags == ["B-PER", "O", "B-FOO", "I-FOO"]
    with caplog.at_level(logging.WARNING, logger="tokexit.data.tagging"):
        unseen = report_unseen_labels(corpus, labels)
    assert unseen == {"I-FOO": {"count": 2, "first_line": 3}}
    assert f"{path}:3: label 'I-FOO' (read as 'B-FOO', 'I-FOO' in BIO) never seen in training (2 words)" in caplog.text
    bio = write_bytes(tmp_path / "test.bio", b"Alice B-PER\nAcme B-FOO\n")
    assert report_unseen_labels(read_corpus(bio), labels) == {"B-FOO": {"count": 1, "first_line": 2}}


# ----------------------------------------------------------------------------- metrics.json: which data


def config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")))
def test_every_shipped_data_config_names_itself(name):
    assert describe_data(config([f"data={name}"]))["data"] == name


def test_describe_data_names_custom_files():
    assert describe_data(config([]))["data"] == "wnut16"
    own = describe_data(config(["data=conll2003", "data_root=/data"]))
    assert own == {"data": "conll2003", "data_config": "conll2003",
                   "files": {"train": "/data/conll2003/eng.train", "validation": "/data/conll2003/eng.testa",
                             "test": "/data/conll2003/eng.testb"}}
    assert describe_data(config(["data=conll2003", "data_root=/data", "data.test_file=/data/./conll2003/eng.testb"]))[
        "data"] == "conll2003"  # the same file spelled differently
    custom = describe_data(config(["data=conll2003", "data_root=/data", "data.train_file=/mine/train.txt"]))
    assert custom["data"] == "custom" and custom["data_config"] == "conll2003"
    assert custom["files"]["train"] == "/mine/train.txt"
    assert describe_data(config(["data=sst2", "data.test_file=null"]))["data"] == "custom"
    assert describe_data(config(["data.name=my_tweets", "data.train_file=/t.txt"]))["data"] == "my_tweets"


# ----------------------------------------------------------------------------- training: checks before fit

FAST = ["model=tiny", "model.backbone_lr=2e-3", "model.head_lr=5e-3", "data.batch_size=8", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
CLS_FAST = ["model=tiny_classifier", *FAST[1:]]


def run_config(files: dict, out: Path, *extra: str):
    return config([*FAST, *[f"data.{k}_file={v}" for k, v in files.items()], f"output_dir={out}", *extra])


def unlabelled(path: Path, sentences) -> Path:
    path.write_text("".join("".join(f"{w}\n" for w, _ in s) + "\n" for s in sentences), encoding="utf-8")
    return path


@pytest.fixture
def tagging_files(tmp_path) -> dict[str, Path]:
    return {"train": write_conll(tmp_path / "train.txt", synthetic_sentences(30, seed=1)),
            "validation": write_conll(tmp_path / "dev.txt", synthetic_sentences(10, seed=2)),
            "test": write_conll(tmp_path / "test.txt", synthetic_sentences(10, seed=3))}


def test_tagger_files_are_checked_before_training(tagging_files, tmp_path):
    words = unlabelled(tmp_path / "words.txt", synthetic_sentences(5, seed=4))
    only_o = write_conll(tmp_path / "o.txt", [[("a", "O"), ("b", "O")]])
    empty = write_bytes(tmp_path / "empty.txt", b"")
    cases = [
        ({"train": words}, ValueError, r"data.train_file=.*words.txt: no labels to train on"),
        ({"train": empty}, ValueError, r"data.train_file=.*empty.txt: no sentences to train on"),
        ({"train": only_o}, ValueError, r"data.train_file=.*o.txt: every word has the label 'O'"),
        ({"validation": words}, ValueError, r"data.validation_file=.*words.txt: no labels .*data.validation_file=null"),
        ({"validation": tmp_path / "nope.txt"}, FileNotFoundError, r"data.validation_file=.*nope.txt: no such file"),
    ]
    for i, (change, error, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        with pytest.raises(error, match=message):
            train(run_config({**tagging_files, **change}, out))
        assert not (out / "checkpoints").exists()  # nothing was trained


def test_classifier_files_are_checked_before_training(tmp_path):
    train_file = write_bytes(tmp_path / "train.tsv", b"sentence\tlabel\ngood\t1\nbad\t0\nfine\t1\n")
    test_layout = write_bytes(tmp_path / "test.tsv", b"index\tsentence\n0\tgood\n1\tbad\n")
    one_label = write_bytes(tmp_path / "one.tsv", b"sentence\tlabel\ngood\t1\nfine\t1\n")
    cases = [
        (["data=sst2"], {"train": test_layout}, r"data.train_file=.*test.tsv: no label column 'label' in the header"),
        (["data=sst2"], {"validation": test_layout}, r"data.validation_file=.*test.tsv: no label column 'label'.*"
                                                     "needs gold labels"),
        (["data=sst2"], {"train": one_label}, r"data.train_file=.*one.tsv: every example has the label '1'"),
        (["data=sst2", "data.regression=true"], {"train": test_layout}, r"data.train_file=.*: no label column"),
    ]
    for i, (extra, change, message) in enumerate(cases):
        files = {"train": train_file, "validation": train_file, "test": train_file, **change}
        out = tmp_path / f"run{i}"
        with pytest.raises(ValueError, match=message):
            train(config([*CLS_FAST, *extra, *[f"data.{k}_file={v}" for k, v in files.items()], f"output_dir={out}"]))
        assert not (out / "checkpoints").exists()


# ----------------------------------------------------------------------------- training: unlabelled / empty files


@pytest.fixture(scope="module")
def tagged_unlabelled(tmp_path_factory) -> dict:
    """A tagger trained on IOB1 files whose test file has no labels."""
    root = tmp_path_factory.mktemp("unlabelled")
    iob1 = [[(w, t) for w, t in zip([w for w, _ in s], bio_to_iob1([t for _, t in s]), strict=True)]
            for s in synthetic_sentences(30, seed=1)]
    test_sentences = synthetic_sentences(7, seed=3)
    files = {"train": write_conll(root / "train.txt", iob1, sep=" "),
             "validation": write_conll(root / "dev.txt", synthetic_sentences(10, seed=2)),
             "test": unlabelled(root / "words.txt", test_sentences)}
    result = train(run_config(files, root / "run"))
    return {"root": root, "result": result, "test": test_sentences, "files": files}


def test_unlabelled_test_file_is_tagged_not_scored(tagged_unlabelled):
    run = tagged_unlabelled["root"] / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_status"] == "unlabelled" and metrics["layers"] == [] and metrics["full_depth"] is None
    assert metrics["test_predictions"] == str(run / "test_predictions.conll")
    assert metrics["data"] == "custom" and metrics["data_config"] == "wnut16"
    assert metrics["files"] == {k: str(v) for k, v in tagged_unlabelled["files"].items()}
    assert (run / "model" / "tokexit.json").is_file()  # the model is saved
    rows = read_predictions(run / "test_predictions.conll")
    assert [[r[0] for r in s] for s in rows] == [[w for w, _ in s] for s in tagged_unlabelled["test"]]
    assert all(len(r) == 3 and r[1] == "-" for s in rows for r in s)  # word, no gold tag, prediction
    for s in rows:  # written in the training files' scheme, IOB1: B-X only right after an X
        for prev, cur in zip([["", "", "O"], *s], s, strict=False):
            assert not cur[2].startswith("B-") or prev[2][2:] == cur[2][2:], s


def test_a_model_that_cannot_tag_refuses_an_unlabelled_test_file_before_training(tagged_unlabelled, tmp_path):
    teacher = tagged_unlabelled["root"] / "run" / "model"
    files = {**tagged_unlabelled["files"], "train": write_conll(tmp_path / "t.txt", synthetic_sentences(30, seed=1))}
    with pytest.raises(ValueError, match=r"data.test_file=.*words.txt: no labels, and model=dynabert can only score"):
        train(run_config(files, tmp_path / "run", "model=dynabert", f"model.teacher={teacher}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_validation_and_test_files_train_and_say_so(tagging_files, tmp_path, caplog, capsys):
    empty = write_bytes(tmp_path / "empty.txt", b"")
    blank = write_bytes(tmp_path / "blank.txt", b"\n\r\n \n")
    with caplog.at_level(logging.WARNING):
        result = train(run_config({**tagging_files, "validation": empty, "test": blank}, tmp_path / "run"))
    assert f"data.validation_file={empty} is empty: no validation, so no model selection" in caplog.text
    assert f"data.test_file={blank} is empty: the model will be trained and saved, but not tested" in caplog.text
    assert f"data.test_file={blank} is empty: nothing to test" in capsys.readouterr().out
    assert result["test_status"] == "empty" and result["full_depth"] is None
    assert result["best_checkpoint"].endswith("best.ckpt")  # no selection: the last epoch's model is kept
    assert result["counts"]["validation_sentences"] == 0 and result["counts"]["test_sentences"] == 0
    assert (tmp_path / "run" / "model" / "tokexit.json").is_file()


def test_unlabelled_glue_test_file_is_predicted_not_scored(tmp_path, capsys):
    rows = ["sentence\tlabel"] + [f"{w} film\t{int(w == 'good')}" for w in ["good", "bad"] * 20]
    train_file = write_bytes(tmp_path / "train.tsv", ("\n".join(rows) + "\n").encode())
    test_file = write_bytes(tmp_path / "test.tsv", b"index\tsentence\n0\tgood film\n1\tbad film\n2\tfilm\n")
    files = {"train": train_file, "validation": train_file, "test": test_file}
    result = train(config([*CLS_FAST, "data=sst2", *[f"data.{k}_file={v}" for k, v in files.items()],
                           f"output_dir={tmp_path / 'run'}"]))
    assert result["test_status"] == "unlabelled" and result["layers"] == [] and result["full_depth"] is None
    lines = (tmp_path / "run" / "test_predictions.tsv").read_text().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[0] in ("0", "1") and line.split("\t")[1] == "3" for line in lines)
    assert "has no labels: classified, not scored" in capsys.readouterr().out  # the word evaluate uses too
    assert (tmp_path / "run" / "model" / "tokexit.json").is_file()


def test_foundation_report_reads_the_new_metrics(tagged_unlabelled):
    spec = importlib.util.spec_from_file_location("foundation_report", REPO / "scripts" / "foundation_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.run_section(tagged_unlabelled["root"] / "run").startswith("## custom (tiny), task ner")
