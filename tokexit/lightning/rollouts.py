"""What token-reduction training does on the layer loop (torch only): sampling passes, the policy's losses.

A *rollout* is one dense pass of the model through :func:`~tokexit.engine.loop.run_layers` with a reduction fate
whose keep decisions are made by training rather than by the threshold: Bernoulli actions drawn from the
selector's probabilities (:class:`SampledReduction`, REINFORCE) or keep-sets taken from a token importance
(:class:`ImportanceReduction`, the imitation warm-up). Each decision is recorded with the states it was made from;
the pass's per-step tokens are the exit pattern the model is then trained on (``hidden_states(token_masks=...,
fate=Drop())``), so training sees exactly the removals that were decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.loop import Exits, run_layers
from tokexit.engine.selector import TokenSelector
from tokexit.fates.reduce import TokenReduction, keep_top


@dataclass
class Decision:
    """The keep decisions of one selection point: (N,) candidates of batch rows ``rows``, their (N, H) states
    (detached) and whether each kept its unit."""

    point: int
    rows: torch.Tensor
    states: torch.Tensor
    keep: torch.Tensor


class KeptTokens(Exits):
    """A training pass's exits: every token that no decision removed goes on; ``units`` as inference has them."""

    def __init__(self, attention_mask: torch.Tensor, units: torch.Tensor):
        self.kept = attention_mask.bool().clone()  # (B, T)
        self._units = units

    @property
    def units(self) -> torch.Tensor:
        return self._units

    def computed(self, step: int) -> torch.Tensor:
        return self.kept

    def after_layer(self, step, exit_index, hidden, rows, real) -> None:
        return None

    def removed(self, step, tokens, hidden, rows) -> None:
        self.kept = self.kept & ~tokens  # a new tensor: the loop keeps the earlier ones in its record
        return None


class SampledReduction(TokenReduction):
    """REINFORCE's actions: each candidate keeps its unit with probability p (Bernoulli), recorded."""

    def __init__(self):
        super().__init__()
        self.decisions: list[Decision] = []

    def decide(self, point, states, rows, cols) -> torch.Tensor:
        keep = torch.bernoulli(self.selector(point, states)).bool()
        self.decisions.append(Decision(point, rows, states.detach(), keep))
        return keep


class ImportanceReduction(TokenReduction):
    """The imitation warm-up's keep-sets: at point j, each sentence keeps its ⌈r·n⌉ most important units (a unit's
    importance: the sum over its tokens of ``importance[j]`` (B, T)), r = ``ratios[j]`` (B,) drawn per sentence."""

    def __init__(self, importance: list[torch.Tensor], ratios: torch.Tensor):
        super().__init__()
        self.importance, self.ratios = importance, ratios
        self.decisions: list[Decision] = []

    def decide(self, point, states, rows, cols) -> torch.Tensor:
        units = self.units.clamp(min=0)  # (B, T)
        per_unit = torch.zeros(len(units), max(self.num_units, 1), device=units.device)
        per_unit.scatter_add_(1, units, self.importance[point].float() * self.removable)  # (B, U)
        keep = keep_top(per_unit[rows, units[rows, cols]], rows, self.ratios[point][rows])
        self.decisions.append(Decision(point, rows, states.detach(), keep))
        return keep


@dataclass
class Rollout:
    masks: torch.Tensor  # (S, B, T) tokens computed at every step (the exit pattern to train on)
    removable: torch.Tensor  # (B, T) tokens a decision may remove
    decisions: list[Decision]


@torch.no_grad()
def rollout(encoder: MultiExitEncoder, batch: dict[str, torch.Tensor], units: torch.Tensor,
            fate: SampledReduction | ImportanceReduction) -> Rollout:
    """One dense pass in eval mode (the states inference would see), ``fate`` deciding at every selection point."""
    was_training = encoder.training
    encoder.eval()
    _, record = run_layers(encoder, batch["input_ids"], batch["attention_mask"],
                           KeptTokens(batch["attention_mask"], units), fate, batch.get("token_type_ids"),
                           packed=False)
    encoder.train(was_training)
    return Rollout(torch.stack(record.computed), fate.removable, fate.decisions)


def kept_ratios(masks: torch.Tensor, removable: torch.Tensor, steps: tuple[int, ...]) -> torch.Tensor:
    """(P, B) share of each sentence's removable tokens still in the sequence after each selection point
    (1 where a sentence has none)."""
    total = removable.sum(1)  # (B,)
    kept = torch.stack([(masks[s] & removable).sum(1) for s in steps if s < len(masks)])  # (P, B)
    return torch.where(total > 0, kept / total.clamp(min=1), torch.ones_like(kept, dtype=torch.float))


def log_probs(selector: TokenSelector, decisions: list[Decision], num_rows: int) -> torch.Tensor:
    """(B,) Σ log π(action | state) over each row's decisions, differentiable in the selector."""
    total = torch.zeros(num_rows, device=selector.special_ids.device)
    for d in decisions:
        logp = -F.binary_cross_entropy_with_logits(selector.logits(d.point, d.states), d.keep.float(),
                                                   reduction="none")  # (N,)
        total = total.index_add(0, d.rows, logp)
    return total


def reinforce_loss(log_prob: torch.Tensor, reward: torch.Tensor, rollouts: int) -> torch.Tensor:
    """REINFORCE with the mean reward of an example's rollouts as baseline. ``log_prob`` and ``reward`` (B·K,):
    K = ``rollouts`` consecutive rows per example. Minimising it raises the probability of better-than-average
    rollouts."""
    reward = reward.detach().view(-1, rollouts)
    advantage = (reward - reward.mean(1, keepdim=True)).flatten()
    return -(advantage * log_prob).mean()


def imitation_loss(selector: TokenSelector, decisions: list[Decision]) -> torch.Tensor:
    """Binary cross-entropy of the selector's keep probabilities against the recorded keep-sets."""
    logits = torch.cat([selector.logits(d.point, d.states) for d in decisions])
    targets = torch.cat([d.keep for d in decisions]).float()
    if len(targets) == 0:  # nothing to decide in this batch: a zero that still reaches every policy weight
        return sum(p.sum() for p in selector.parameters()) * 0.0
    return F.binary_cross_entropy_with_logits(logits, targets)


def token_importance(states: list[torch.Tensor], loss: torch.Tensor, steps: tuple[int, ...]) -> list[torch.Tensor]:
    """Per selection step s, the (B, T) gradient × input importance |h · ∂L/∂h| of the states entering step s
    (the output of step s − 1) of a dense, differentiable pass."""
    picked = [states[s - 1] for s in steps]
    grads = torch.autograd.grad(loss, picked)
    return [(h * g).sum(-1).abs().detach() for h, g in zip(picked, grads, strict=True)]
