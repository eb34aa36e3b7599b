"""Token fates: what happens to the tokens that stop.

After every layer an exit policy (or a fate's own selector) says which tokens stop; the fate says what stopping
means for the layers that follow. A fate is one small class in its own module of this package plus one YAML
file in ``tokexit/conf/fate``; the layer loop (:mod:`tokexit.engine.loop`) asks it two things per layer:

- :meth:`TokenFate.keys`: which tokens are visible as keys and values, given the tokens computed;
- :meth:`TokenFate.remove`: which tokens the fate itself takes out before the layer (a learned selector such
  as TR-BERT's, see :mod:`tokexit.fates.reduce`; exit-policy fates take out none).

A fate that removes tokens gets the model and the batch first (:meth:`TokenFate.prepare`, at the start of every
run).

FLOPs and the benchmark's GEMM rows follow from what the loop records (tokens computed and tokens visible per
layer), so a new fate is counted right without touching the counter.
"""

from __future__ import annotations

import torch


class TokenFate:
    """Base class: stopped tokens are frozen and stay visible as keys and values (see :class:`HaltAndCopy`)."""

    name = "base"
    #: which exit head labels a word the fate removes: ``exit_head`` (the head of the last layer it went through)
    #: or ``last_head`` (the model's last head, on the word's state at removal restored at its position)
    label_removed = "exit_head"

    def check(self, encoder) -> None:
        """ValueError where the fate cannot run on ``encoder`` (checked before a run starts, and by
        :meth:`prepare`)."""

    def prepare(self, encoder, input_ids: torch.Tensor, exits) -> None:
        """Called at the start of every run with the model, the (B, T) ids and the run's
        :class:`~tokexit.engine.loop.Exits` (a fate with its own selector takes it, and the removable units,
        from here)."""

    def keys(self, real: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
        """(B, T) bool tokens visible as keys and values in this layer. ``real``: the (B, T) non-padding tokens;
        ``computed``: the (B, T) tokens the layer updates (always a subset of the result)."""
        raise NotImplementedError

    def remove(self, step: int, num_steps: int, hidden: torch.Tensor, alive: torch.Tensor,
               rows: torch.Tensor) -> torch.Tensor | None:
        """(B', T') tokens to take out before step ``step`` (0-based) among the ``alive`` ones, from the
        (B', T', H) working states of batch rows ``rows`` (B',); None: the fate selects nothing itself (the exit
        policy alone decides)."""
        return None

    def selector_flops(self, step: int, num_steps: int, alive: torch.Tensor, hidden_size: int) -> torch.Tensor | None:
        """(B,) FLOPs the fate's own selector spends before step ``step`` (None: it spends none)."""
        return None

    def describe(self) -> dict:
        """The fate's settings, for metrics.json."""
        return {"fate": self.name}
