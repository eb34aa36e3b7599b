"""Scores of predictions, the same for training, evaluation and the scripts: entity F1 or accuracy for taggers,
accuracy/F1/MCC or correlations for sentence(-pair) tasks (all ×100)."""

from __future__ import annotations

import warnings

import torch
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

from tokexit.data.conll import Corpus


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
    """The metric that selects and summarises a tagger of ``task`` (``ner`` or ``tagging``)."""
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
