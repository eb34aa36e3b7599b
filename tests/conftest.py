"""Shared fixtures: small synthetic labeling files (written per test into tmp_path) and paths to ../shared."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "berlin", "oslo", "lima", "quito"]
FILLER = ["the", "a", "went", "to", "saw", "in", "and", "with", "today", "."]


def synthetic_sentences(n: int, seed: int, max_words: int = 12) -> list[list[tuple[str, str]]]:
    """A learnable toy NER task: names are PER (two-word names B-PER I-PER), cities are LOC."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words: list[tuple[str, str]] = []
        while len(words) < rng.randint(3, max_words):
            r = rng.random()
            if r < 0.2:
                words += [(rng.choice(PEOPLE), "B-PER")] + ([(rng.choice(PEOPLE), "I-PER")] if r < 0.05 else [])
            elif r < 0.35:
                words.append((rng.choice(PLACES), "B-LOC"))
            else:
                words.append((rng.choice(FILLER), "O"))
        sentences.append(words)
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]], sep: str = "\t") -> Path:
    path.write_text("".join("".join(f"{w}{sep}{t}\n" for w, t in s) + "\n" for s in sentences), encoding="utf-8")
    return path


@pytest.fixture
def ner_files(tmp_path: Path) -> dict[str, Path]:
    """train (200 sentences), validation (41) and test (37: odd, so a 2-rank sampler must pad) files."""
    return {
        "train": write_conll(tmp_path / "train.txt", synthetic_sentences(200, seed=1)),
        "validation": write_conll(tmp_path / "dev.txt", synthetic_sentences(41, seed=2)),
        "test": write_conll(tmp_path / "test.txt", synthetic_sentences(37, seed=3)),
    }


def shared(relative: str) -> Path:
    """A file under ../shared/data, or skip the test with a reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is only on the project's machines)")
    return path


def read_predictions(path: Path) -> list[list[list[str]]]:
    """A predictions file (one TAB-separated word per line, a blank line after every sentence) as rows per sentence."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            current.append(line.split("\t"))
        else:
            sentences.append(current)
            current = []
    return sentences


@pytest.fixture(autouse=True)
def packed_layers(monkeypatch):
    """Tests' batches are tiny, and the engine computes blocks of at most ``halting.DENSE_ROWS`` token slots whole;
    the tests exercise the packed gather/scatter path instead (tests/test_dense_blocks.py checks that the two
    agree, with the engine's own threshold)."""
    from tokexit.engine import halting

    monkeypatch.setattr(halting, "DENSE_ROWS", 0)
