"""Readers for sequence-labeling files: CoNLL column files and CoNLL-U (plain or gzip), plus tag schemes.

Pure stdlib. Every format problem raises DataFormatError with a message "PATH:LINE: problem", so a bad
line in a 200k-line file can be found at once.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_SPAN_TAG = re.compile(r"([BIES])-(.+)")
_CONLLU_ID = re.compile(r"\d+(?:-\d+|\.\d+)?")
_DIGITS = "0123456789"
_NEWDOC = re.compile(r"#\s*newdoc\b")

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A malformed data file. The message is "PATH:LINE: problem" (LINE 1-based) or "PATH: problem"."""


@dataclass
class Sentence:
    words: list[str]
    tags: list[str] | None  # None when the file has no label column (unlabelled input)
    line: int  # 1-based line number of the sentence's first word in the file
    # the tags as written in the file when reading changed them (IOB1 converted to BIO), else None
    file_tags: list[str] | None = field(default=None, compare=False, repr=False)
    # 0-based index of the sentence's document in its file: CoNLL files start a new document at each
    # -DOCSTART- line, CoNLL-U files at each "# newdoc" comment; a file without such marks is one document
    document: int = field(default=0, compare=False)


@dataclass
class Corpus:
    path: str
    format: str  # "conll" or "conllu"
    sentences: list[Sentence]
    scheme: str  # tag scheme found in the file: "iob1", "bio" or "none" (not entity tags, e.g. POS)
    label_column: int | None  # conll: column index (>= 0) used for tags; None for conllu/unlabelled
    # how the sentences become model inputs: "sentence" (each alone) or "document" (packed with their
    # document's neighbours, see tokexit.data.encoding); set from the data options, not read from the file
    context: str = "sentence"


# ----------------------------------------------------------------------------- reading lines


# LF, CRLF or a lone CR (old Mac files); CRs right before a LF ("\r\r\n", left by converting line ends twice)
# make a single break, as they always did here
_NEWLINE = re.compile(rb"\r*\n|\r")
_CHUNK = 1 << 16


