"""Batched inference over a corpus with a :class:`MultiExitEncoder` (torch only, no Lightning)."""

from __future__ import annotations

import functools
import time

import torch
from torch.utils.data import DataLoader

from tokexit.data.conll import Corpus
from tokexit.data.tagging import LabelSet, build_dataset, collate
from tokexit.engine import MultiExitEncoder
from tokexit.evaluation import PredictionCollector, per_sentence


@torch.inference_mode()
def predict_corpus(
    encoder: MultiExitEncoder,
    tokenizer,
    labels: LabelSet,
    corpus: Corpus,
    *,
    batch_size: int = 32,
    max_length: int = 512,
    device: str | torch.device = "cpu",
) -> tuple[list[torch.Tensor], float]:
    """Every exit's prediction for every word: per sentence an (L, n_words) tensor of label ids, and the
    wall-clock seconds of the forward passes (tokenisation excluded)."""
    if not corpus.sentences:
        return [], 0.0
    data = build_dataset(corpus, tokenizer, labels, max_length)
    lengths = [len(ids) for ids in data["input_ids"]]
    order = sorted(range(len(data)), key=lambda i: lengths[i])  # similar lengths share a batch: less padding
    loader = DataLoader(data.select(order), batch_size=batch_size,
                        collate_fn=functools.partial(collate, pad_id=tokenizer.pad_token_id))
    encoder = encoder.to(device).eval()
    collector = PredictionCollector()
    seconds = 0.0
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items()}
        start = time.perf_counter()
        logits = encoder(inputs["input_ids"], inputs["attention_mask"], inputs["word_positions"])  # (L, N, C)
        preds = logits.argmax(-1).cpu()
        seconds += time.perf_counter() - start
        collector.add(batch, preds)
    return per_sentence(collector.table(), corpus), seconds
