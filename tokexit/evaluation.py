"""From window batches to per-sentence predictions and scores, the same for every method and every run mode.

Each window predicts only the words it owns, so every word of every sentence is predicted exactly once; under
DDP the collected tables of all ranks are merged and de-duplicated (the distributed sampler repeats samples
to even out ranks), so a score never counts a word twice.
"""

from __future__ import annotations

import warnings

import torch
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

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
        sid = batch["sentence_id"][rows]
        widx = batch["word_offset"][rows] + cols
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


def score(gold: list[list[str]], pred: list[list[str]], task: str) -> dict[str, float]:
    """Entity precision/recall/F1 (conlleval-compatible seqeval) for ``ner``; accuracy for ``tagging``."""
    if task == "ner":
        warnings.filterwarnings("ignore", module="seqeval")  # "ill-defined" warnings when nothing is predicted
        return {
            "f1": 100 * float(f1_score(gold, pred)),
            "precision": 100 * float(precision_score(gold, pred)),
            "recall": 100 * float(recall_score(gold, pred)),
        }
    return {"accuracy": 100 * float(accuracy_score(gold, pred))}


def main_metric(task: str) -> str:
    return "f1" if task == "ner" else "accuracy"


def score_layers(corpus: Corpus, labels: list[str], task: str, predictions: list[torch.Tensor]) -> list[dict]:
    """Scores of every exit layer. ``predictions``: per sentence, (L, n_words) label ids."""
    gold = [s.tags for s in corpus.sentences]
    num_layers = predictions[0].shape[0] if predictions else 0
    return [
        score(gold, [[labels[k] for k in p[layer].tolist()] for p in predictions], task)
        for layer in range(num_layers)
    ]


def classification_scores(gold: list, pred: list, task) -> dict[str, float]:
    """Scores of a sentence(-pair) task (×100): accuracy, F1 of the positive class (macro F1 with more than two
    classes) and Matthews correlation; Pearson and Spearman correlations for regression. ``task`` is a
    :class:`tokexit.data.classification.ClassificationTask`; ``gold``/``pred`` are class ids or values."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score as sk_f1
    from sklearn.metrics import matthews_corrcoef

    if len(gold) == 0:
        return {}
    if task.regression:
        if len(gold) < 2:
            return {"pearson": float("nan"), "spearman": float("nan")}
        return {"pearson": 100 * float(pearsonr(pred, gold)[0]), "spearman": 100 * float(spearmanr(pred, gold)[0])}
    correct = sum(int(g == p) for g, p in zip(gold, pred, strict=True))
    positive = task.positive_label if task.positive_label is not None else ("1" if "1" in task.labels else None)
    if len(task.labels) == 2 and positive in task.to_id:
        f1 = sk_f1(gold, pred, pos_label=task.to_id[positive], average="binary", zero_division=0)
    else:
        f1 = sk_f1(gold, pred, average="macro", zero_division=0)
    return {"accuracy": 100 * correct / len(gold), "f1": 100 * float(f1),
            "mcc": 100 * float(matthews_corrcoef(gold, pred))}