def _raw_lines(f, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """Split a binary stream into lines on LF, CRLF or a lone CR, reading ``chunk_size`` bytes at a time.

    Lines come without their line break; a last line without one is yielded too, and a final break adds no empty
    line (as when iterating a file). Splitting bytes is safe for UTF-8: CR and LF never occur inside a multi-byte
    character. Other Unicode line separators (U+2028, form feed...) stay inside their line.
    """
    pending: list[bytes] = []  # pieces of a line whose end has not been read yet
    carry = b""  # CRs that ended the previous chunk: a LF may follow them in the next one
    while True:
        chunk = f.read(chunk_size)
        block = carry + chunk
        body = block.rstrip(b"\r") if chunk else block
        carry = block[len(body):]
        parts = _NEWLINE.split(body) if b"\r" in body else body.split(b"\n")  # the common case, faster
        if len(parts) > 1:
            pending.append(parts[0])
            yield b"".join(pending)
            yield from parts[1:-1]
            pending = []
        pending.append(parts[-1])
        if not chunk:
            break
    tail = b"".join(pending)
    if tail:
        yield tail


def open_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line_number, line) pairs, line_number 1-based, line without its line break.

    Lines end with LF, CRLF or a lone CR (old Mac files), even mixed in one file; the file is read in chunks,
    never whole. gzip is recognised by its magic bytes (1f 8b), not by the file name. Lines are decoded as
    UTF-8 and a leading BOM is dropped; undecodable bytes raise DataFormatError naming the path and line.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if is_gzip else open(path, "rb") as f:
        lineno = 0
        try:
            for lineno, raw in enumerate(_raw_lines(f), 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(
                        f"{path}:{lineno}: invalid UTF-8 ({e.reason} at byte {e.start} of the line)"
                    ) from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield lineno, line
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt gzip data after line {lineno} ({e})") from None


def detect_format(path: str | os.PathLike) -> str:
    """Return "conllu" if the first non-blank, non-'#' line has exactly 10 TAB-separated fields and an ID-like
    first field (integer, range "3-4" or decimal "8.1"); otherwise "conll" (also for an empty file)."""
    for _, line in open_text_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        return "conllu" if len(fields) == 10 and _CONLLU_ID.fullmatch(fields[0]) else "conll"
    return "conll"


# ----------------------------------------------------------------------------- CoNLL column files


def _split_fields(line: str, whitespace: bool = False) -> list[str]:
    if "\t" in line and not whitespace:
        return [f.strip(" ") for f in line.split("\t")]
    return line.split()


class _MixedSeparators(Exception):
    """A TAB-separated word line with a space inside a field (raised and handled inside read_conll)."""

    def __init__(self, line: int, value: str):
        self.line, self.value = line, value


def _is_word_line(line: str) -> bool:
    return bool(line.strip()) and not line.startswith("-DOCSTART-")


def _whitespace_columns(path: str) -> tuple[int, tuple[int, int], list[tuple[int, int]]]:
    """Split every word line on any whitespace: (number of TAB lines with spaces inside a field, (line, column
    count) of the first word line, [(line, count)] of the first line with a different count, if any)."""
    mixed, first, other = 0, None, []
    for lineno, line in open_text_lines(path):
        if not _is_word_line(line):
            continue
        if "\t" in line and any(" " in f.strip(" ") for f in line.split("\t")):
            mixed += 1
        n = len(line.split())
        if first is None:
            first = (lineno, n)
        elif n != first[1] and not other:
            other = [(lineno, n)]
    return mixed, first, other


def read_conll(
    path: str | os.PathLike,
    *,
    label_column: int | None = -1,
    word_column: int = 0,
    strip_position_digit: bool = False,
) -> Corpus:
    """Read a CoNLL column file (one token per line, sentences separated by whitespace-only lines).

    Fields are TAB-separated when the line holds a TAB, else whitespace-separated; every word line must have
    the same number of columns. A CoNLL word cannot contain a space, so a TAB-separated field with a space
    inside ("SOCCER NN I-NP<TAB>O") means the file mixes TABs and spaces as separators: if every word line
    then splits into the same number of columns on any whitespace, the whole file is read that way (with a
    warning); otherwise DataFormatError names the line. `label_column` picks the tag column (-1: last; None:
    unlabelled file, tags are None); a file with a single column is read as unlabelled. `-DOCSTART-` lines
    end a sentence and start a new document (``Sentence.document``; a file without them is one
    document, 0). `strip_position_digit` removes the position digits after each character
    (Weibo NER writes a character followed by its position in its word: "科0", "技1", "e12", and "20" for
    the character "2").
    """
    path = os.fspath(path)
    kwargs = dict(label_column=label_column, word_column=word_column, strip_position_digit=strip_position_digit)
    try:
        return _read_conll(path, whitespace=False, **kwargs)
    except _MixedSeparators as mixed:
        count, (line1, n1), other = _whitespace_columns(path)
        where = f"{path}:{mixed.line}: TAB-separated field {mixed.value!r} contains spaces"
        if other:
            line2, n2 = other[0]
            raise DataFormatError(
                f"{where}, but a CoNLL word cannot contain a space: the file mixes TABs and spaces as column "
                f"separators, and splitting on any whitespace does not give one column count either (line "
                f"{line1}: {n1} columns, line {line2}: {n2}). Use one separator throughout, or replace the "
                "spaces inside words (e.g. by '_')"
            ) from None
        log.warning("%s (%d such lines): the file mixes TABs and spaces as column separators; every word line "
                    "splits into %d columns on any whitespace, so the whole file is read that way",
                    where, count, n1)
        return _read_conll(path, whitespace=True, **kwargs)


def _read_conll(path: str, *, label_column: int | None, word_column: int, strip_position_digit: bool,
                whitespace: bool) -> Corpus:
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    ncols = first_line = 0
    first_tabbed = False
    label_idx: int | None = None
    document = 0  # index of the current document; -DOCSTART- lines before any sentence open no new one

    def flush() -> None:
        nonlocal words, tags
        if words:
            sentences.append(Sentence(words, tags if label_idx is not None else None, start, document=document))
            words, tags = [], []

    for lineno, line in open_text_lines(path):
        if not _is_word_line(line):
            flush()
            if line.startswith("-DOCSTART-") and sentences and sentences[-1].document == document:
                document += 1  # empty documents (repeated -DOCSTART- lines) take no index
            continue
        fields = _split_fields(line, whitespace)
        tabbed = "\t" in line and not whitespace
        if tabbed:
            spaced = next((f for f in fields if " " in f), None)
            if spaced is not None:
                raise _MixedSeparators(lineno, spaced)
        if not ncols:  # first word line fixes the layout
            ncols, first_line, first_tabbed = len(fields), lineno, tabbed
            if label_column is not None and not (label_column == -1 and ncols == 1):
                if not -ncols <= label_column < ncols:
                    raise DataFormatError(
                        f"{path}:{lineno}: label column {label_column} out of range for {ncols} columns"
                    )
                label_idx = label_column % ncols
            if not -ncols <= word_column < ncols:
                raise DataFormatError(
                    f"{path}:{lineno}: word column {word_column} out of range for {ncols} columns"
                )
        elif len(fields) != ncols:
            seps = "" if tabbed == first_tabbed else (
                f"; line {first_line} is {'TAB' if first_tabbed else 'space'}-separated, this line "
                f"{'TAB' if tabbed else 'space'}-separated")
            raise DataFormatError(
                f"{path}:{lineno}: expected {ncols} columns (as on line {first_line}), found {len(fields)}{seps}"
            )
        word = fields[word_column]
        if not word:
            raise DataFormatError(f"{path}:{lineno}: empty word")
        if strip_position_digit:
            word = word[0] if word[1:].isdigit() else word.rstrip(_DIGITS) or word
        if label_idx is not None:
            if not fields[label_idx]:
                raise DataFormatError(f"{path}:{lineno}: empty label")
            tags.append(fields[label_idx])
        if not words:
            start = lineno
        words.append(word)
    flush()
    scheme = detect_scheme(s.tags for s in sentences) if label_idx is not None else "none"
    return Corpus(path, "conll", sentences, scheme, label_idx)


# ----------------------------------------------------------------------------- CoNLL-U


def read_conllu(path: str | os.PathLike, *, tagset: str = "upos") -> Corpus:
    """Read a CoNLL-U file; tags are UPOS (column 4) or XPOS (column 5). Comments, multiword-token lines
    ("3-4") and empty nodes ("8.1") are skipped; a "# newdoc" comment starts a new document
    (``Sentence.document``)."""
    if tagset not in ("upos", "xpos"):
        raise ValueError(f"tagset must be 'upos' or 'xpos', not {tagset!r}")
    path = os.fspath(path)
    col = 3 if tagset == "upos" else 4
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    document = 0
    for lineno, line in open_text_lines(path):
        if not line.strip():
            if words:
                sentences.append(Sentence(words, tags, start, document=document))
                words, tags = [], []
            continue
        if line.startswith("#"):
            if _NEWDOC.match(line) and sentences and sentences[-1].document == document:
                document += 1
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataFormatError(f"{path}:{lineno}: expected 10 TAB-separated fields, found {len(fields)}")
        if not _CONLLU_ID.fullmatch(fields[0]):
            raise DataFormatError(f"{path}:{lineno}: bad ID {fields[0]!r}")
        if not fields[0].isdigit():  # multiword token or empty node
            continue
        if not fields[1]:
            raise DataFormatError(f"{path}:{lineno}: empty word")
        tag = fields[col]
        if tag in ("", "_"):
            raise DataFormatError(f"{path}:{lineno}: empty {tagset.upper()} tag {tag!r}")
        if not words:
            start = lineno
        words.append(fields[1])
        tags.append(tag)
    if words:
        sentences.append(Sentence(words, tags, start, document=document))
    return Corpus(path, "conllu", sentences, detect_scheme(s.tags for s in sentences), None)


def read_corpus(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    label_column: int | None = -1,
    tagset: str = "upos",
    strip_position_digit: bool = False,
    to_bio: bool = True,
) -> Corpus:
    """Read a CoNLL or CoNLL-U file (format "auto" detects which). With `to_bio`, IOB1 tags are converted to
    BIO; corpus.scheme keeps saying "iob1" so predictions can be converted back with bio_to_iob1, and the
    sentences whose tags changed keep the file's own in `file_tags` (for messages about the file)."""
    if format == "auto":
        format = detect_format(path)  # raises FileNotFoundError for a missing file
    if format == "conll":
        corpus = read_conll(path, label_column=label_column, strip_position_digit=strip_position_digit)
    elif format == "conllu":
        corpus = read_conllu(path, tagset=tagset)
    else:
        raise ValueError(f"format must be 'auto', 'conll' or 'conllu', not {format!r}")
    if to_bio and corpus.scheme == "iob1":
        for s in corpus.sentences:
            bio = iob1_to_bio(s.tags)
            if bio != s.tags:
                s.file_tags, s.tags = s.tags, bio
    return corpus


# ----------------------------------------------------------------------------- tag schemes


def _entity_type(tag: str) -> str | None:
    """X for "B-X"/"I-X", else None."""
    return tag[2:] if tag[:2] in ("B-", "I-") else None


def detect_scheme(tag_seqs: Iterable[list[str]]) -> str:
    """Tag scheme of labelled sentences: "none", "iob1" or "bio".

    "none": some tag is neither "O" nor "B-X"/"I-X"/"E-X"/"S-X" (POS tags, unprefixed chunk tags), or no
    tag is a span tag (empty input, all "O"). "iob1": entities mostly start with I-X (at sentence start, after
    O or after another type), i.e. more entity starts are I-X than B-X. In clean IOB1 every B-X follows a
    B-X/I-X of its own type; the majority vote also survives annotation slips (CoNLL-2003 eng.train has two
    B-MISC right after O). Otherwise "bio".
    """
    spans = False
    i_starts = b_starts = 0  # entities whose first tag is I-X / B-X
    for tags in tag_seqs:
        prev_type = None
        for tag in tags:
            if tag != "O":
                m = _SPAN_TAG.fullmatch(tag)
                if m is None:
                    return "none"
                spans = True
                prefix, typ = m.groups()
                if prefix == "I" and prev_type != typ:
                    i_starts += 1
                elif prefix == "B" and prev_type != typ:
                    b_starts += 1
            prev_type = _entity_type(tag)
    if not spans:
        return "none"
    return "iob1" if i_starts > b_starts else "bio"


def iob1_to_bio(tags: list[str]) -> list[str]:
    """IOB1 -> BIO: an I-X that starts an entity (not after B-X/I-X of the same type) becomes B-X."""
    out, prev_type = [], None
    for tag in tags:
        typ = _entity_type(tag)
        out.append("B-" + typ if tag.startswith("I-") and typ != prev_type else tag)
        prev_type = typ
    return out


def bio_to_iob1(tags: list[str]) -> list[str]:
    """BIO -> IOB1: B-X becomes I-X unless the previous tag is B-X/I-X of the same type."""
    out, prev_type = [], None
    for tag in tags:
        typ = _entity_type(tag)
        out.append("I-" + typ if tag.startswith("B-") and typ != prev_type else tag)
        prev_type = typ
    return out


def detect_task(labels: Iterable[str]) -> str:
    """Return "ner" (span F1) when every label is "O" or [BIES]-X and at least one is a span tag, else
    "tagging" (per-token accuracy)."""
    labels = list(labels)
    if any(t != "O" and not _SPAN_TAG.fullmatch(t) for t in labels):
        return "tagging"
    return "ner" if any(t != "O" for t in labels) else "tagging"
