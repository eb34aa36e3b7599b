"""DynaBERT sub-networks: a width multiplier keeps the first heads and feed-forward neurons of every layer, a
depth multiplier keeps an evenly spread subset of the layers. Weights are sliced as views: no copies.

After rewiring (:mod:`tokexit.engine.rewiring`) the first heads and neurons are the most important ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from tokexit.backbones.base import LayerParts


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class SubNetwork:
    """Width multiplier (fraction of heads and neurons) and depth multiplier (fraction of layers)."""

    width: float = 1.0
    depth: float = 1.0

    def __post_init__(self):
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in (self.width, self.depth)) or \
                not (0 < self.width <= 1 and 0 < self.depth <= 1):
            raise ValueError(f"width and depth multipliers must lie in (0, 1], not {self.width}, {self.depth}")

    @property
    def is_full(self) -> bool:
        return self.width == 1.0 and self.depth == 1.0

    def heads(self, num_heads: int) -> int:
        return max(1, math.ceil(self.width * num_heads - 1e-9))

    def neurons(self, intermediate: int) -> int:
        return max(1, round_half_up(self.width * intermediate))

    def layers(self, num_layers: int) -> list[int]:
        """0-based layers kept, the reference rule: layer ⌊i / m_d⌋ for i < round(L · m_d)
        (m_d = 0.5 keeps 0, 2, 4, …; m_d = 0.75 of 12 layers drops 3, 7 and 11)."""
        kept = max(1, round_half_up(num_layers * self.depth))
        return [min(math.floor(i / self.depth + 1e-9), num_layers - 1) for i in range(kept)]

    def exits(self, num_layers: int) -> list[int]:
        """For each kept layer, the full-depth layer whose output it stands for (and whose exit head it uses):
        kept layer j of k matches layer round(j · L / k), so the last kept layer always matches the last layer."""
        k = len(self.layers(num_layers))
        return [round_half_up((j + 1) * num_layers / k) - 1 for j in range(k)]

    def plan(self, num_layers: int) -> list[tuple[int, int]]:
        """(layer to run, exit head to use) for every step of the sub-network."""
        return list(zip(self.layers(num_layers), self.exits(num_layers), strict=True))


class SlicedLinear:
    """The first output rows or input columns of a linear layer, as views (gradients reach the full weight)."""

    def __init__(self, linear, rows: int | None = None, columns: int | None = None):
        if rows is not None:
            self.weight, self.bias = linear.weight[:rows], linear.bias[:rows]
        else:
            self.weight, self.bias = linear.weight[:, :columns], linear.bias
        self.out_features, self.in_features = self.weight.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def slice_layer(parts: LayerParts, heads: int, neurons: int) -> LayerParts:
    """The layer with only its first ``heads`` attention heads and first ``neurons`` feed-forward neurons."""
    if heads == parts.num_heads and neurons == parts.ffn_in.out_features:
        return parts
    width = heads * parts.head_dim
    return replace(
        parts,
        query=SlicedLinear(parts.query, rows=width),
        key=SlicedLinear(parts.key, rows=width),
        value=SlicedLinear(parts.value, rows=width),
        attn_out=SlicedLinear(parts.attn_out, columns=width),
        ffn_in=SlicedLinear(parts.ffn_in, rows=neurons),
        ffn_out=SlicedLinear(parts.ffn_out, columns=neurons),
        num_heads=heads,
    )
