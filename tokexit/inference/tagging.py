"""A tagger's side of a run (:mod:`tokexit.inference.runs`): inputs of words, each word predicted once by the
input that owns it, predictions back in corpus order (sentence by sentence, word by word)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from tokexit.data.conll import Corpus
from tokexit.data.tagging import LabelSet, build_dataset, length_sorted_loader
from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.engine.flops import full_model_flops
from tokexit.inference.collect import PredictionCollector, per_sentence
from tokexit.inference.runs import Run, run_batches
from tokexit.inference.setting import Setting


def corpus_loader(corpus: Corpus, tokenizer, labels: LabelSet | None, batch_size: int, max_length: int) -> DataLoader:
    """The corpus's inputs in batches of similar length (less padding; results do not depend on it)."""
    data = build_dataset(corpus, tokenizer, labels, max_length)
    return length_sorted_loader(data, batch_size, tokenizer.pad_token_id)


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


def predict_corpus(encoder: MultiExitEncoder, tokenizer, labels: LabelSet, corpus: Corpus, setting: Setting, *,
                   batch_size: int = 32, max_length: int = 512, device: str | torch.device = "cpu") -> Run:
    """Tokenise ``corpus`` and run it with ``setting`` (an empty corpus: an empty run)."""
    loader = corpus_loader(corpus, tokenizer, labels, batch_size, max_length) if corpus.sentences else []
    return run_batches(encoder, loader, WordBatches(corpus), setting, device)
