"""Sequence labeling: a tagger predicts a tag for every word; files are CoNLL or CoNLL-U, scored by entity F1
(seqeval) or accuracy; predictions are written as CoNLL columns in the file's own tag scheme."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from tokexit.data.conll import Corpus, bio_to_iob1
from tokexit.data.tagging import LabelSet, ReaderOptions, load_corpus, report_unseen_labels
from tokexit.engine.encoder import MultiExitEncoder
from tokexit.inference.runs import Run
from tokexit.inference.tagging import WordBatches, corpus_loader
from tokexit.reporting.scores import main_metric, score
from tokexit.tasks.base import EvalFile


@dataclasses.dataclass
class TaggedFile(EvalFile):
    corpus: Corpus


def write_predictions(path: Path, corpus: Corpus, predicted: list[list[str]],
                      exit_layers: list[torch.Tensor] | None = None, model_scheme: str = "bio") -> None:
    """word TAB gold TAB prediction [TAB exit layer], in the file's own tag scheme (IOB1 files get IOB1 back);
    a file without entity tags (unlabelled, all O, POS) gets the scheme the model was trained on."""
    scheme = corpus.scheme if corpus.scheme != "none" else model_scheme
    back = bio_to_iob1 if scheme == "iob1" else list
    with open(path, "w", encoding="utf-8") as f:
        for i, (sentence, tags) in enumerate(zip(corpus.sentences, predicted, strict=True)):
            gold = back(sentence.tags) if sentence.tags is not None else ["-"] * len(tags)
            layers = [f"\t{e}" for e in exit_layers[i].tolist()] if exit_layers is not None else [""] * len(tags)
            for word, g, p, e in zip(sentence.words, gold, back(tags), layers, strict=True):
                f.write(f"{word}\t{g}\t{p}{e}\n")
            f.write("\n")


class Tagging:
    """A multi-exit tagger (:class:`~tokexit.engine.encoder.MultiExitEncoder`) and its :class:`LabelSet`."""

    kind = "token_tagger"
    labels_type = LabelSet
    items, unit = "sentences", "words"
    verbs = ("tag", "tagged")
    gold_name = "gold tags"
    predictions_file = "predictions.conll"

    def __init__(self, labels: LabelSet):
        self.labels = labels

    @property
    def name(self) -> str:
        return self.labels.task

    @property
    def metric(self) -> str:
        return main_metric(self.labels.task)

    @classmethod
    def from_meta(cls, meta: dict) -> Tagging:
        return cls(LabelSet(meta["labels"], meta["task"], meta.get("scheme", "bio")))

    def model_meta(self, model: MultiExitEncoder) -> dict:
        return self.labels.to_dict()

    def build(self, backbone: nn.Module) -> MultiExitEncoder:
        return MultiExitEncoder(backbone, len(self.labels.labels))

    def heads(self, model: MultiExitEncoder) -> dict[str, nn.Module]:
        return {"": model.exits}

    def reader(self, options: Mapping, tokenizer, batch_size: int, max_length: int) -> Callable[[str], TaggedFile]:
        known = {f.name for f in dataclasses.fields(ReaderOptions)}
        reading = ReaderOptions(**{k: options[k] for k in known if k in options})

        def read(path: str) -> TaggedFile:
            corpus = load_corpus(path, reading)
            unseen = report_unseen_labels(corpus, self.labels)
            labelled = bool(corpus.sentences) and corpus.sentences[0].tags is not None
            loader = corpus_loader(corpus, tokenizer, self.labels, batch_size, max_length) if corpus.sentences else []
            counts = {"sentences": len(corpus.sentences), "words": sum(len(s.words) for s in corpus.sentences)}
            return TaggedFile(path, loader, labelled, counts, {"unseen_labels": unseen}, corpus)

        return read

    def batches(self, data: TaggedFile) -> WordBatches:
        return WordBatches(data.corpus)

    def tags(self, corpus: Corpus, predictions: torch.Tensor) -> list[list[str]]:
        """(N,) label ids of every word in corpus order -> per sentence, the tags."""
        lengths = [len(s.words) for s in corpus.sentences]
        return [[self.labels.labels[k] for k in p.tolist()] for p in torch.split(predictions, lengths)]

    def scores(self, data: TaggedFile, predictions: torch.Tensor) -> dict[str, float]:
        gold = [s.tags for s in data.corpus.sentences]
        return score(gold, self.tags(data.corpus, predictions), self.labels.task)

    def write_predictions(self, path: Path, data: TaggedFile, run: Run | None, exit_layers: bool) -> None:
        if run is None:  # an empty file
            write_predictions(path, data.corpus, [])
            return
        lengths = [len(s.words) for s in data.corpus.sentences]
        layers = list(torch.split(run.exit_layers, lengths)) if exit_layers else None
        write_predictions(path, data.corpus, self.tags(data.corpus, run.predictions), layers, self.labels.scheme)

    def write_test_predictions(self, predictions: list[torch.Tensor], datamodule, directory: Path) -> str:
        """``predictions``: per sentence, (L, n_words) label ids of every exit; the last exit's are written."""
        path = directory / "test_predictions.conll"
        corpus = dataclasses.replace(datamodule.corpus("test"), scheme=self.labels.scheme)
        write_predictions(path, corpus, [[self.labels.labels[k] for k in p[-1].tolist()] for p in predictions])
        return str(path)
