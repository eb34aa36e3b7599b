"""The task interface: what tokexit needs to know about a kind of model (a token tagger, a sentence classifier)
to save and load it, read evaluation files for it, run it, score it and write its predictions. Everything above
the engine (model directories, evaluation, training's outputs, export, the API) goes through this interface
instead of asking which kind of model it holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from tokexit.engine.encoder import MultiExitEncoder
from tokexit.inference.runs import Batches, Run


@dataclass
class EvalFile:
    """A file read for evaluation: its batches, whether it has gold labels, what it holds."""

    path: str
    loader: DataLoader | list
    labelled: bool
    counts: dict[str, int]  # e.g. {"sentences": 37, "words": 412} or {"examples": 53}
    notes: dict  # more entries for metrics.json (e.g. the labels never seen in training)

    @property
    def empty(self) -> bool:
        return not any(self.counts.values())


class Task(Protocol):
    """One kind of model. ``labels`` is the data side's description of the task (a
    :class:`~tokexit.data.tagging.LabelSet` or a :class:`~tokexit.data.classification.ClassificationTask`)."""

    kind: ClassVar[str]  # the ``kind`` in tokexit.json: token_tagger | sequence_classifier
    labels_type: ClassVar[type]  # the type of ``labels``
    items: ClassVar[str]  # what a file holds: sentences | examples
    unit: ClassVar[str]  # what gets one prediction: words | examples
    verbs: ClassVar[tuple[str, str]]  # what the model does to an unlabelled file: ("tag", "tagged")
    gold_name: ClassVar[str]  # what a labelled file has: "gold tags" | "labels"
    predictions_file: ClassVar[str]  # predictions.conll | predictions.tsv
    labels: object

    @property
    def name(self) -> str:
        """ner | tagging | classification | regression."""

    @property
    def metric(self) -> str:
        """The metric that selects and summarises models."""

    # model directories (tokexit.model_io)
    @classmethod
    def from_meta(cls, meta: dict) -> Task:
        """The task of a saved model, from its tokexit.json."""

    def model_meta(self, model: MultiExitEncoder) -> dict:
        """What tokexit.json records besides the kind: labels, task, scheme or pooling..."""

    def build(self, backbone: nn.Module) -> MultiExitEncoder:
        """An untrained model of this kind on ``backbone`` (heads to be loaded)."""

    def heads(self, model: MultiExitEncoder) -> dict[str, nn.Module]:
        """The modules saved in exits.safetensors, by key prefix."""

    # evaluation (tokexit.inference.evaluator)
    def reader(self, options: Mapping, tokenizer, batch_size: int, max_length: int) -> Callable[[str], EvalFile]:
        """Reads a file (the ``data`` options of evaluate.yaml say how) into batches."""

    def batches(self, data: EvalFile) -> Batches:
        """The task side of one run over ``data``."""

    def scores(self, data: EvalFile, predictions: torch.Tensor) -> dict[str, float]:
        """Scores of (N,) predictions of every unit of a labelled file, in its order."""

    def write_predictions(self, path: Path, data: EvalFile, run: Run | None, exit_layers: bool) -> None:
        """The predictions file of evaluate (``run`` None: an empty file's); ``exit_layers``: with each unit's exit
        layer."""

    # training (tokexit.train)
    def write_test_predictions(self, predictions, datamodule, directory: Path) -> str:
        """The full model's predictions of an unlabelled test file after training, in the format of
        :meth:`write_predictions`; returns the path."""
