"""The files ``tokexit.tag`` reads and writes, record by record (a record: a sentence, or a line passed through).

Input formats (``format=``):

* ``conll``: one word per line, the word in the first column (any other columns, e.g. gold labels, are ignored);
  a whitespace-only line ends a sentence; a ``-DOCSTART-`` line is passed through as it is.
* ``text``: one sentence per line, split into words as ``Tagger.tag`` splits raw text (:func:`split_words`); a blank
  line is an empty sentence.
* ``jsonl``: one JSON object per line with a ``tokens`` list of words; other keys are kept; a blank line is passed
  through.

Output: CoNLL input and text input give CoNLL (``word<TAB>tag[<TAB>exit layer]``, a blank line after every
sentence, so an empty sentence of a text file is a blank line of its own); JSONL gives the same object plus
``tags`` (and ``exit_layers``), any earlier ``tags``/``exit_layers`` replaced. Lines are read as in training
(:func:`tokexit.data.conll.open_text_lines`: LF, CRLF or CR, plain or gzip, UTF-8); a malformed line raises
:class:`~tokexit.data.conll.DataFormatError` ``PATH:LINE: problem``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from tokexit.data.conll import DataFormatError, open_text_lines

FORMATS = ("conll", "text", "jsonl")
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")
DOCSTART = "-DOCSTART-"
_CONLLU_ID = re.compile(r"\d+(?:-\d+|\.\d+)?")
_SNIFF_LINES = 1000  # lines of the first block that format=auto looks at


def split_words(text: str) -> list[str]:
    """A simple tokenizer for raw text: words (with inner hyphens/apostrophes/dots) and single symbols."""
    return WORD.findall(text)


@dataclass
class Record:
    """One unit of an input file, written back in its place: a sentence to tag (``words``; may be empty), or a
    line passed through untagged (``words`` None: a ``-DOCSTART-`` line, a blank JSONL line)."""

    line: int  # 1-based line of the record's first line in the input
    words: list[str] | None
    source: str | dict | None = None  # a passed-through line, or a JSONL record's object


def detect_format(path: str | os.PathLike) -> str:
    """``jsonl`` for a ``.jsonl``/``.ndjson``/``.json`` name or a first line starting with ``{``; ``conll`` for a
    first line that is ``-DOCSTART-``, holds a TAB, or opens a block of lines with one column count that a blank
    line ends; ``text`` otherwise (CoNLL-U is refused: it has no word in its first column)."""
    name = os.fspath(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    block: list[str] = []  # the first block of non-blank lines
    ended = False  # a blank line ended it
    for _, line in open_text_lines(path):
        if not line.strip():
            ended = bool(block)
            if ended:
                break
            continue
        if not block:
            if line.lstrip().startswith("{"):
                return "jsonl"
            if line.startswith(DOCSTART):
                return "conll"
            if "\t" in line:
                fields = line.split("\t")
                if len(fields) == 10 and _CONLLU_ID.fullmatch(fields[0]):
                    raise DataFormatError(f"{os.fspath(path)}: looks like CoNLL-U, which tokexit.tag does not read "
                                          "(its first column is an ID, not the word): give format=conll to read it "
                                          "as columns anyway")
                return "conll"
        block.append(line)
        if len(block) > _SNIFF_LINES:
            break  # no blank line soon: lines are sentences
    columns = {len(line.split()) for line in block}
    return "conll" if ended and len(block) > 1 and len(columns) == 1 else "text"


def read_records(path: str | os.PathLike, format: str) -> Iterator[Record]:
    """The records of ``path`` in ``format`` (one of :data:`FORMATS`), streamed line by line."""
    readers = {"conll": _conll_records, "text": _text_records, "jsonl": _jsonl_records}
    if format not in readers:
        raise ValueError(f"format must be one of auto|{'|'.join(FORMATS)}, not {format!r}")
    return readers[format](os.fspath(path))


def _conll_records(path: str) -> Iterator[Record]:
    words: list[str] = []
    start = 0
    for lineno, line in open_text_lines(path):
        if not line.strip() or line.startswith(DOCSTART):
            if words:
                yield Record(start, words)
                words = []
            if line.startswith(DOCSTART):
                yield Record(lineno, None, line)
            continue
        if "\t" in line and not line.split("\t", 1)[0].strip():
            raise DataFormatError(f"{path}:{lineno}: empty word (the line starts with a TAB)")
        if not words:
            start = lineno
        words.append(line.split(None, 1)[0])  # a CoNLL word holds no whitespace: the first field is the word
    if words:
        yield Record(start, words)


def _text_records(path: str) -> Iterator[Record]:
    for lineno, line in open_text_lines(path):
        yield Record(lineno, split_words(line))


def _jsonl_records(path: str) -> Iterator[Record]:
    for lineno, line in open_text_lines(path):
        if not line.strip():
            yield Record(lineno, None, line)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{lineno}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(value, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object with a 'tokens' list, found "
                                  f"{type(value).__name__}")
        tokens = value.get("tokens")
        if not isinstance(tokens, list):
            found = "no 'tokens' key" if "tokens" not in value else f"'tokens' is {type(tokens).__name__}"
            raise DataFormatError(f"{path}:{lineno}: expected a 'tokens' list of words, {found}")
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise DataFormatError(f"{path}:{lineno}: token {i} is {type(token).__name__} ({token!r}), not a "
                                      "string")
            if not token.strip():
                raise DataFormatError(f"{path}:{lineno}: token {i} is {token!r}: a word must not be empty or blank")
        yield Record(lineno, tokens, value)


def output_format(format: str) -> str:
    """The output format of an input format: ``jsonl`` stays JSONL, ``conll`` and ``text`` give CoNLL."""
    return "jsonl" if format == "jsonl" else "conll"


def format_record(format: str, record: Record, tags: list[str] | None, layers: list[int] | None,
                  exit_layer: bool) -> str:
    """The output text of one record of an input in ``format``, with its ``tags`` and exit ``layers`` (None for a
    passed-through record); ``exit_layer``: with each word's exit layer."""
    if format == "jsonl":
        if record.words is None:
            return "\n"
        value = {**record.source, "tags": tags}
        if exit_layer:
            value["exit_layers"] = layers
        return json.dumps(value, ensure_ascii=False) + "\n"
    if record.words is None:  # -DOCSTART-
        return f"{record.source}\n\n"
    if exit_layer:
        rows = [f"{w}\t{t}\t{e}\n" for w, t, e in zip(record.words, tags, layers, strict=True)]
    else:
        rows = [f"{w}\t{t}\n" for w, t in zip(record.words, tags, strict=True)]
    return "".join(rows) + "\n"
