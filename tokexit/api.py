"""Python API: load a trained model directory and tag raw or pre-tokenised sentences, or classify sentences
and sentence pairs.

>>> tagger = Tagger.load("runs/wnut16-minilm-l6/model")
>>> tagger.tag("Empire State Building is in New York")
[[TaggedWord(word='Empire', tag='B-facility', exit_layer=6), ...]]
>>> Classifier.load("runs/mrpc/model").classify([("He said so .", "He told us so .")], exit=PatienceExit(2))
[Classified(label='1', exit_layer=3)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tokexit.classify import run_examples
from tokexit.data.classification import encode_examples, sorted_example_loader
from tokexit.data.conll import Corpus, Sentence
from tokexit.data.glue import Example
from tokexit.exits.base import ExitPolicy
from tokexit.model_io import load_classifier, load_tagger, resolve_device
from tokexit.predict import predict_corpus

WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


def split_words(text: str) -> list[str]:
    """A simple tokenizer for raw text: words (with inner hyphens/apostrophes/dots) and single symbols."""
    return WORD.findall(text)


@dataclass
class TaggedWord:
    word: str
    tag: str
    exit_layer: int  # 1-based layer whose exit gave the tag


class Tagger:
    """A trained multi-exit tagger."""

    def __init__(self, encoder, tokenizer, labels, max_length: int = 512, device: str = "cpu"):
        self.encoder, self.tokenizer, self.labels = encoder.to(device).eval(), tokenizer, labels
        self.max_length, self.device = max_length, device

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Tagger:
        encoder, tokenizer, labels, meta = load_tagger(directory)
        device = resolve_device(device)
        return cls(encoder, tokenizer, labels, meta.get("max_length", 512), device)

    def tag(self, sentences: str | list[str] | list[list[str]], batch_size: int = 32,
            exit: ExitPolicy | None = None) -> list[list[TaggedWord]]:
        """Tag one raw string, a list of raw strings, or a list of pre-tokenised sentences (lists of words).

        ``exit``: an exit policy (e.g. ``TokenWindowExit(0.1, window=5)``); None runs the full model.
        Every input word gets a tag and its exit layer, however long the sentence; an empty sentence gives [].
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        words = [split_words(s) if isinstance(s, str) else list(s) for s in sentences]
        corpus = Corpus("<input>", "conll", [Sentence(w, None, 0) for w in words if w], "none", None)
        run = predict_corpus(self.encoder, self.tokenizer, self.labels, corpus, policy=exit,
                             batch_size=batch_size, max_length=self.max_length, device=self.device)
        it = zip(run.predictions, run.exit_layers, strict=True)
        result = []
        for w in words:
            if not w:
                result.append([])
                continue
            tags, layers = next(it)
            result.append([TaggedWord(word, self.labels.labels[k], int(e))
                           for word, k, e in zip(w, tags.tolist(), layers.tolist(), strict=True)])
        return result


@dataclass
class Classified:
    label: str | float  # class name, or the value for regression
    exit_layer: int  # 1-based layer whose exit decided


class Classifier:
    """A trained multi-exit sentence(-pair) classifier."""

    def __init__(self, model, tokenizer, task, max_length: int = 512, device: str = "cpu"):
        self.model, self.tokenizer, self.task = model.to(device).eval(), tokenizer, task
        self.max_length, self.device = max_length, device

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Classifier:
        model, tokenizer, task, meta = load_classifier(directory)
        device = resolve_device(device)
        return cls(model, tokenizer, task, meta.get("max_length", 512), device)

    def classify(self, texts: str | list[str] | list[tuple[str, str]], batch_size: int = 32,
                 exit: ExitPolicy | None = None) -> list[Classified]:
        """Classify one text, a list of texts, or a list of (text, text) pairs, in input order.

        ``exit``: e.g. ``PatienceExit(2)`` or ``EntropyExit(0.2)``; None runs the full model.
        """
        if isinstance(texts, str):
            texts = [texts]
        examples = [Example(*t, None, i) if isinstance(t, tuple) else Example(t, None, None, i)
                    for i, t in enumerate(texts)]
        if not examples:
            return []
        rows = encode_examples(examples, self.tokenizer, None, self.max_length)
        loader = sorted_example_loader(rows, batch_size, self.tokenizer.pad_token_id)
        run = run_examples(self.model, loader, self.task.regression, exit, self.device)
        values = run.predictions.tolist()
        labels = values if self.task.regression else [self.task.labels[int(v)] for v in values]
        return [Classified(label, int(e)) for label, e in zip(labels, run.exit_layers.tolist(), strict=True)]
