"""One pass of a model over a data loader, the same for every task (torch only, no Lightning).

Two modes: *every exit* (``setting=None``: the model's plain forward, each exit's prediction for every word or
example, for the per-layer table) and a :class:`~tokexit.inference.setting.Setting` (the layer loop with an exit
policy and a token fate). The first batch is run once untimed (allocator and kernel selection), then every batch
is timed (forward passes only). FLOPs of a setting come from the layer loop's record; the full model's are
analytic (every token, every layer, the last exit head only). The task side (:class:`Batches`) says what a
batch feeds the model and where its predictions go.

:func:`predict_batches` is the production path (``Tagger.tag``, ``Classifier.classify``, ``tokexit.tag``): one pass,
no warm-up, no timing, no FLOPs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.utils.data import DataLoader

from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.loop import LoopRecord
from tokexit.inference.setting import Setting


@dataclass
class TokenTally:
    """Real tokens computed, and visible as keys, at every step of the plan, summed over a run's batches."""

    computed: list[float]
    keys: list[float]
    real: float = 0.0

    @classmethod
    def empty(cls, steps: int) -> TokenTally:
        return cls([0.0] * steps, [0.0] * steps)

    def add(self, record: LoopRecord | None, attention_mask: torch.Tensor) -> None:
        """Count a batch: its loop ``record``, or None for a dense run (every real token at every step)."""
        real = float(attention_mask.sum())
        self.real += real
        for step in range(len(self.computed)):
            if record is None:
                self.computed[step] += real
                self.keys[step] += real
            elif step < len(record.computed):  # steps after the loop ended compute nothing
                self.computed[step] += float(record.computed[step].sum())
                self.keys[step] += float(record.keys[step].sum())

    def fractions(self) -> dict[str, list[float]]:
        """Per step, the fraction of the real tokens computed and visible as keys (metrics.json)."""
        real = max(self.real, 1.0)
        return {"computed": [round(c / real, 4) for c in self.computed],
                "keys": [round(k / real, 4) for k in self.keys]}


@dataclass
class Run:
    """A pass over a data set: per unit (a word of a tagger, an example of a classifier), in the data's order, the
    prediction and exit layer; what the pass cost."""

    predictions: torch.Tensor  # (N,) label ids (a classifier's: float class ids or values)
    exit_layers: torch.Tensor  # (N,) 1-based step at which each unit stopped
    layer_predictions: torch.Tensor | None  # (S, N) every exit's prediction; only for the every-exit run
    flops: float  # analytic FLOPs of this run
    full_flops: float  # analytic FLOPs of the full model (last exit only) on the same data
    seconds: float  # wall clock of the forward passes, tokenisation excluded
    tokens: TokenTally = field(repr=False)


class Batches(Protocol):
    """The task side of a run: one fresh object per run (it collects the run's predictions)."""

    def full_flops(self, model: MultiExitEncoder, batch: dict[str, torch.Tensor]) -> float:
        """Analytic FLOPs of the full model (last exit only) on ``batch``."""

    def forward(self, model: MultiExitEncoder, batch: dict[str, torch.Tensor], setting: Setting | None):
        """The timed part: every exit's output (``setting`` None) or the layer loop's output."""

    def collect(self, batch: dict[str, torch.Tensor], output, setting: Setting | None) -> None:
        """Keep the batch's predictions: from every exit, or each unit's prediction and exit layer."""

    def result(self) -> torch.Tensor:
        """(K, N) the collected columns in the data's order: prediction, exit layer[, every exit's prediction]."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def run_batches(model: MultiExitEncoder, loader: DataLoader, batches: Batches, setting: Setting | None = None,
                device: str | torch.device = "cpu") -> Run:
    """Run ``model`` over ``loader`` with ``setting`` (None: every exit of the full model). See the module."""
    if setting is not None:
        setting.policy.check_depth(len(model.plan))  # a static layer or per-layer thresholds that do not fit
    device = torch.device(device)
    model = model.to(device).eval()
    for batch in loader:  # warm-up: allocator and kernel selection, untimed
        batches.forward(model, {k: v.to(device) for k, v in batch.items()}, setting)
        break
    flops = full = seconds = 0.0
    tokens = TokenTally.empty(len(model.plan))
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items()}
        reference = batches.full_flops(model, batch)
        _sync(device)
        start = time.perf_counter()
        output = batches.forward(model, inputs, setting)
        _sync(device)
        seconds += time.perf_counter() - start
        full += reference
        flops += reference if setting is None else float(output.flops.sum())
        tokens.add(None if setting is None else output.record, batch["attention_mask"])
        batches.collect(inputs, output, setting)
    table = batches.result()
    return Run(table[0], table[1].long(), table[2:] if setting is None else None, flops, full, seconds, tokens)


@torch.inference_mode()
def predict_batches(model: MultiExitEncoder, loader: DataLoader | list, batches: Batches, setting: Setting,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """One pass of ``model`` with ``setting`` over ``loader``, nothing else: no warm-up run, no timing, no FLOPs.
    -> (2, N) prediction and exit layer of every unit, in the data's order (``batches.result()``)."""
    setting.policy.check_depth(len(model.plan))
    device = torch.device(device)
    for batch in loader:
        inputs = {k: v if v.device == device else v.to(device, non_blocking=True) for k, v in batch.items()}
        batches.collect(inputs, batches.forward(model, inputs, setting), setting)
    return batches.result()
