"""GLUE TSV reader: small invented fixtures per layout, error messages, and the real dev/test files when present."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared
from omegaconf import OmegaConf

from tokexit import CONFIG_DIR
from tokexit.data.conll import DataFormatError
from tokexit.data.glue import Example, TsvColumns, label_inventory, read_tsv


def write(tmp_path: Path, text: str, name: str = "f.tsv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def task(name: str) -> tuple[TsvColumns, bool]:
    """The column layout of a GLUE data config (tokexit/conf/data/NAME.yaml, its defaults applied)."""
    cfg = OmegaConf.load(CONFIG_DIR / "data" / f"{name}.yaml")
    if "defaults" in cfg:
        cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "data" / "sst2.yaml"), cfg)
    return TsvColumns(cfg.text_a, cfg.text_b, cfg.label, cfg.header), bool(cfg.regression)


def test_single_sentence_with_header_and_trailing_spaces(tmp_path):
    path = write(tmp_path, "sentence\tlabel\na quiet , lovely film \t1\nit drags on and on \t0\n")
    examples = read_tsv(path, TsvColumns("sentence", label="label"))
    assert examples == [Example("a quiet , lovely film", None, "1", 2), Example("it drags on and on", None, "0", 3)]
    assert label_inventory(examples) == ["0", "1"]


def test_pair_with_bom_and_literal_quotes(tmp_path):
    text = (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t11\t12\tThe mayor said "we will\tThe mayor promised to rebuild the bridge.\n'
        '0\t13\t14\trebuild it" on Monday.\tShares fell 3 percent.\n'
        "1\t15\t16\tA cat sat.\tA cat was sitting."  # no final newline
    )
    examples = read_tsv(write(tmp_path, text, bom=True), TsvColumns("#1 String", "#2 String", "Quality"))
    assert [ex.line for ex in examples] == [2, 3, 4]  # the quotes did not merge rows
    assert examples[0] == Example('The mayor said "we will', "The mayor promised to rebuild the bridge.", "1", 2)
    assert examples[1].text_a == 'rebuild it" on Monday.'
    assert examples[2] == Example("A cat sat.", "A cat was sitting.", "1", 4)


def test_headerless_integer_columns(tmp_path):
    text = "src1\t1\t\tThe dog barked loudly.\nsrc1\t0\t*\tDog the loudly barked.\n\n\n"  # trailing blank lines
    examples = read_tsv(write(tmp_path, text), TsvColumns(3, label=1))
    assert examples == [
        Example("The dog barked loudly.", None, "1", 1),
        Example("Dog the loudly barked.", None, "0", 2),
    ]
    # header=True with integer columns skips the first line
    assert [ex.line for ex in read_tsv(write(tmp_path, text), TsvColumns(3, label=1, header=True))] == [2]


def test_regression_labels(tmp_path):
    text = "index\tsentence1\tsentence2\tscore\n0\tA man plays.\tA man is playing.\t4\n1\tA b.\tC d.\t3.800\n"
    examples = read_tsv(write(tmp_path, text), TsvColumns("sentence1", "sentence2", "score"), regression=True)
    assert [ex.label for ex in examples] == [4.0, 3.8]
    assert all(isinstance(ex.label, float) for ex in examples)
    with pytest.raises(ValueError, match="line 2"):
        label_inventory(examples)


def test_unlabelled_test_layout(tmp_path):
    path = write(tmp_path, "index\tsentence1\tsentence2\n0\tIt rains.\tThe street is wet.\n")
    columns = TsvColumns("sentence1", "sentence2", "label")
    assert read_tsv(path, columns) == [Example("It rains.", "The street is wet.", None, 2)]
    with pytest.raises(DataFormatError, match=r":1: no column 'label' in the header \(found: index, sentence1"):
        read_tsv(path, columns, label_optional=False)
    with pytest.raises(ValueError, match="no class label"):
        label_inventory(read_tsv(path, columns))


def test_short_row_reports_its_line(tmp_path):
    path = write(tmp_path, "index\ts1\ts2\tlabel\n0\ta\tb\tentailment\n1\tc\td\n")
    with pytest.raises(DataFormatError, match=r"f\.tsv:3: expected at least 4 tab-separated fields, found 3"):
        read_tsv(path, TsvColumns("s1", "s2", "label"))


def test_bad_float(tmp_path):
    path = write(tmp_path, "s1\ts2\tscore\na\tb\t2.5\nc\td\thigh\n")
    with pytest.raises(DataFormatError, match=r"f\.tsv:3: label 'high' is not a number"):
        read_tsv(path, TsvColumns("s1", "s2", "score"), regression=True)


def test_missing_text_column_name(tmp_path):
    path = write(tmp_path, "a\tb\tc\nx\ty\tz\n")
    with pytest.raises(DataFormatError, match=r"f\.tsv:1: no column 'sentence' in the header \(found: a, b, c\)"):
        read_tsv(path, TsvColumns("sentence", label="c"))


def test_other_format_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r":3: empty text_a"):
        read_tsv(write(tmp_path, "s\tlabel\nok\t1\n  \t0\n"), TsvColumns("s", label="label"))
    with pytest.raises(DataFormatError, match=r":3: blank line"):
        read_tsv(write(tmp_path, "s\tlabel\nok\t1\n\nfine\t0\n"), TsvColumns("s", label="label"))
    with pytest.raises(DataFormatError, match=r":2: empty label"):
        read_tsv(write(tmp_path, "s\tlabel\nok\t \n"), TsvColumns("s", label="label"))


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "nope.tsv"
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_tsv(missing, TsvColumns("sentence", label="label"))
    assert read_tsv(write(tmp_path, "sentence\tlabel\n"), TsvColumns("sentence", label="label")) == []
    assert read_tsv(write(tmp_path, ""), TsvColumns(3, label=1)) == []
    with pytest.raises(DataFormatError, match="empty file"):
        read_tsv(write(tmp_path, ""), TsvColumns("sentence", label="label"))


@pytest.mark.shared_data
def test_real_glue_files():
    expected = {"sst2": ("SST-2", 872), "mrpc": ("MRPC", 408), "rte": ("RTE", 277), "stsb": ("STS-B", 1500),
                "cola": ("CoLA", 1043)}  # fmt: skip
    for name, (folder, count) in expected.items():
        columns, regression = task(name)
        examples = read_tsv(shared(f"glue/{folder}/dev.tsv"), columns, regression=regression, label_optional=False)
        assert len(examples) == count, name
        assert (examples[0].text_b is None) == (columns.text_b is None), name
        if regression:
            assert all(0.0 <= ex.label <= 5.0 for ex in examples)
        else:
            assert len(label_inventory(examples)) == 2, name
    for name, folder in [("sst2", "SST-2"), ("rte", "RTE"), ("stsb", "STS-B")]:
        columns, regression = task(name)
        examples = read_tsv(shared(f"glue/{folder}/test.tsv"), columns, regression=regression)
        assert examples and all(ex.label is None for ex in examples), name
