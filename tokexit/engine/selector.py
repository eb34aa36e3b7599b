"""TR-BERT's token selector: before a few layers, a small policy net gives every token a keep probability.

The selector belongs to the model (``MultiExitEncoder.selector``, saved with it); the ``reduce`` fate
(:class:`~tokexit.fates.reduce.TokenReduction`) turns its probabilities into removals at inference, and training
(:mod:`tokexit.lightning.token_reduction`) samples keep actions from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

WIDTH = 32  # the policy net's hidden width (TR-BERT's)


def default_steps(num_layers: int) -> list[int]:
    """Selection steps (0-based; selection happens *before* that step's layer) of a ``num_layers``-layer model:
    before layer 2 and before the middle layer, as in TR-BERT (6 layers: before layers 2 and 4, steps [1, 3])."""
    steps = sorted({s for s in (1, num_layers // 2) if 1 <= s < num_layers})
    if not steps:
        raise ValueError(f"token selection needs a model of at least 2 layers, not {num_layers}")
    return steps


class TokenSelector(nn.Module):
    """One policy net per selection step: sigmoid(Linear(width → 1)(GELU(Linear(hidden → width)(h)))).

    ``steps``: the 0-based steps of the model's plan before which tokens are selected (strictly increasing, ≥ 1:
    a removed word is labelled from a layer it went through). ``special_ids``: token ids that always stay
    ([CLS], [SEP], padding…; a tagger's specials are also known from its word map).
    """

    def __init__(self, hidden_size: int, steps: Sequence[int], special_ids: Sequence[int] = (), width: int = WIDTH):
        super().__init__()
        steps = [int(s) for s in steps]
        if not steps or steps[0] < 1 or any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"selection steps must be strictly increasing and >= 1, not {steps}")
        self.steps, self.width, self.hidden_size = tuple(steps), width, hidden_size
        self.policies = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1)) for _ in steps
        )
        self.register_buffer("special_ids", torch.tensor(sorted(set(special_ids)), dtype=torch.long),
                             persistent=False)

    def point(self, step: int) -> int | None:
        """The selection point (index into :attr:`steps`) before step ``step``; None: no selection there."""
        return self.steps.index(step) if step in self.steps else None

    def logits(self, point: int, states: torch.Tensor) -> torch.Tensor:
        """(N, H) token states -> (N,) keep logits of selection point ``point``."""
        return self.policies[point](states).squeeze(-1)

    def forward(self, point: int, states: torch.Tensor) -> torch.Tensor:
        """(N, H) token states -> (N,) keep probabilities."""
        return torch.sigmoid(self.logits(point, states))

    @property
    def flops_per_token(self) -> float:
        """Matrix-product FLOPs of scoring one token (a multiply-add counts 2, like ``torch.utils.flop_counter``)."""
        return 2.0 * self.width * (self.hidden_size + 1)

    def is_special(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T) bool: tokens that always stay."""
        return torch.isin(input_ids, self.special_ids.to(input_ids.device))

    def config(self) -> dict:
        """What rebuilds this selector (the model directory's metadata): ``TokenSelector(hidden, **config)``."""
        return {"steps": list(self.steps), "special_ids": self.special_ids.tolist(), "width": self.width}
