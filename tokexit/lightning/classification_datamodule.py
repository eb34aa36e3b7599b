"""LightningDataModule for sentence(-pair) classification and regression from TSV files (GLUE layout)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from tokexit.backbones import load_tokenizer
from tokexit.data.classification import ClassificationTask, collate_examples, encode_examples, sorted_example_loader
from tokexit.data.glue import Example, TsvColumns, read_tsv
from tokexit.data.tagging import LengthGroupedSampler

log = logging.getLogger(__name__)


def missing_file_hint(path: str) -> str:
    return (f"{path}: no such file. GLUE data is not shipped with tokexit: point data.train_file / "
            "data.validation_file / data.test_file (or data_root / TOKEXIT_DATA_ROOT) at a folder with the "
            "original GLUE TSV files")


class ClassificationDataModule(L.LightningDataModule):
    """Reads TSV files with the texts in ``text_a`` (and ``text_b`` for pairs) and the label in ``label``
    (header names or 0-based indices), builds the task from the training file and encodes every split."""

    def __init__(
        self,
        train_file: str | None,
        validation_file: str | None,
        test_file: str | None,
        tokenizer: str,
        name: str = "custom",
        text_a: str | int = "sentence",
        text_b: str | int | None = None,
        label: str | int | None = "label",
        header: bool | None = None,
        regression: bool = False,
        metric: str | None = None,
        positive_label: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        task: ClassificationTask | None = None,
    ):
        super().__init__()
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.tokenizer_name, self.name = tokenizer, name
        self.columns = TsvColumns(text_a, text_b, label, header)
        self.regression, self.metric, self.positive_label = regression, metric, positive_label
        self.max_length = max_length
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.task = task
        self.examples: dict[str, list[Example]] = {}
        self.encoded: dict[str, list[dict]] = {}
        self.tokenizer = None

    def read(self, path: str) -> list[Example]:
        if not Path(path).is_file():
            raise FileNotFoundError(missing_file_hint(path))
        return read_tsv(path, self.columns, regression=self.regression)

    def prepare(self) -> ClassificationTask:
        if self.tokenizer is not None:
            return self.task
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        for split, path in self.files.items():
            if path:
                self.examples[split] = self.read(str(path))
        if self.task is None:
            if "train" not in self.examples:
                raise ValueError("data.train_file is required to build the label set")
            self.task = ClassificationTask.from_examples(self.examples["train"], self.regression, self.metric,
                                                         self.positive_label)
            self.task.columns = dataclasses.asdict(self.columns)
        for split, examples in self.examples.items():
            self.encoded[split] = encode_examples(examples, self.tokenizer, self.task, self.max_length,
                                                  str(self.files[split]))
            log.info("%s: %d examples", self.files[split], len(examples))
        return self.task

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def corpus(self, split: str) -> list[Example]:
        return self.examples[split]

    def counts(self) -> dict:
        return {f"{split}_examples": len(examples) for split, examples in self.examples.items()}

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.encoded:
            raise ValueError(f"no data.{split}_file given")
        rows, pad_id = self.encoded[split], self.tokenizer.pad_token_id
        if not train:
            return sorted_example_loader(rows, self.eval_batch_size, pad_id, self.num_workers)
        sampler = LengthGroupedSampler([len(r["input_ids"]) for r in rows], self.batch_size, seed=self.seed)
        return DataLoader(rows, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=functools.partial(collate_examples, pad_id=pad_id))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
