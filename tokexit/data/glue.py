"""Reader for sentence(-pair) classification and regression TSV files in the original GLUE format.

Pure stdlib. Lines are read like CoNLL files (:func:`tokexit.data.conll.open_text_lines`: LF, CRLF or lone CR line
ends, plain or gzip, streamed, invalid UTF-8 reported with its line); fields are split on TABs only (csv.QUOTE_NONE:
texts contain literal '"'), a leading UTF-8 BOM is dropped, and every format problem raises DataFormatError with a
message "PATH:LINE: problem".
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from tokexit.data.conll import DataFormatError, open_text_lines


@dataclass
class Example:
    text_a: str
    text_b: str | None  # None for single-sentence tasks
    label: str | float | None  # str class name; float for regression; None when the file has no label column
    line: int  # 1-based line number in the file


@dataclass
class TsvColumns:
    """Which columns hold the texts and the label: header names (str) or 0-based indices (int)."""

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    header: bool | None = None  # None: the file has a header iff the columns are given by name


def _resolve(path: str, header: list[str] | None, column: str | int | None, optional: bool) -> int | None:
    """Turn a column name into its index in the header (None if optional and absent); pass indices through."""
    if column is None or isinstance(column, int):
        return column
    if header is None:
        raise ValueError(f"column {column!r} is given by name but header=False")
    if column in header:
        return header.index(column)
    if optional:
        return None
    raise DataFormatError(f"{path}:1: no column {column!r} in the header (found: {', '.join(header)})")


def read_tsv(
    path: str | Path, columns: TsvColumns, regression: bool = False, label_optional: bool = True
) -> list[Example]:
    """Read a GLUE-style TSV file into Examples (texts stripped of surrounding whitespace).

    A named label column missing from the header makes the file unlabelled (label=None everywhere) when
    label_optional is True (GLUE test files), an error otherwise. Trailing blank lines are ignored; a blank
    line before the last row is an error. A file with a header and no rows gives []. The file is streamed.
    """
    path = os.fspath(path)
    names = [c for c in (columns.text_a, columns.text_b, columns.label) if c is not None]
    has_header = columns.header if columns.header is not None else any(isinstance(c, str) for c in names)
    header = None
    a = b = y = None
    needed = 0
    examples = []
    blank = None  # line of the first blank line after the last row so far: an error if another row follows
    seen = False  # a header or a row was read
    for line, row in _rows(path):
        if not any(field.strip() for field in row):
            blank = blank or line
            continue
        if blank is not None:
            raise DataFormatError(f"{path}:{blank}: blank line {'between rows' if seen else 'before the first row'}")
        seen = True
        if header is None and has_header:
            header = [name.strip() for name in row]
            continue
        if needed == 0:
            a, b, y, needed = _layout(path, header, columns, label_optional)
        examples.append(_example(path, line, row, a, b, y, needed, regression))
    if has_header and header is None:
        raise DataFormatError(f"{path}: empty file, expected a header row")
    if needed == 0:  # no rows: still check that the header names the columns
        _layout(path, header, columns, label_optional)
    return examples


def _rows(path: str):
    """(line, fields) of every line, split on TABs with csv.QUOTE_NONE; csv errors name the line."""
    numbered = open_text_lines(path)
    current = [0]

    def lines():
        for lineno, text in numbered:
            current[0] = lineno
            yield text

    reader = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        for row in reader:
            yield current[0], row
    except csv.Error as e:
        raise DataFormatError(f"{path}:{current[0]}: {e}") from None


def _layout(path: str, header: list[str] | None, columns: TsvColumns, label_optional: bool):
    """Column indices of text_a, text_b and the label (None: absent) and the number of fields a row needs."""
    a = _resolve(path, header, columns.text_a, optional=False)
    b = _resolve(path, header, columns.text_b, optional=False)
    y = _resolve(path, header, columns.label, optional=label_optional)
    return a, b, y, max(i for i in (a, b, y) if i is not None) + 1


def _example(path: str, line: int, row: list[str], a: int, b: int | None, y: int | None, needed: int,
             regression: bool) -> Example:
    if len(row) < needed:
        raise DataFormatError(f"{path}:{line}: expected at least {needed} tab-separated fields, found {len(row)}")
    text_a = row[a].strip()
    text_b = row[b].strip() if b is not None else None
    if not text_a or text_b == "":
        raise DataFormatError(f"{path}:{line}: empty text_{'a' if not text_a else 'b'}")
    label: str | float | None = None
    if y is not None:
        label = row[y].strip()
        if not label:
            raise DataFormatError(f"{path}:{line}: empty label")
        if regression:
            try:
                label = float(label)
            except ValueError:
                raise DataFormatError(f"{path}:{line}: label {row[y]!r} is not a number") from None
            if not math.isfinite(label):
                raise DataFormatError(f"{path}:{line}: label {row[y]!r} is not a finite number")
    return Example(text_a, text_b, label, line)


def label_inventory(examples: list[Example]) -> list[str]:
    """The sorted distinct class labels; ValueError if an example has no label or a regression (float) label."""
    for ex in examples:
        if not isinstance(ex.label, str):
            raise ValueError(f"example at line {ex.line} has no class label (label={ex.label!r})")
    return sorted({ex.label for ex in examples})
