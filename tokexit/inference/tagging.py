"""A tagger's side of a run (:mod:`tokexit.inference.runs`): inputs of words, each word predicted once by the
input that owns it, predictions back in corpus order (sentence by sentence, word by word)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from tokexit.data.conll import Corpus, Sentence, bio_to_iob1
from tokexit.data.encoding import encode_sentences
from tokexit.data.tagging import LabelSet, build_dataset, length_sorted_loader, padded_batches
from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.engine.flops import full_model_flops
from tokexit.inference.collect import PredictionCollector, per_sentence
from tokexit.inference.runs import predict_batches
from tokexit.inference.setting import Setting


def corpus_loader(corpus: Corpus, tokenizer, labels: LabelSet | None, batch_size: int, max_length: int) -> DataLoader:
    """The corpus's inputs in batches of similar length (less padding; results do not depend on it)."""
    data = build_dataset(corpus, tokenizer, labels, max_length)
    return length_sorted_loader(data, batch_size, tokenizer.pad_token_id)


def sentence_batches(sentences: list[list[str]], tokenizer, batch_size: int, max_length: int,
                     ) -> list[dict[str, torch.Tensor]]:
    """Unlabelled sentences -> the batches :func:`corpus_loader` gives for them (the same inputs, the same
    length-sorted order, the same tensors), built directly instead of through a ``datasets.Dataset`` (whose
    ``map`` fingerprints the tokenizer on every call, ~0.2 s each: the cost of a small ``Tagger.tag`` call, or of
    every chunk of ``tokexit.tag``): the rows of :func:`~tokexit.data.encoding.encode_sentences` (vectorised for
    sentences that fit, :func:`~tokexit.data.encoding.encode_batch`'s path for the rest), padded by
    :func:`~tokexit.data.tagging.padded_batches`. An empty sentence has no input. The batches' tensors are views
    into a few shared buffers."""
    rows = encode_sentences(sentences, tokenizer, max_length)
    order = np.argsort(rows.n_tok, kind="stable")  # as length_sorted_loader orders them
    return padded_batches(rows.take(order), batch_size, tokenizer.pad_token_id)


class WordBatches:
    """Batches of a corpus; ``result`` puts every word's columns in corpus order."""

    def __init__(self, corpus: Corpus):
        self.corpus, self.collector = corpus, PredictionCollector()

    def full_flops(self, model: MultiExitEncoder, batch: dict[str, torch.Tensor]) -> float:
        s = model.cost_shape()
        words = (batch["word_positions"] >= 0).sum(1)
        return float(full_model_flops(batch["attention_mask"].sum(1), words, s["steps"], s["hidden"],
                                      s["intermediate"], s["num_labels"], "last", s["attention"]).sum())

    def forward(self, model: MultiExitEncoder, batch: dict[str, torch.Tensor], setting: Setting | None):
        if setting is None:  # (S, N) label ids of every exit
            return model(batch["input_ids"], batch["attention_mask"], batch["word_positions"]).argmax(-1)
        return early_exit_forward(model, setting.policy, batch["input_ids"], batch["attention_mask"],
                                  batch["word_positions"], batch["token_word"], fate=setting.fate)

    def collect(self, batch: dict[str, torch.Tensor], output, setting: Setting | None) -> None:
        if setting is None:
            layers = torch.full_like(output[0], len(output))
            columns = torch.cat([output[-1:], layers[None], output])
        else:
            words = batch["word_positions"] >= 0
            columns = torch.stack([output.predictions[words], output.exit_layers[words]])
        self.collector.add(batch, columns)

    def result(self) -> torch.Tensor:
        columns = per_sentence(self.collector.table(), self.corpus)  # raises if a word has no prediction
        return torch.cat(columns, 1) if columns else torch.zeros((2, 0), dtype=torch.long)


def tag_words(encoder: MultiExitEncoder, tokenizer, labels: LabelSet, words: list[list[str]], setting: Setting, *,
              batch_size: int = 32, max_length: int = 512, device: str | torch.device = "cpu",
              ) -> list[tuple[list[str], list[int]]]:
    """The one-pass tagging path of ``Tagger.tag`` and ``tokexit.tag``: sentences of words -> per sentence, its
    tags (in the scheme the model was trained on: IOB1 for an IOB1-trained model) and each word's 1-based exit
    layer. An empty sentence gives ``([], [])``; a sentence of any length is windowed, every word gets a tag.
    Inputs are length-sorted into batches; results do not depend on the order or the batch neighbours."""
    corpus = Corpus("<input>", "conll", [Sentence(w, None, 0) for w in words if w], "none", None)
    batches = sentence_batches([s.words for s in corpus.sentences], tokenizer, batch_size, max_length)
    table = predict_batches(encoder, batches, WordBatches(corpus), setting, device)  # (2, N words)
    lengths = [len(s.words) for s in corpus.sentences]
    names = labels.labels
    back = bio_to_iob1 if labels.scheme == "iob1" else None  # the model predicts BIO; it speaks its files' scheme
    parts = zip(table[0].split(lengths), table[1].split(lengths), strict=True)
    result = []
    for w in words:
        if not w:
            result.append(([], []))
            continue
        ids, layers = next(parts)
        tags = [names[k] for k in ids.tolist()]
        result.append((back(tags) if back else tags, layers.tolist()))
    return result
