"""Batched inference over a corpus (torch only, no Lightning): every exit layer, or early exit with a policy."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from tokexit.data.conll import Corpus
from tokexit.data.tagging import LabelSet, build_dataset, length_sorted_loader
from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.engine.flops import full_model_flops
from tokexit.evaluation import PredictionCollector, per_sentence
from tokexit.exits.base import ExitPolicy


def corpus_loader(corpus: Corpus, tokenizer, labels: LabelSet | None, batch_size: int, max_length: int) -> DataLoader:
    """Windows of the corpus in batches of similar length (less padding; results do not depend on it)."""
    data = build_dataset(corpus, tokenizer, labels, max_length)
    return length_sorted_loader(data, batch_size, tokenizer.pad_token_id)


@dataclass
class ExitRun:
    """Per sentence: predictions, exit layers, and for full runs every layer's predictions; totals of the run."""

    predictions: list[torch.Tensor]  # (n_words,) label ids
    exit_layers: list[torch.Tensor]  # (n_words,) 1-based
    layer_predictions: list[torch.Tensor] | None  # (L, n_words), only for the all-layers run
    flops: float  # analytic FLOPs of this run
    full_flops: float  # analytic FLOPs of the full model (last head only) on the same data
    seconds: float  # wall clock of the forward passes, tokenisation excluded


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def run_corpus(encoder: MultiExitEncoder, loader: DataLoader, corpus: Corpus, policy: ExitPolicy | None = None,
               device: str | torch.device = "cpu") -> ExitRun:
    """``policy=None``: the full model with every exit's prediction (per-layer tables). Otherwise early exit."""
    if policy is not None:
        policy.check_depth(len(encoder.plan))  # a static layer or per-layer thresholds that do not fit the model
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    shape = encoder.cost_shape()
    collector, flops, full, seconds = PredictionCollector(), 0.0, 0.0, 0.0
    for batch in loader:  # warm-up: allocator and kernel selection, untimed
        encoder(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "word_positions")))
        break
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items()}
        words = (batch["word_positions"] >= 0).sum(1)
        full += float(full_model_flops(batch["attention_mask"].sum(1), words, shape["steps"], shape["hidden"],
                                       shape["intermediate"], shape["num_labels"], "last", shape["attention"]).sum())
        _sync(device)
        start = time.perf_counter()
        if policy is None:
            preds = encoder(inputs["input_ids"], inputs["attention_mask"], inputs["word_positions"]).argmax(-1)
            _sync(device)
            seconds += time.perf_counter() - start
            layers = torch.full_like(preds[0], shape["steps"])
            collector.add(batch, torch.cat([preds[-1:], layers[None], preds]).cpu())
            continue
        out = early_exit_forward(encoder, policy, inputs["input_ids"], inputs["attention_mask"],
                                 inputs["word_positions"], inputs["token_word"])
        _sync(device)
        seconds += time.perf_counter() - start
        flops += float(out.flops.sum())
        words_mask = inputs["word_positions"] >= 0
        collector.add(batch, torch.stack([out.predictions[words_mask], out.exit_layers[words_mask]]).cpu())
    if policy is None:
        flops = full
    columns = per_sentence(collector.table(), corpus)
    return ExitRun(
        predictions=[c[0] for c in columns],
        exit_layers=[c[1] for c in columns],
        layer_predictions=[c[2:] for c in columns] if policy is None else None,
        flops=flops,
        full_flops=full,
        seconds=seconds,
    )


def predict_corpus(encoder: MultiExitEncoder, tokenizer, labels: LabelSet, corpus: Corpus, *, policy=None,
                   batch_size: int = 32, max_length: int = 512, device: str | torch.device = "cpu") -> ExitRun:
    """Tokenise ``corpus`` and run it (see :func:`run_corpus`)."""
    if not corpus.sentences:
        return ExitRun([], [], [] if policy is None else None, 0.0, 0.0, 0.0)
    loader = corpus_loader(corpus, tokenizer, labels, batch_size, max_length)
    return run_corpus(encoder, loader, corpus, policy, device)
