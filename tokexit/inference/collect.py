"""From batches back to per-sentence (or per-example) predictions, the same for every run mode: training's
validation and test, evaluation, the API.

An input predicts only the words it owns, so every word of every sentence is predicted exactly once; under DDP the
collected tables of all ranks are merged and de-duplicated (the distributed sampler repeats samples to even out
ranks), so a score never counts a word twice.
"""

from __future__ import annotations

import torch

from tokexit.data.conll import Corpus


class PredictionCollector:
    """Collects, per owned word, ``(sentence_id, word_index, column_0, column_1, ...)`` rows."""

    def __init__(self):
        self.parts: list[torch.Tensor] = []

    def add(self, batch: dict[str, torch.Tensor], columns: torch.Tensor) -> None:
        """``columns`` (K, N): K values for each of the batch's N words (row-major over ``word_positions``),
        e.g. the prediction of every exit layer."""
        rows, cols = torch.nonzero(batch["word_positions"] >= 0, as_tuple=True)
        owned = batch["owned"][rows, cols]
        if "word_sentence" in batch:  # (B, W) per word: inputs may pack several sentences (data.context=document)
            sid, widx = batch["word_sentence"][rows, cols], batch["word_index"][rows, cols]
        else:
            sid, widx = batch["sentence_id"][rows], batch["word_offset"][rows] + cols
        table = torch.cat([sid[None], widx[None], columns.to(sid.device).long()], dim=0)[:, owned]
        self.parts.append(table.T.cpu())

    def table(self) -> torch.Tensor:
        """(N_words, 2 + K) rows collected so far (possibly with duplicates across ranks)."""
        return torch.cat(self.parts) if self.parts else torch.zeros((0, 0), dtype=torch.long)

    def reset(self) -> None:
        self.parts = []


def gather_tables(table: torch.Tensor) -> torch.Tensor:
    """Concatenate the tables of all DDP ranks (no-op without torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return table
    tables: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(tables, table)
    return torch.cat([t for t in tables if t.numel()])


def unique_examples(table: torch.Tensor) -> torch.Tensor:
    """(N, K) rows keyed by an example index in column 0 -> one row per index, sorted by it (the DDP sampler
    repeats examples across ranks; duplicates carry identical values)."""
    index, slot = torch.unique(table[:, 0].long(), return_inverse=True)
    rows = torch.zeros((len(index), table.shape[1]), dtype=table.dtype)
    rows[slot] = table
    return rows


def per_sentence(table: torch.Tensor, corpus: Corpus) -> list[torch.Tensor]:
    """De-duplicate and sort rows by (sentence, word); return one (K, n_words) tensor per sentence.

    Raises if any word of the corpus has no prediction: nothing may be dropped silently.
    """
    n_sent = len(corpus.sentences)
    if n_sent == 0:
        return []
    max_words = max(len(s.words) for s in corpus.sentences)
    key = table[:, 0] * (max_words + 1) + table[:, 1]
    key, slot = torch.unique(key, return_inverse=True)
    rows = torch.zeros((len(key), table.shape[1]), dtype=table.dtype)
    rows[slot] = table  # duplicates land on the same slot and carry identical values
    lengths = torch.bincount(rows[:, 0], minlength=n_sent).tolist()
    expected = [len(s.words) for s in corpus.sentences]
    if lengths != expected:
        bad = next(i for i, (a, b) in enumerate(zip(lengths, expected, strict=True)) if a != b)
        raise RuntimeError(
            f"{corpus.path}: sentence {bad} (line {corpus.sentences[bad].line}) has {expected[bad]} words but "
            f"{lengths[bad]} predictions"
        )
    return list(torch.split(rows[:, 2:].T, lengths, dim=1))
