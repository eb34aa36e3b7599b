"""LightningDataModule for sequence labeling from CoNLL / CoNLL-U files or an embedded data set."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from tokexit.backbones import load_tokenizer
from tokexit.data.conll import Corpus
from tokexit.data.embedded import is_embedded
from tokexit.data.tagging import (
    LabelSet,
    LengthGroupedSampler,
    ReaderOptions,
    build_dataset,
    collate,
    length_sorted_loader,
    load_corpus,
    report_unseen_labels,
)
from tokexit.lightning.hooks import check_evaluation_files

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


class TaggingDataModule(L.LightningDataModule):
    """Reads the three files once, builds the label set from the training file and encodes every split.

    ``context``: "sentence" encodes each sentence alone; "document" packs a document's sentences into inputs
    of up to ``max_length`` subwords (see :mod:`tokexit.data.encoding`); scores stay per sentence.

    ``prepare()`` may be called before the trainer (the model needs the label set); Lightning's ``setup``
    then finds everything done.
    """

    def __init__(
        self,
        train_file: str | None,
        validation_file: str | None,
        test_file: str | None,
        tokenizer: str,
        name: str = "custom",
        format: str = "auto",
        label_column: int | None = -1,
        tagset: str = "upos",
        strip_position_digit: bool = False,
        context: str = "sentence",
        task: str = "auto",
        max_length: int = 512,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        labels: LabelSet | None = None,
    ):
        super().__init__()
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.tokenizer_name = tokenizer
        self.name = name
        self.options = ReaderOptions(format, label_column, tagset, strip_position_digit, context)
        self.task = task
        self.max_length = max_length
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.labels = labels
        self.corpora: dict[str, Corpus] = {}
        self.datasets: dict = {}
        self.unseen_labels: dict[str, dict] = {}
        self.tokenizer = None

    def prepare(self) -> LabelSet:
        """Read and check the files (every problem is raised before training starts), build the label set and
        encode every split."""
        if self.tokenizer is not None:
            return self.labels
        for split, path in self.files.items():
            if path and not is_embedded(str(path)) and not Path(path).is_file():
                raise FileNotFoundError(f"data.{split}_file={path}: no such file")
        if self.labels is None and not self.files["train"]:
            raise ValueError("data.train_file is required to build the label set")
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        self.max_length = min(self.max_length, self._backbone_max_length())
        for split, path in self.files.items():
            if path:
                self.corpora[split] = load_corpus(str(path), self.options)
        self._check_files()
        if self.labels is None:
            self.labels = LabelSet.from_corpus(self.corpora["train"], self.task)
        for split, corpus in self.corpora.items():
            if split != "train":
                self.unseen_labels[split] = report_unseen_labels(corpus, self.labels)
            self.datasets[split] = build_dataset(corpus, self.tokenizer, self.labels, self.max_length)
            log.info("%s: %d sentences, %d inputs (context: %s)", corpus.path, len(corpus.sentences),
                     len(self.datasets[split]), corpus.context)
        return self.labels

    def status(self, split: str) -> str:
        """"none" (no file given), "empty" (no sentences), "unlabelled" (no label column) or "labelled"."""
        corpus = self.corpora.get(split)
        if corpus is None:
            return "none"
        if not corpus.sentences:
            return "empty"
        return "labelled" if corpus.sentences[0].tags is not None else "unlabelled"

    def _check_files(self) -> None:
        """Training and validation files must be labelled and not empty, in a useful way; an empty validation
        file means no model selection and an unlabelled test file is tagged, not scored (both logged)."""
        where = {split: f"data.{split}_file={path}" for split, path in self.files.items()}
        if "train" in self.corpora:
            train = self.corpora["train"]
            status = self.status("train")
            if status == "empty":
                raise ValueError(f"{where['train']}: no sentences to train on (the file holds no word lines)")
            if status == "unlabelled":
                raise ValueError(f"{where['train']}: no labels to train on (one column per line, or "
                                 "data.label_column=null): a training file needs a tag for every word")
            found = {t for s in train.sentences for t in s.tags}
            if len(found) < 2:
                raise ValueError(f"{where['train']}: every word has the label '{found.pop()}': a tagger needs at "
                                 "least two different labels to learn anything")
        check_evaluation_files(self.status, where, "no labels (one column per line, or data.label_column=null)",
                               "test_predictions.conll")

    def _backbone_max_length(self) -> int:
        limit = self.tokenizer.model_max_length
        return limit if isinstance(limit, int) and 0 < limit < 100_000 else 512

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def corpus(self, split: str) -> Corpus:
        return self.corpora[split]

    def counts(self) -> dict:
        counts = {f"{split}_sentences": len(c.sentences) for split, c in self.corpora.items()}
        if "test" in self.corpora:
            counts["test_words"] = sum(len(s.words) for s in self.corpora["test"].sentences)
        return {**counts, "labels": len(self.labels.labels)}

    def _loader(self, split: str, train: bool) -> DataLoader | list:
        if split == "validation" and self.status(split) in ("none", "empty"):
            return []  # Lightning then skips validation (no model selection, see _check_files)
        if split not in self.datasets:
            raise ValueError(f"no data.{split}_file given")
        data, pad_id = self.datasets[split], self.tokenizer.pad_token_id
        if not train:
            return length_sorted_loader(data, self.eval_batch_size, pad_id, self.num_workers)
        sampler = LengthGroupedSampler([len(ids) for ids in data["input_ids"]], self.batch_size, seed=self.seed)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=functools.partial(collate, pad_id=pad_id))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
