"""Batched inference for sentence(-pair) classification (torch only, no Lightning): every exit, or early exit
with a policy (PABEE patience, entropy, truncation). Predictions come back in input order."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.classify_exit import classification_flops, classify_early_exit
from tokexit.exits.base import ExitPolicy
from tokexit.predict import _sync


@dataclass
class ClassifyRun:
    predictions: torch.Tensor  # (N,) class ids, or values for regression, in input order
    exit_layers: torch.Tensor  # (N,) 1-based
    layer_predictions: torch.Tensor | None  # (S, N) every exit's prediction, only for the full run
    flops: float  # analytic FLOPs of this run
    full_flops: float  # analytic FLOPs of the full model (last exit only) on the same data
    seconds: float  # wall clock of the forward passes


@torch.inference_mode()
def run_examples(model: MultiExitClassifier, loader: DataLoader, regression: bool, policy: ExitPolicy | None = None,
                 device: str | torch.device = "cpu") -> ClassifyRun:
    """``policy=None``: the full model with every exit's prediction. Otherwise batched early exit."""
    if policy is not None:
        policy.check_depth(len(model.plan))  # a static layer or per-layer thresholds that do not fit the model
    device = torch.device(device)
    model = model.to(device).eval()
    shape, steps = model.cost_shape(), len(model.plan)
    n = len(loader.dataset)
    predictions, exit_layers = torch.zeros(n), torch.zeros(n, dtype=torch.long)
    layers = torch.zeros(steps, n) if policy is None else None
    flops = full = seconds = 0.0
    for batch in loader:  # warm-up, untimed
        model(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
        break
    for batch in loader:
        ids, mask, types = (batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids"))
        tokens = batch["attention_mask"].sum(1)
        ones = torch.ones_like(tokens)
        full += float(classification_flops(tokens, ones * steps, ones, shape).sum())
        _sync(device)
        start = time.perf_counter()
        if policy is None:
            logits = model(ids, mask, types)  # (S, B, C)
            _sync(device)
            seconds += time.perf_counter() - start
            every = (logits[..., 0] if regression else logits.argmax(-1)).float().cpu()  # (S, B)
            layers[:, batch["index"]] = every
            predictions[batch["index"]] = every[-1]
            exit_layers[batch["index"]] = steps
            continue
        out = classify_early_exit(model, policy, ids, mask, types)
        _sync(device)
        seconds += time.perf_counter() - start
        flops += float(out.flops.sum())
        predictions[batch["index"]] = (out.logits[:, 0] if regression else out.logits.argmax(-1)).float().cpu()
        exit_layers[batch["index"]] = out.exit_layers.cpu()
    return ClassifyRun(predictions, exit_layers, layers, full if policy is None else flops, full, seconds)
