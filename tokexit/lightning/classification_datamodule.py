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
from tokexit.data.conll import open_text_lines
from tokexit.data.glue import Example, TsvColumns, read_tsv
from tokexit.data.tagging import LengthGroupedSampler
from tokexit.lightning.hooks import check_evaluation_files

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
        self.unseen_labels: dict[str, dict] = {}  # a classifier's unknown labels are errors, never reported here
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
        if not any(line.strip() for _, line in open_text_lines(path)):
            return []  # 0 bytes or blank lines only: empty (even without the header row; see _check_files)
        return read_tsv(path, self.columns, regression=self.regression)

    def prepare(self) -> ClassificationTask:
        """Read and check the files (every problem is raised before training starts), build the task and encode
        every split."""
        if self.tokenizer is not None:
            return self.task
        for path in self.files.values():
            if path and not Path(path).is_file():
                raise FileNotFoundError(missing_file_hint(str(path)))
        if self.task is None and not self.files["train"]:
            raise ValueError("data.train_file is required to build the label set")
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        for split, path in self.files.items():
            if path:
                self.examples[split] = self.read(str(path))
        self._check_files()
        if self.task is None:
            self.task = ClassificationTask.from_examples(self.examples["train"], self.regression, self.metric,
                                                         self.positive_label)
            self.task.columns = dataclasses.asdict(self.columns)
        for split, examples in self.examples.items():
            self.encoded[split] = encode_examples(examples, self.tokenizer, self.task, self.max_length,
                                                  str(self.files[split]))
            log.info("%s: %d examples", self.files[split], len(examples))
        return self.task

    def status(self, split: str) -> str:
        """"none" (no file given), "empty" (no examples), "unlabelled" (no label column) or "labelled"."""
        examples = self.examples.get(split)
        if examples is None:
            return "none"
        if not examples:
            return "empty"
        return "labelled" if examples[0].label is not None else "unlabelled"

    def _no_labels(self, split: str) -> str:
        return f"data.{split}_file={self.files[split]}: {self._missing_labels()}"

    def _missing_labels(self) -> str:
        label = self.columns.label
        if label is None:
            return "no labels (data.label=null)"
        where = "in the header" if isinstance(label, str) else "(too few fields)"
        return f"no label column {label!r} {where} (data.label={label})"

    def _check_files(self) -> None:
        """Training and validation files must be labelled and not empty, in a useful way; an empty validation
        file means no model selection and an unlabelled test file is predicted, not scored (both logged)."""
        where = {split: f"data.{split}_file={path}" for split, path in self.files.items()}
        if "train" in self.examples:
            status = self.status("train")
            if status == "empty":
                raise ValueError(f"{where['train']}: no examples to train on (the file holds no rows)")
            if status == "unlabelled":
                raise ValueError(f"{self._no_labels('train')}: a training file needs a label on every row")
            if self.regression and len(self.examples["train"]) < 2:
                raise ValueError(f"{where['train']}: a regression training file needs at least two examples")
            if not self.regression:
                found = sorted({ex.label for ex in self.examples["train"]})
                if len(found) < 2:
                    raise ValueError(f"{where['train']}: every example has the label {found[0]!r}: a "
                                     "classifier needs at least two different labels to learn anything")
        if self.status("validation") == "labelled" and self.regression and len(self.examples["validation"]) < 2:
            raise ValueError(f"{where['validation']}: one example, but {self.metric or 'pearson'} correlation needs "
                             "at least two")
        check_evaluation_files(self.status, where, self._missing_labels(), "test_predictions.tsv")

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def corpus(self, split: str) -> list[Example]:
        return self.examples[split]

    def counts(self) -> dict:
        return {f"{split}_examples": len(examples) for split, examples in self.examples.items()}

    def _loader(self, split: str, train: bool) -> DataLoader | list:
        if split == "validation" and self.status(split) in ("none", "empty"):
            return []  # Lightning then skips validation (no model selection, see _check_files)
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

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
