"""Reader for sentence(-pair) classification and regression TSV files in the original GLUE format.

Pure stdlib. Fields are split on TABs only (csv.QUOTE_NONE: texts contain literal '"'), a leading UTF-8 BOM is
dropped, and every format problem raises DataFormatError with a message "PATH:LINE: problem".
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from tokexit.data.conll import DataFormatError


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
    line before the last row is an error. A file with a header and no rows gives [].
    """
    path = os.fspath(path)
    names = [c for c in (columns.text_a, columns.text_b, columns.label) if c is not None]
    has_header = columns.header if columns.header is not None else any(isinstance(c, str) for c in names)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [(reader.line_num, row) for row in reader]
    while rows and not any(field.strip() for field in rows[-1][1]):
        rows.pop()  # trailing blank lines
    header = None
    if has_header:
        if not rows:
            raise DataFormatError(f"{path}: empty file, expected a header row")
        header = [name.strip() for name in rows.pop(0)[1]]
    a = _resolve(path, header, columns.text_a, optional=False)
    b = _resolve(path, header, columns.text_b, optional=False)
    y = _resolve(path, header, columns.label, optional=label_optional)
    needed = max(i for i in (a, b, y) if i is not None) + 1

    examples = []
    for line, row in rows:
        if not any(field.strip() for field in row):
            raise DataFormatError(f"{path}:{line}: blank line between rows")
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
        examples.append(Example(text_a, text_b, label, line))
    return examples


def label_inventory(examples: list[Example]) -> list[str]:
    """The sorted distinct class labels; ValueError if an example has no label or a regression (float) label."""
    for ex in examples:
        if not isinstance(ex.label, str):
            raise ValueError(f"example at line {ex.line} has no class label (label={ex.label!r})")
    return sorted({ex.label for ex in examples})
