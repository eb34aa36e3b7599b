"""Sentence(-pair) classification and regression: a classifier predicts a label or a value for every example;
files are TSV (the GLUE layout), scored by accuracy/F1/MCC or Pearson/Spearman; predictions are written one line
per example in input order (label or value, exit layer)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from tokexit.data.classification import ClassificationTask, encode_examples, sorted_example_loader
from tokexit.data.glue import TsvColumns, read_tsv
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.inference.classification import ExampleBatches
from tokexit.inference.runs import Run
from tokexit.reporting.scores import classification_scores
from tokexit.tasks.base import EvalFile

COLUMN_KEYS = ("text_a", "text_b", "label", "header")


@dataclasses.dataclass
class ExampleFile(EvalFile):
    gold: list | None  # class ids or values, in input order (None: unlabelled)


class Classification:
    """A multi-exit classifier (:class:`~tokexit.engine.classifier.MultiExitClassifier`) and its
    :class:`ClassificationTask`; ``pooling`` is the classifier's (what :meth:`build` gives a loaded model)."""

    kind = "sequence_classifier"
    labels_type = ClassificationTask
    items = unit = "examples"
    verbs = ("classify", "classified")
    gold_name = "labels"
    predictions_file = "predictions.tsv"

    def __init__(self, labels: ClassificationTask, pooling: str = "cls"):
        self.labels, self.pooling = labels, pooling

    @property
    def name(self) -> str:
        return self.labels.task

    @property
    def metric(self) -> str:
        return self.labels.metric

    @classmethod
    def from_meta(cls, meta: dict) -> Classification:
        return cls(ClassificationTask.from_dict(meta), meta.get("pooling", "cls"))

    def model_meta(self, model: MultiExitClassifier) -> dict:
        return {**self.labels.to_dict(), "pooling": model.pooler.mode}

    def build(self, backbone: nn.Module) -> MultiExitClassifier:
        return MultiExitClassifier(backbone, self.labels.num_outputs, pooling=self.pooling)

    def heads(self, model: MultiExitClassifier) -> dict[str, nn.Module]:
        return {"exits.": model.exits, "pooler.": model.pooler}

    def columns(self, options: Mapping) -> TsvColumns:
        """The TSV layout: from a classification data config when one is given, else the model's own."""
        if "text_a" in options:
            return TsvColumns(**{k: options.get(k) for k in COLUMN_KEYS})
        if not self.labels.columns:
            raise ValueError("the model does not record its TSV layout: give data=sst2|mrpc|rte|stsb|cola or "
                             "data.text_a=…")
        return TsvColumns(**self.labels.columns)

    def reader(self, options: Mapping, tokenizer, batch_size: int, max_length: int) -> Callable[[str], ExampleFile]:
        columns = self.columns(options)

        def read(path: str) -> ExampleFile:
            examples = read_tsv(path, columns, regression=self.labels.regression)
            labelled = bool(examples) and examples[0].label is not None
            rows = encode_examples(examples, tokenizer, self.labels if labelled else None, max_length, path)
            loader = sorted_example_loader(rows, batch_size, tokenizer.pad_token_id)
            gold = [r["target"] for r in rows] if labelled else None
            return ExampleFile(path, loader, labelled, {"examples": len(examples)}, {}, gold)

        return read

    def batches(self, data: ExampleFile) -> ExampleBatches:
        return ExampleBatches(data.counts["examples"], self.labels.regression)

    def scores(self, data: ExampleFile, predictions: torch.Tensor) -> dict[str, float]:
        pred = predictions.tolist() if self.labels.regression else predictions.long().tolist()
        return classification_scores(data.gold, pred, self.labels)

    def format(self, value: float) -> str:
        """A prediction as written: the value (regression) or the class name."""
        return f"{value:.4f}" if self.labels.regression else self.labels.labels[int(value)]

    def write_tsv(self, path: Path, values: torch.Tensor, exit_layers: torch.Tensor) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for value, layer in zip(values.tolist(), exit_layers.tolist(), strict=True):
                f.write(f"{self.format(value)}\t{int(layer)}\n")

    def write_predictions(self, path: Path, data: ExampleFile, run: Run | None, exit_layers: bool) -> None:
        """Always with each example's exit layer (one line per example: label or value TAB exit layer)."""
        if run is None:  # an empty file
            path.write_text("")
            return
        self.write_tsv(path, run.predictions, run.exit_layers)

    def write_test_predictions(self, predictions: torch.Tensor, datamodule, directory: Path) -> str:
        """``predictions``: (N, S) every exit's prediction per example, in input order; the last exit's are
        written."""
        path = directory / "test_predictions.tsv"
        self.write_tsv(path, predictions[:, -1], torch.full((len(predictions),), predictions.shape[1]))
        return str(path)
