"""Tests for tokexit.data.conll: small fixture files in tmp_path, plus counts on the real corpora in
../shared/data."""

import gzip
import re
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokexit.data.conll import (
    DataFormatError,
    Sentence,
    bio_to_iob1,
    detect_format,
    detect_scheme,
    detect_task,
    iob1_to_bio,
    open_text_lines,
    read_conll,
    read_conllu,
    read_corpus,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def raises_at(path: str, line: int | None, match: str):
    """pytest.raises for a DataFormatError with message "PATH:LINE: ..." ("PATH: ..." when line is None)."""
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    return pytest.raises(DataFormatError, match=re.escape(where) + ".*" + match)


# ----------------------------------------------------------------------------- CoNLL column files

TWO_SENTS = [["EU", "rejects", "German"], ["Peter", "Blackburn"]]


@pytest.mark.parametrize(
    "sep, extra",
    [("\t", []), (" ", []), ("\t", ["NNP"]), (" ", ["NNP"]), ("\t", ["NNP", "I-NP"]), ("  ", ["NN", "I-NP"])],
)
def test_read_conll_columns(tmp_path, sep, extra):
    tags = [["I-ORG", "O", "I-MISC"], ["I-PER", "I-PER"]]
    text = "\n\n".join(
        "\n".join(sep.join([w, *extra, t]) for w, t in zip(ws, ts, strict=True))
        for ws, ts in zip(TWO_SENTS, tags, strict=True)
    )
    c = read_conll(write(tmp_path, "x.txt", text + "\n"))
    assert c.format == "conll" and c.label_column == 1 + len(extra)
    assert c.sentences == [Sentence(TWO_SENTS[0], tags[0], 1), Sentence(TWO_SENTS[1], tags[1], 5)]
    assert c.scheme == "iob1"


def test_tab_fields_are_stripped_but_may_not_hold_spaces(tmp_path):
    c = read_conll(write(tmp_path, "x.tsv", "York \t B-LOC\ncity\tO\n"))
    assert c.sentences[0].words == ["York", "city"] and c.sentences[0].tags == ["B-LOC", "O"]
    # a CoNLL word cannot contain a space: "New York" would be one word only by mistake
    path = write(tmp_path, "y.tsv", "New York \t B-LOC\ncity\tO\n")
    with raises_at(path, 1, "TAB-separated field 'New York' contains spaces.*line 1: 3 columns, line 2: 2"):
        read_conll(path)


def test_whitespace_only_lines_break_sentences(tmp_path):
    text = "\n\t\n  \na\tB-x\nb\tI-x\n\t\n\n \t \nc\tO\n\t\nd\tO\n\n\n"
    c = read_conll(write(tmp_path, "x.conll", text))
    assert [s.words for s in c.sentences] == [["a", "b"], ["c"], ["d"]]
    assert [s.line for s in c.sentences] == [4, 9, 11]
    assert c.scheme == "bio" and c.label_column == 1


def test_docstart_skipped_and_breaks(tmp_path):
    doc = "-DOCSTART- -X- O O\n"
    text = f"{doc}\nEU NNP I-NP I-ORG\n{doc}Peter NNP I-NP I-PER\n\n{doc}"
    c = read_conll(write(tmp_path, "eng.train", text))
    assert c.sentences == [Sentence(["EU"], ["I-ORG"], 3), Sentence(["Peter"], ["I-PER"], 5)]


def test_label_column_choice_and_unlabelled(tmp_path):
    path = write(tmp_path, "x", "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\n")
    assert read_conll(path, label_column=1).sentences[0].tags == ["NNP", "VBZ"]
    pos = read_conll(path, label_column=1)
    assert pos.label_column == 1 and pos.scheme == "none"
    assert read_conll(path, label_column=-2).sentences[0].tags == ["I-NP", "I-VP"]
    unl = read_conll(path, label_column=None)
    assert unl.sentences == [Sentence(["EU", "rejects"], None, 1)] and unl.label_column is None
    assert unl.scheme == "none"
    one_col = read_conll(write(tmp_path, "words", "EU\nrejects\n\nPeter\n"))
    assert [s.words for s in one_col.sentences] == [["EU", "rejects"], ["Peter"]]
    assert all(s.tags is None for s in one_col.sentences) and one_col.label_column is None
    with raises_at(path, 1, "label column 4 out of range"):
        read_conll(path, label_column=4)


def test_strip_position_digit(tmp_path):
    path = write(tmp_path, "weibo", "科0\tB-ORG.NOM\n技1\tI-ORG.NOM\n20\tO\nA12\tO\n")
    assert read_conll(path).sentences[0].words == ["科0", "技1", "20", "A12"]
    assert read_conll(path, strip_position_digit=True).sentences[0].words == ["科", "技", "2", "A"]


@pytest.mark.parametrize("name", ["x.conll.gz", "x.conll"])
def test_gzip_detected_by_magic_bytes(tmp_path, name):
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("a\tB-x\nb\tO\n\nc\tO\n")
    c = read_corpus(path)
    assert [s.words for s in c.sentences] == [["a", "b"], ["c"]] and c.path == str(path)


def test_plain_file_with_gz_suffix(tmp_path):
    c = read_corpus(write(tmp_path, "plain.gz", "a\tO\n"))
    assert c.sentences == [Sentence(["a"], ["O"], 1)]


def test_bom_and_crlf(tmp_path):
    path = tmp_path / "x"
    path.write_bytes("\ufeffa\tB-x\r\nb\tI-x\r\n\r\nc\tO\r\n".encode())
    assert list(open_text_lines(path))[:2] == [(1, "a\tB-x"), (2, "b\tI-x")]
    c = read_conll(path)
    assert [s.words for s in c.sentences] == [["a", "b"], ["c"]] and c.sentences[0].tags == ["B-x", "I-x"]


@pytest.mark.parametrize("text", ["", "\n\n \n\t\n", "-DOCSTART- -X- O O\n\n"])
def test_empty_files(tmp_path, text):
    path = write(tmp_path, "empty", text)
    assert detect_format(path) == "conll"
    c = read_corpus(path)
    assert c.sentences == [] and c.format == "conll" and c.scheme == "none"
    if not text.startswith("-DOCSTART-"):
        assert read_conllu(path).sentences == []


# ----------------------------------------------------------------------------- errors


def test_wrong_column_count(tmp_path):
    path = write(tmp_path, "bad.conll", "a X O\nb X O\n\nc O\n")
    with raises_at(path, 4, r"expected 3 columns \(as on line 1\), found 2"):
        read_conll(path)


def test_empty_label_and_word(tmp_path):
    path = write(tmp_path, "bad.tsv", "a\tO\nb\t\n")
    with raises_at(path, 2, "empty label"):
        read_conll(path)
    path = write(tmp_path, "bad2.tsv", "a\tO\n\nb\tO\n \tO\n")
    with raises_at(path, 4, "empty word"):
        read_conll(path)


def test_bad_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"a\tO\n\nb\tO\nc\xff\xfe\tO\n")
    with raises_at(str(path), 4, "invalid UTF-8"):
        read_corpus(path)


