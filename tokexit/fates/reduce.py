"""Reduce: TR-BERT's token reduction. Before a few layers (the model's :class:`~tokexit.engine.selector.TokenSelector`
steps) a learned policy scores the tokens still in the sequence; the ones it does not keep leave for good: no query,
key or value in any later layer (as with ``drop``), their state at removal restored at their position in the run's
output.

Tokens leave by *units*, which the task side of the loop defines (:attr:`~tokexit.engine.loop.Exits.units`): a
tagger's word leaves with all its subwords, decided by its first subword; a classifier's tokens leave one by one.
Special tokens ([CLS], [SEP]) always stay. A tagger's removed word gets one label from its state at removal:
by the exit head of the last layer it went through (``label_removed=exit_head``) or by the model's last exit head
(``last_head``, TR-BERT's: the state is restored for the output layer). A classifier pools what is left.

Combined with an exit policy, words the policy stops leave too (keys are the computed tokens, as with ``drop``).
"""

from __future__ import annotations

import torch

from tokexit.fates.drop import Drop

LABEL_REMOVED = ("last_head", "exit_head")


def first_of_unit(units: torch.Tensor) -> torch.Tensor:
    """(B, T) unit of each token (-1: none) -> (B, T) bool: the first token of every unit (units are contiguous)."""
    before = torch.cat([torch.full_like(units[:, :1], -1), units[:, :-1]], 1)
    return (units >= 0) & (units != before)


def keep_top(scores: torch.Tensor, rows: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """Per row, keep the ⌈ratio·n⌉ highest-scoring of its n entries (ties: the earlier entry).

    ``scores`` and ``rows`` (N,): the entries and their row, in row-major order; ``ratio``: one for all, or (N,)
    the ratio of each entry's row. Returns (N,) bool. A row's result depends on its own entries only.
    """
    n = len(scores)
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=scores.device)
    counts = torch.bincount(rows)  # (R,)
    start = counts.cumsum(0) - counts
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(rows[by_score], stable=True)]  # grouped by row, best first within a row
    rank = torch.empty_like(rows)
    rank[order] = torch.arange(n, device=rows.device) - start[rows[order]]
    k = torch.ceil(counts[rows].double() * ratio - 1e-6)  # (N,) the entry's row's budget
    return rank < k


class TokenReduction(Drop):
    """TR-BERT's token reduction at inference. A candidate stays when its keep probability is ≥ ``threshold``,
    or, with ``keep_ratio``, when it is among the ⌈keep_ratio·n⌉ most probable of the n candidates of its sentence
    at that selection point (so after two points about keep_ratio² of the tokens are left)."""

    name = "reduce"

    def __init__(self, keep_ratio: float | None = None, threshold: float = 0.5, label_removed: str = "last_head"):
        if keep_ratio is not None and not 0 < keep_ratio <= 1:
            raise ValueError(f"keep_ratio must lie in (0, 1], not {keep_ratio}")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ValueError(f"fate.threshold must be a keep probability in [0, 1], not {threshold!r}")
        if label_removed not in LABEL_REMOVED:
            raise ValueError(f"label_removed must be one of {LABEL_REMOVED}, not '{label_removed}'")
        self.keep_ratio, self.threshold, self.label_removed = keep_ratio, threshold, label_removed
        self.selector = None

    def check(self, encoder) -> None:
        if getattr(encoder, "selector", None) is None:
            raise ValueError("fate=reduce needs a model with a token selector (trained with model=token_reduction); "
                             "this model has none")

    def prepare(self, encoder, input_ids: torch.Tensor, exits) -> None:
        self.check(encoder)
        selector = encoder.selector
        units = exits.units
        if units is None:
            raise ValueError(f"fate=reduce: {type(exits).__name__} does not say which tokens may be removed")
        self.selector, self.units = selector, units  # (B, T) unit of each token, -1: never removed
        self.removable = (units >= 0) & ~selector.is_special(input_ids)  # (B, T)
        self.deciders = self.removable & first_of_unit(units)  # (B, T) the tokens whose score decides their unit
        self.num_units = int(units.max()) + 1 if units.numel() else 0

    def remove(self, step, num_steps, hidden, alive, rows) -> torch.Tensor | None:
        point = self.selector.point(step)
        if point is None:
            return None
        t = alive.shape[1]
        candidates = alive & self.deciders[rows, :t]  # (B', t)
        r, c = candidates.nonzero(as_tuple=True)
        keep = self.decide(point, hidden[r, c], rows[r], c)  # (N,)
        units = self.units[rows, :t]  # (B', t)
        dropped = torch.zeros(len(rows), max(self.num_units, 1), dtype=torch.bool, device=alive.device)
        dropped[r, units[r, c]] = ~keep
        return alive & self.removable[rows, :t] & dropped.gather(1, units.clamp(min=0))

    def decide(self, point: int, states: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(N,) bool: which of the candidate tokens at (``rows``, ``cols``) of the batch, with (N, H) ``states``,
        keep their unit at selection point ``point``. Training overrides this to sample."""
        p = self.selector(point, states)  # (N,)
        if self.keep_ratio is None:
            return p >= self.threshold
        return keep_top(p, rows, self.keep_ratio)

    def selector_flops(self, step, num_steps, alive, hidden_size) -> torch.Tensor | None:
        if self.selector.point(step) is None:
            return None
        return (alive & self.deciders).sum(1).double() * self.selector.flops_per_token

    def describe(self) -> dict:
        return {"fate": self.name, "keep_ratio": self.keep_ratio, "threshold": self.threshold,
                "label_removed": self.label_removed}
