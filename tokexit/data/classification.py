"""Sentence(-pair) classification and regression data: the task description, encoding and batching.

Texts are tokenised as the backbone expects pairs ([CLS] a [SEP] b [SEP] for BERT). Pairs longer than the
model's maximum length are truncated (longest text first) and the number of truncated examples is logged.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from tokexit.data.glue import Example, label_inventory

log = logging.getLogger(__name__)

METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")


@dataclass
class ClassificationTask:
    """What a classifier predicts: class names (empty for regression) and the metric that selects models."""

    labels: list[str] = field(default_factory=list)
    regression: bool = False
    metric: str | None = None  # None: accuracy, or pearson for regression
    positive_label: str | None = None  # the class that F1 counts; None: "1" when present
    columns: dict | None = None  # the TSV layout the model was trained on (TsvColumns fields), for evaluation

    def __post_init__(self):
        if self.metric is None:
            self.metric = "pearson" if self.regression else "accuracy"
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not '{self.metric}'")
        if self.regression and self.metric not in ("pearson", "spearman"):
            raise ValueError(f"a regression task is scored with pearson or spearman, not '{self.metric}'")
        self.to_id = {label: i for i, label in enumerate(self.labels)}

    @property
    def task(self) -> str:
        return "regression" if self.regression else "classification"

    @property
    def num_outputs(self) -> int:
        return 1 if self.regression else len(self.labels)

    @classmethod
    def from_examples(cls, examples: list[Example], regression: bool, metric: str | None = None,
                      positive_label: str | None = None) -> ClassificationTask:
        labels = [] if regression else label_inventory(examples)
        if not regression and len(labels) < 2:
            raise ValueError(f"a classification training file needs at least two labels, found {labels}")
        return cls(labels, regression, metric, positive_label)

    def to_dict(self) -> dict:
        return {"labels": self.labels, "task": self.task, "regression": self.regression, "metric": self.metric,
                "positive_label": self.positive_label, "columns": self.columns}

    @classmethod
    def from_dict(cls, d: dict) -> ClassificationTask:
        return cls(d["labels"], d["regression"], d["metric"], d.get("positive_label"), d.get("columns"))

    def target(self, example: Example, path: str = "") -> float | int | None:
        """The training target of ``example``: class id or value; None when unlabelled."""
        if example.label is None:
            return None
        if self.regression:
            return float(example.label)
        if example.label not in self.to_id:
            raise ValueError(f"{path}:{example.line}: label '{example.label}' is not one of the model's "
                             f"labels {self.labels}")
        return self.to_id[example.label]


def encode_examples(examples: list[Example], tokenizer, task: ClassificationTask | None, max_length: int,
                    path: str = "") -> list[dict]:
    """Tokenise every example: input_ids, token_type_ids, target (None if unlabelled), index (input order)."""
    firsts = [e.text_a for e in examples]
    seconds = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    if not examples:
        return []
    enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=True)
    full = tokenizer(firsts, seconds, truncation=False, return_length=True, verbose=False)["length"]
    truncated = sum(n > max_length for n in full)
    if truncated:
        log.warning("%s: %d of %d examples are longer than %d tokens and were truncated (longest text first)",
                    path, truncated, len(examples), max_length)
    return [
        {"input_ids": ids, "token_type_ids": types, "index": i,
         "target": task.target(e, path) if task is not None else None}
        for i, (e, ids, types) in enumerate(zip(examples, enc["input_ids"], enc["token_type_ids"], strict=True))
    ]


def collate_examples(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: (B, T) ids/mask/types, (B,) targets (NaN/-100 when unlabelled), index."""
    b, t = len(rows), max(len(r["input_ids"]) for r in rows)
    batch = {"input_ids": torch.full((b, t), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((b, t), dtype=torch.long),
             "token_type_ids": torch.zeros((b, t), dtype=torch.long),
             "index": torch.tensor([r["index"] for r in rows], dtype=torch.long)}
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["token_type_ids"][i, :n] = torch.tensor(r["token_type_ids"])
    targets = [r["target"] for r in rows]
    if any(isinstance(x, float) for x in targets):
        batch["targets"] = torch.tensor([float("nan") if x is None else x for x in targets])
    else:
        batch["targets"] = torch.tensor([-100 if x is None else x for x in targets], dtype=torch.long)
    return batch


def sorted_example_loader(rows: list[dict], batch_size: int, pad_id: int, num_workers: int = 0) -> DataLoader:
    """Evaluation batches sorted by length (less padding; results do not depend on it; ``index`` restores order)."""
    order = sorted(rows, key=lambda r: len(r["input_ids"]))
    return DataLoader(order, batch_size=batch_size, num_workers=num_workers,
                      collate_fn=functools.partial(collate_examples, pad_id=pad_id))