def test_bad_utf8_in_gzip(tmp_path):
    path = tmp_path / "bad"
    with gzip.open(path, "wb") as f:
        f.write(b"a\tO\n\xff\xfe\tO\n")
    with raises_at(str(path), 2, "invalid UTF-8"):
        read_conll(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "trunc.gz"
    data = gzip.compress("".join(f"w{i}\tO\n" for i in range(5000)).encode())
    path.write_bytes(data[: len(data) // 2])
    with raises_at(str(path), None, "corrupt gzip"):
        read_conll(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.conll"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_corpus(path)


# ----------------------------------------------------------------------------- CoNLL-U

CONLLU = """\
# newdoc id = weblog-1
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tit\tit\t_\t_\t_\t_\t_\t4:obj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_read_conllu_upos_xpos(tmp_path):
    path = write(tmp_path, "x.conllu", CONLLU)
    c = read_conllu(path)
    assert c.format == "conllu" and c.label_column is None and c.scheme == "none"
    assert c.sentences == [
        Sentence(["I", "do", "n't", "know", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"], 4),
        Sentence(["Hi"], ["INTJ"], 13),
    ]
    x = read_corpus(path, tagset="xpos")
    assert x.format == "conllu" and [s.tags for s in x.sentences] == [["PRP", "VBP", "RB", "VB", "."], ["UH"]]
    with pytest.raises(ValueError, match="tagset"):
        read_conllu(path, tagset="deprel")


def test_conllu_gzip(tmp_path):
    path = tmp_path / "x.conllu.gz"
    path.write_bytes(gzip.compress(CONLLU.encode()))
    assert detect_format(path) == "conllu" and len(read_corpus(path).sentences) == 2


def test_conllu_wrong_field_count(tmp_path):
    bad = CONLLU.replace("4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", "4 know")
    path = write(tmp_path, "bad.conllu", bad)
    with raises_at(path, 8, "expected 10 TAB-separated fields, found 1"):
        read_conllu(path)


def test_conllu_missing_tag(tmp_path):
    path = write(tmp_path, "no_xpos.conllu", CONLLU.replace("\tVBP\t", "\t_\t"))
    assert len(read_conllu(path).sentences) == 2
    with raises_at(path, 6, "empty XPOS tag"):
        read_conllu(path, tagset="xpos")


def test_detect_format(tmp_path):
    assert detect_format(write(tmp_path, "a.conllu", CONLLU)) == "conllu"
    starts_with_range = "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n2\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n"
    assert detect_format(write(tmp_path, "b", "\n# c\n" + starts_with_range)) == "conllu"
    assert detect_format(write(tmp_path, "c", "8.1\tit\tit\t_\t_\t_\t_\t_\t_\t_\n")) == "conllu"
    assert detect_format(write(tmp_path, "d.conllu", "EU NNP I-NP I-ORG\n")) == "conll"
    ten_cols_no_id = "w\t" + "\t".join("x" * 9) + "\n"
    assert detect_format(write(tmp_path, "e", ten_cols_no_id)) == "conll"
    assert detect_format(write(tmp_path, "f", "-DOCSTART- -X- O O\n\n1\ta\n")) == "conll"
    c = read_corpus(write(tmp_path, "g", "#not-a-comment\tO\nx\tO\n"))
    assert c.format == "conll" and c.sentences[0].words == ["#not-a-comment", "x"]
    with raises_at(write(tmp_path, "h", "# not a comment\tO\nx\tO\n"), 1, "contains spaces"):
        read_corpus(tmp_path / "h")


# ----------------------------------------------------------------------------- tag schemes


def test_detect_scheme_examples():
    iob1 = [["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "B-ORG", "O"], ["I-LOC", "I-ORG"]]
    bio = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "B-ORG", "O"]]
    assert detect_scheme(iob1) == "iob1"
    assert detect_scheme(bio) == "bio"
    assert detect_scheme([["B-PER", "O", "I-LOC"], ["B-ORG"], ["B-LOC"]]) == "bio"  # a stray I- in BIO
    assert detect_scheme([*iob1, ["O", "B-MISC", "I-MISC"]]) == "iob1"  # a stray B- in IOB1 (as in eng.train)
    assert detect_scheme([["B-PER", "E-PER", "S-LOC", "O"]]) == "bio"
    assert detect_scheme([["DT", "NN", "VBZ"]]) == "none"
    assert detect_scheme([["B-NP", "I-NP", "NP"]]) == "none"
    assert detect_scheme([["O", "O"], []]) == "none"
    assert detect_scheme([]) == "none"


def test_detect_task():
    assert detect_task(["O", "B-PER", "I-PER", "E-LOC", "S-LOC"]) == "ner"
    assert detect_task({"B-corporation", "I-creative-work", "O"}) == "ner"
    assert detect_task(["NOUN", "VERB", "PUNCT"]) == "tagging"
    assert detect_task(["O", "B-NP", "NP"]) == "tagging"
    assert detect_task(["O"]) == "tagging"
    assert detect_task([]) == "tagging"


def test_conversions_examples():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"]
    bio = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG"]
    assert iob1_to_bio(iob1) == bio and bio_to_iob1(bio) == iob1
    assert iob1_to_bio(["NN", "O"]) == ["NN", "O"]


def test_read_corpus_to_bio(tmp_path):
    path = write(tmp_path, "x", "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n")
    c = read_corpus(path)
    assert c.scheme == "iob1" and c.sentences[0].tags == ["B-ORG", "O", "B-MISC"]
    assert bio_to_iob1(c.sentences[0].tags) == ["I-ORG", "O", "I-MISC"]
    assert read_corpus(path, to_bio=False).sentences[0].tags == ["I-ORG", "O", "I-MISC"]
    assert read_corpus(path, format="conll", label_column=2).sentences[0].tags == ["B-NP", "B-VP", "B-NP"]
    with pytest.raises(ValueError, match="format"):
        read_corpus(path, format="json")


def _valid_iob1(tags: list[str]) -> list[str]:
    """Turn any B-X that does not follow B-X/I-X of the same type into I-X."""
    out: list[str] = []
    for t in tags:
        if t.startswith("B-") and not (out and out[-1][:2] in ("B-", "I-") and out[-1][2:] == t[2:]):
            t = "I-" + t[2:]
        out.append(t)
    return out


iob1_seqs = st.lists(st.sampled_from(["O", "I-A", "I-B", "B-A", "B-B"]), max_size=40).map(_valid_iob1)


@settings(deadline=None, max_examples=300)
@given(iob1_seqs)
def test_iob1_bio_round_trip(tags):
    bio = iob1_to_bio(tags)
    assert bio_to_iob1(bio) == tags
    assert iob1_to_bio(bio) == bio  # BIO is a fixed point
    for prev, cur in pairwise(["O", *bio]):
        if cur.startswith("I-"):
            assert prev[:2] in ("B-", "I-") and prev[2:] == cur[2:], bio
    assert detect_scheme([bio]) in ("bio", "none")


# ----------------------------------------------------------------------------- real corpora in ../shared/data


def shared(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def n_words(c) -> int:
    return sum(len(s.words) for s in c.sentences)


@pytest.mark.shared_data
def test_real_conll2003():
    c = read_corpus(shared("conll2003/eng.train"))
    assert (len(c.sentences), n_words(c), c.scheme, c.label_column) == (14041, 203621, "iob1", 3)
    for s in c.sentences:
        for prev, cur in pairwise(["O", *s.tags]):
            if cur.startswith("I-"):
                assert prev != "O" and prev[2:] == cur[2:], (s.line, s.tags)
    assert {t for s in c.sentences for t in s.tags} == {
        "O",
        *(f"{p}-{x}" for p in "BI" for x in ("PER", "ORG", "LOC", "MISC")),
    }


@pytest.mark.shared_data
def test_real_ud_ewt():
    c = read_corpus(shared("ud_english_ewt/en_ewt-ud-train.conllu.gz"))
    assert (c.format, len(c.sentences), n_words(c), c.scheme) == ("conllu", 12544, 204577, "none")
    assert len({t for s in c.sentences for t in s.tags}) == 17
    assert len(read_corpus(shared("ud_english_ewt/en_ewt-ud-dev.conllu")).sentences) == 2001


@pytest.mark.shared_data
def test_real_wnut17():
    c = read_corpus(shared("wnut17/wnut17train.conll"))
    assert (len(c.sentences), n_words(c), c.scheme) == (3394, 62730, "bio")
    assert len({t for s in c.sentences for t in s.tags}) == 13


@pytest.mark.shared_data
def test_real_conll2000():
    c = read_corpus(shared("conll2000/train.txt.gz"))
    assert (len(c.sentences), n_words(c), c.scheme) == (8936, 211727, "bio")


@pytest.mark.shared_data
def test_real_weibo():
    c = read_corpus(shared("weibo_ner/weiboNER_2nd_conll.train"), strip_position_digit=True)
    assert (len(c.sentences), n_words(c), c.scheme) == (1350, 73778, "bio")
    assert sum(len(w) == 1 for s in c.sentences for w in s.words) > 0.999 * n_words(c)  # one char per token
