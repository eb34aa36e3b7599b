"""Python API: load a trained model directory and tag raw or pre-tokenised sentences.

>>> tagger = Tagger.load("runs/wnut16-minilm-l6/model")
>>> tagger.tag("Empire State Building is in New York")
[[TaggedWord(word='Empire', tag='B-facility', exit_layer=6), ...]]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tokexit.data.conll import Corpus, Sentence
from tokexit.model_io import load_tagger
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
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(encoder, tokenizer, labels, meta.get("max_length", 512), device)

    def tag(self, sentences: str | list[str] | list[list[str]], batch_size: int = 32) -> list[list[TaggedWord]]:
        """Tag one raw string, a list of raw strings, or a list of pre-tokenised sentences (lists of words).

        Every input word gets a tag, however long the sentence; an empty sentence gives an empty list.
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        words = [split_words(s) if isinstance(s, str) else list(s) for s in sentences]
        corpus = Corpus("<input>", "conll", [Sentence(w, None, 0) for w in words if w], "none", None)
        predictions, _ = predict_corpus(self.encoder, self.tokenizer, self.labels, corpus,
                                        batch_size=batch_size, max_length=self.max_length, device=self.device)
        last = self.encoder.num_layers
        it = iter(predictions)
        result = []
        for w in words:
            if not w:
                result.append([])
                continue
            ids = next(it)[-1].tolist()
            result.append([TaggedWord(word, self.labels.labels[k], last) for word, k in zip(w, ids, strict=True)])
        return result
