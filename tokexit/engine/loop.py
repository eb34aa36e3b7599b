"""The layer loop: the one place where tokexit runs a backbone's layers, for training and for inference.

Per step of the encoder's plan (every layer, or a DynaBERT sub-network's), the loop asks

- the *exits* (:class:`Exits`: the task side — words of a tagger, examples of a classifier, or every state for
  training) which tokens are still going on: those are *computed*;
- the *fate* (:mod:`tokexit.fates`) which tokens are visible as keys and values (halt-and-copy: every real token;
  drop: only the computed ones), and whether it takes tokens out itself (a learned selector);

runs the layer for exactly those tokens, and hands the new states to the exits, which apply their head and
decide who stops. It records, per step, the (B, T) tokens computed and the (B, T) tokens visible as keys, plus
the FLOPs of the heads: analytic FLOPs, the benchmark's GEMM rows and the histograms derive from that record
alone (:class:`LoopRecord`).

Two ways to run it:

- ``packed`` (inference): only computed tokens are gathered into each layer's compute
  (:func:`~tokexit.engine.halting.sparse_layer`), sentences with nothing left to compute leave the batch for
  good and the padding only they needed is trimmed;
- dense (training, differentiable): every token goes through the layer and the states of the tokens that are not
  computed are kept, h ← m ⊙ Layer(h; keys) + (1 − m) ⊙ h, so gradients flow through exactly the exit pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch

from tokexit.engine.flops import layer_flops
from tokexit.engine.halting import sparse_layer, whole_layer
from tokexit.fates.base import TokenFate
from tokexit.fates.copy import HaltAndCopy


@dataclass
class LoopRecord:
    """What the loop did, per step run, in the batch's own rows (B, T)."""

    computed: list[torch.Tensor] = field(default_factory=list)  # (B, T) bool: tokens the layer updated
    keys: list[torch.Tensor] = field(default_factory=list)  # (B, T) bool: tokens visible as keys and values
    side_flops: list[torch.Tensor | None] = field(default_factory=list)  # (B,) FLOPs of exit heads and selectors

    def flops(self, hidden: int, intermediate: int, attention: int) -> torch.Tensor:
        """(B,) analytic FLOPs of the run (a multiply-add counts 2, matrix products only)."""
        total = torch.zeros(len(self.computed[0]), dtype=torch.float64, device=self.computed[0].device)
        for computed, keys, side in zip(self.computed, self.keys, self.side_flops, strict=True):
            total += layer_flops(keys.sum(1), computed.sum(1), hidden, intermediate, attention)
            if side is not None:
                total += side
        return total


class Exits:
    """The task side of the loop: which tokens go on, and what happens after each layer.

    Subclasses keep their own per-word or per-example state in the batch's rows; the loop passes the working
    rows (``rows``, the sentences still in the batch) with every call.
    """

    def computed(self, step: int) -> torch.Tensor:
        """(B, T) bool tokens to compute at step ``step`` (a subset of the real tokens; never grows back)."""
        raise NotImplementedError

    def after_layer(self, step: int, exit_index: int, hidden: torch.Tensor, rows: torch.Tensor,
                    real: torch.Tensor) -> torch.Tensor | None:
        """Apply exit head ``exit_index`` to the working states ``hidden`` (B', T', H) of batch rows ``rows`` (B',)
        whose real tokens are ``real`` (B', T'), and decide who stops. Returns the (B,) FLOPs of the heads run
        (None: no head ran)."""
        raise NotImplementedError

    @property
    def units(self) -> torch.Tensor | None:
        """(B, T) long: for fates that remove tokens, the unit of each token (a unit leaves whole, decided by its
        first token: a tagger's word, a classifier's single token), -1 for tokens never removed; None: the exits
        do not support such fates."""
        return None

    def removed(self, step: int, tokens: torch.Tensor, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """The fate took the (B, T) ``tokens`` out before step ``step``: they stop now, their states in the
        working ``hidden`` (B', T', H) of batch rows ``rows`` (B',) are final. Returns the (B,) FLOPs of heads
        run on them (None: none)."""
        raise NotImplementedError(f"{type(self).__name__} does not support fates that remove tokens")

    @property
    def finished(self) -> bool:
        """Nothing left to compute."""
        return False


def run_layers(
    encoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    exits: Exits,
    fate: TokenFate | None = None,
    token_type_ids: torch.Tensor | None = None,
    packed: bool = True,
) -> tuple[torch.Tensor, LoopRecord]:
    """Run ``encoder`` (a :class:`~tokexit.engine.encoder.MultiExitEncoder`) on a (B, T) batch.

    Returns the (B, T, H) final states (each token's state where it stopped) and the :class:`LoopRecord`.
    """
    fate = fate or HaltAndCopy()
    fate.prepare(encoder, input_ids, exits)
    plan = encoder.plan
    num_steps = len(plan)
    real_all = attention_mask.bool()  # (B, T)
    hidden = encoder.adapter.embed(input_ids, token_type_ids)  # (B, T, H)
    record = LoopRecord()
    b, t_all = real_all.shape
    rows = torch.arange(b, device=real_all.device)  # batch rows still in the working batch
    work, real, t = hidden, real_all, t_all  # working states (B', t, H) and their real tokens (B', t)
    whole = True  # the working batch is the whole batch (rows = 0..B-1, t = T)

    def working(x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B', t) of the working batch
        return x if whole else x[rows, :t]

    if packed:
        hidden = hidden.clone()  # the output: rows are written back as they leave the working batch
    for step, (layer, exit_index) in enumerate(plan):
        alive = exits.computed(step)  # (B, T)
        taken = fate.remove(step, num_steps, work, working(alive), rows)  # (B', t) or None
        side = fate.selector_flops(step, num_steps, alive, encoder.adapter.hidden_size)
        if taken is not None:
            full = torch.zeros_like(alive)
            full[rows, :t] = taken
            side = _add(side, exits.removed(step, full, work, rows))
            alive = exits.computed(step)
        computed = working(alive)  # (B', t)
        if packed and not bool((busy := computed.any(1)).all()):  # finished sentences leave the working batch
            done = rows[~busy]
            hidden[done, :t] = work[~busy]  # their states are final
            rows, work, whole = rows[busy], work[busy], False
            if len(rows) == 0:
                if side is not None:  # the fate removed everything left: what it spent is recorded
                    record.computed.append(alive)
                    record.keys.append(alive)
                    record.side_flops.append(side)
                break
            t = int(real_all[rows].sum(1).max())  # trailing columns that are padding for every row left
            work, real, computed = work[:, :t], real_all[rows, :t], alive[rows, :t]
        keys = fate.keys(real, computed) | computed
        record.computed.append(alive)
        record.keys.append(keys if whole else _full(keys, rows, b, t_all))
        parts = encoder.layer_parts(layer)
        if packed:
            work = sparse_layer(parts, work, real, keys, computed)
        else:
            work = whole_layer(partial(encoder.layer, layer), work, real, keys, computed)
        head = exits.after_layer(step, exit_index, work, rows, real)
        record.side_flops.append(_add(side, head))
        if exits.finished:
            break
    if packed:
        hidden[rows, :t] = work
        return hidden, record
    return work, record


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Sum of two optional (B,) FLOPs counts."""
    return b if a is None else a if b is None else a + b


def _full(values: torch.Tensor, rows: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(B', t') values of the working rows -> (B, T), False elsewhere."""
    if values.shape == (b, t):
        return values
    out = values.new_zeros(b, t)
    out[rows, : values.shape[1]] = values
    return out
