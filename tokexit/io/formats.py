"""The files ``tokexit.tag`` reads and writes, record by record (a record: a sentence, or a line passed through).

Input formats (``format=``):

* ``conll``: one word per line, the word in the first column (any other columns, e.g. gold labels, are ignored;
  on a line with a TAB the columns are TAB-separated, so the word is everything before the first TAB); a
  whitespace-only line ends a sentence; a ``-DOCSTART-`` line is passed through as it is.
* ``conllu``: CoNLL-U (Universal Dependencies), the word in the FORM column; comments, multiword-token lines
  (``3-4``) and empty nodes (``8.1``) are skipped (the words are the syntactic words, as in training).
* ``text``: one sentence per line, split into words as ``Tagger.tag`` splits raw text (:func:`split_words`); a blank
  line is an empty sentence.
* ``jsonl``: one JSON object per line with a ``tokens`` list of words; other keys are kept; a blank line is passed
  through.

Output: CoNLL, CoNLL-U and text input give CoNLL (``word<TAB>tag[<TAB>exit layer]``, a blank line after every
sentence, so an empty sentence of a text file is a blank line of its own); JSONL gives the same object plus
``tags`` (and ``exit_layers``; without them any earlier ``exit_layers`` is removed), any earlier ``tags`` replaced.
Lines are read as in training (:func:`tokexit.data.conll.open_text_lines`: LF, CRLF or CR, plain or gzip, UTF-8); a
malformed line raises :class:`~tokexit.data.conll.DataFormatError` ``PATH:LINE: problem``.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from tokexit.data.conll import DataFormatError, open_text_lines

FORMATS = ("conll", "conllu", "text", "jsonl")
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")
DOCSTART = "-DOCSTART-"
_CONLLU_ID = re.compile(r"\d+(?:-\d+|\.\d+)?")
_TAG = re.compile(r"O|[BIESLU][-_]\S+")  # a BIO/BIOES tag: what a label column of a CoNLL file looks like
_SNIFF_LINES = 1000  # non-blank lines that format=auto looks at
_INVISIBLE_SPACE = re.compile("[\u200b\ufeff]")  # zero-width (no-break) spaces: word boundaries, not words
_JOINERS = frozenset("\u200c\u200d\u00ad\u2060")  # ZWNJ, ZWJ, soft hyphen, word joiner: the next piece continues


def _attaches(ch: str) -> bool:
    """Whether ``ch`` belongs to the character before it: a combining mark (accents stored apart, Indic vowel signs,
    variation selectors), an emoji skin-tone modifier, a tag character or a joiner."""
    return unicodedata.category(ch) in ("Mn", "Mc", "Me") or "\U0001f3fb" <= ch <= "\U0001f3ff" or \
        "\U000e0020" <= ch <= "\U000e007f" or ch in _JOINERS


def _regional(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"  # flag letters: a flag is a pair of them


def split_words(text: str) -> list[str]:
    """A simple tokenizer for raw text: words (with inner hyphens/apostrophes/dots) and single symbols.

    What a reader sees as one character stays in one word: combining marks (``"Sa\u0303o"``, Devanagari vowel
    signs), joiners and soft hyphens (``"Ber\u00adlin"``), variation selectors, skin tones, emoji ZWJ sequences and
    flags (a pair of regional indicators). Zero-width spaces separate words like spaces. No character other than
    whitespace and zero-width spaces is dropped."""
    text = _INVISIBLE_SPACE.sub(" ", text)
    words: list[str] = []
    end = -1  # where the last word ended
    for match in WORD.finditer(text):
        piece, start = match.group(), match.start()
        if words and start == end:
            last = words[-1]
            if (_attaches(piece[0]) or (_attaches(last[-1]) and (last[-1] in _JOINERS or piece[0].isalnum()))
                    or (_regional(piece) and len(last) == 1 and _regional(last))):
                words[-1] = last + piece
                end = match.end()
                continue
        words.append(piece)
        end = match.end()
    return words


@dataclass
class Record:
    """One unit of an input file, written back in its place: a sentence to tag (``words``; may be empty), or a
    line passed through untagged (``words`` None: a ``-DOCSTART-`` line, a blank JSONL line)."""

    line: int  # 1-based line of the record's first line in the input
    words: list[str] | None
    source: str | dict | None = None  # a passed-through line, or a JSONL record's object


def detect_format(path: str | os.PathLike) -> str:
    """The input format of ``path`` (``format=auto``), or DataFormatError where it cannot be told safely.

    By name: ``.jsonl``/``.ndjson``/``.json`` -> ``jsonl``, ``.conllu`` -> ``conllu``. By content (the first
    :data:`_SNIFF_LINES` non-blank lines): a first line starting with ``{`` -> ``jsonl``, or ``-DOCSTART-`` ->
    ``conll``; a CoNLL-U token line (10 TAB-separated fields, an ID first) -> ``conllu``. Then a ``.conll``,
    ``.iob`` or ``.bio`` name -> ``conll``. Otherwise the columns decide: every line with a TAB and one field count
    -> ``conll``; one word per line in blank-line-separated blocks -> ``conll``;
    one count of two or more space-separated fields -> ``conll`` where the last column looks like labels (BIO tags,
    or a few values repeated in a blank-line-separated file), ``text`` for a single line, and an error asking for
    ``format=`` otherwise (two lines of two words each could be either, and guessing wrong would drop or invent
    words). Lines of different lengths -> ``text``."""
    name = os.fspath(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".conllu"):
        return "conllu"
    lines: list[str] = []  # the first non-blank lines
    blank = False  # a blank line separates two of them
    block = longest = 0  # lines in the current block, in the longest one
    for _, line in open_text_lines(path):
        if not line.strip():
            blank, block = blank or bool(lines), 0
            continue
        if not lines:
            if line.lstrip().startswith("{"):
                return "jsonl"
            if line.startswith(DOCSTART):
                return "conll"
        fields = line.split("\t")
        if len(fields) == 10 and _CONLLU_ID.fullmatch(fields[0]):
            return "conllu"
        lines.append(line)
        block += 1
        longest = max(longest, block)
        if len(lines) >= _SNIFF_LINES:
            break
    if name.endswith((".conll", ".iob", ".bio")):
        return "conll"  # named as columns, and not JSON or CoNLL-U
    tabbed = bool(lines) and all("\t" in line for line in lines)
    rows = [line.split("\t") if tabbed else line.split() for line in lines]
    counts = {len(row) for row in rows}
    if len(counts) != 1:
        return "text"  # lines of different lengths (or an empty file)
    if tabbed:
        return "conll"
    if counts == {1}:
        return "conll" if blank and longest > 1 else "text"
    last = [row[-1] for row in rows]
    if sum(bool(_TAG.fullmatch(v)) for v in last) * 2 >= len(last) or \
            blank and len(last) >= 4 and len(set(last)) * 2 <= len(last):
        return "conll"
    if len(lines) == 1:
        return "text"
    raise DataFormatError(f"{os.fspath(path)}: cannot tell whether this is CoNLL columns (the word first, one per "
                          f"line) or text (a sentence per line): every line has {counts.pop()} words and none looks "
                          "like a label column. Give format=conll or format=text")


def read_records(path: str | os.PathLike, format: str) -> Iterator[Record]:
    """The records of ``path`` in ``format`` (one of :data:`FORMATS`), streamed line by line."""
    readers = {"conll": _conll_records, "conllu": _conllu_records, "text": _text_records, "jsonl": _jsonl_records}
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
        if "\t" in line:  # TAB-separated columns (as training reads them): the word is the first field
            word = line.split("\t", 1)[0].strip(" ")
            if not word.strip():
                raise DataFormatError(f"{path}:{lineno}: empty word (the line starts with a TAB)")
            if " " in word:
                raise DataFormatError(f"{path}:{lineno}: the word column {word!r} holds a space, but a CoNLL word "
                                      "cannot contain one: the file mixes TABs and spaces as column separators. "
                                      "Use one separator throughout (or '_' inside words)")
        else:
            word = line.split(None, 1)[0]  # whitespace-separated columns: the first is the word
        if not words:
            start = lineno
        words.append(word)
    if words:
        yield Record(start, words)


def _conllu_records(path: str) -> Iterator[Record]:
    words: list[str] = []
    start = 0
    for lineno, line in open_text_lines(path):
        if not line.strip():
            if words:
                yield Record(start, words)
                words = []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10 or not _CONLLU_ID.fullmatch(fields[0]):
            found = f"bad ID {fields[0]!r}" if len(fields) == 10 else f"{len(fields)} fields"
            raise DataFormatError(f"{path}:{lineno}: not a CoNLL-U token line (10 TAB-separated fields, an ID "
                                  f"first): {found}")
        if not fields[0].isdigit():  # a multiword token ("3-4") or an empty node ("8.1")
            continue
        if not fields[1].strip():
            raise DataFormatError(f"{path}:{lineno}: empty word (FORM column)")
        if not words:
            start = lineno
        words.append(fields[1])
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
            if not token.isascii() and not is_text(token):
                raise DataFormatError(f"{path}:{lineno}: token {i} is {token!r}: it holds a lone surrogate "
                                      "(an unpaired \\ud800-\\udfff escape), which is not text")
        yield Record(lineno, tokens, value)


def is_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode text (no lone surrogates, which JSON escapes can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def output_format(format: str) -> str:
    """The output format of an input format: ``jsonl`` stays JSONL, ``conll``, ``conllu`` and ``text`` give
    CoNLL."""
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
        else:
            value.pop("exit_layers", None)  # an earlier run's layers would no longer match the tags
        return json.dumps(value, ensure_ascii=False) + "\n"
    if record.words is None:  # -DOCSTART-
        return f"{record.source}\n\n"
    if exit_layer:
        rows = [f"{w}\t{t}\t{e}\n" for w, t, e in zip(record.words, tags, layers, strict=True)]
    else:
        rows = [f"{w}\t{t}\n" for w, t in zip(record.words, tags, strict=True)]
    return "".join(rows) + "\n"
