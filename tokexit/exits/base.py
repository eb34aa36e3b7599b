"""Exit policies decide, after each layer, which words (sequence labeling) or which examples (sequence
classification) stop. They see small tensors only, never the model.

A policy is one small class in its own module of this package plus one YAML file in ``tokexit/conf/exit``. Labeling
policies implement ``decide``; classification policies ``decide_examples`` (with per-example state from
``start_examples``, whose rows the engine drops as examples finish); a policy may implement both.
"""

from __future__ import annotations

import math

import torch


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) H(softmax) / log C, in [0, 1]."""
    return _negative_entropy(logits).div_(-math.log(logits.shape[-1]))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) raw entropy of softmax, log Σ eˣ − Σ x eˣ / Σ eˣ (DeeBERT), in [0, log C]."""
    return _negative_entropy(logits).neg_()


def _negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) Σ p log p of softmax(logits), in fp32."""
    logp = torch.log_softmax(logits if logits.dtype == torch.float32 else logits.float(), dim=-1)
    return (logp.exp() * logp).sum(-1)


def one_minus_max_prob(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) 1 - max softmax probability, in [0, 1 - 1/C]."""
    return 1.0 - torch.softmax(logits.float(), dim=-1).amax(-1)


UNCERTAINTY = {"entropy": normalised_entropy, "max_prob": one_minus_max_prob}


class ExitPolicy:
    """Base class. ``decide`` returns the words that stop after ``layer`` (0-based) among the active ones."""

    name = "base"
    #: the models the policy decides for: ``token_tagger`` (:meth:`decide`), ``sequence_classifier``
    #: (:meth:`decide_examples`)
    kinds: tuple[str, ...] = ("token_tagger", "sequence_classifier")

    def __init__(self, uncertainty: str = "entropy"):
        if uncertainty not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {sorted(UNCERTAINTY)}, not '{uncertainty}'")
        self.uncertainty_name = uncertainty

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        return UNCERTAINTY[self.uncertainty_name](logits)

    def check_kind(self, kind: str) -> None:
        """ValueError unless the policy decides for a ``kind`` model (checked before a run starts)."""
        if kind not in self.kinds:
            other = "token_window" if kind == "token_tagger" else "entropy or patience"
            raise ValueError(f"exit={self.name} does not decide for a {kind} model (it is for a "
                             f"{' or '.join(self.kinds)}): use exit={other}")

    def check_depth(self, num_layers: int) -> None:
        """Raise ValueError naming the setting when the policy does not fit a model that runs ``num_layers``
        layers (a static layer beyond it, per-layer thresholds of another length). Called before every run."""

    def largest_threshold(self, num_labels: int) -> float:
        """For a policy with a ``threshold``: the largest value that can still matter (the uncertainty's maximum),
        where calibration (``exit.target_speedup``) starts."""
        return 1.0

    def can_stop(self, layer: int, num_layers: int) -> bool:
        """Whether ``decide`` may stop anything after ``layer``; where not, the engine skips that exit head."""
        return True

    def decide(
        self, layer: int, num_layers: int, uncertainty: torch.Tensor, active: torch.Tensor, words: torch.Tensor
    ) -> torch.Tensor:
        """All arguments (B, W): ``uncertainty`` of every word's latest prediction (frozen for stopped words),
        ``active`` words still running, ``words`` real (non-padding) words. Returns a (B, W) bool mask of the
        words that stop now; the engine restricts it to active words and stops every word at the last layer."""
        raise NotImplementedError

    def start_examples(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-example state for :meth:`decide_examples`: tensors with ``batch_size`` rows."""
        return {}

    def decide_examples(self, step: int, num_steps: int, logits: torch.Tensor,
                        state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sequence classification: (b, C) logits of this step's exit for the examples still running (C = 1:
        regression) -> (b,) bool, the examples that stop now. May update ``state`` in place."""
        raise NotImplementedError(f"exit policy '{self.name}' does not support sequence classification")

    def describe(self) -> dict:
        """The policy's settings, for metrics.json."""
        return {"policy": self.name, "uncertainty": self.uncertainty_name}


def check_threshold(value, name: str = "exit.threshold") -> float:
    """An uncertainty threshold (a real number >= 0; a (B,) tensor of them per sentence), or ValueError naming
    ``name``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and bool((value >= 0).all()):
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return value
    raise ValueError(f"{name} must be a number >= 0 (an uncertainty below which a prediction counts as confident), "
                     f"not {value!r}")


def check_threshold_list(thresholds: list[float] | None) -> list[float] | None:
    """Per-layer ``exit.thresholds`` (None: one threshold for every layer), each checked by :func:`check_threshold`."""
    return None if thresholds is None else [check_threshold(t, "exit.thresholds") for t in thresholds]


def layer_thresholds(threshold: float, num_layers: int, thresholds: list[float] | None,
                     upper_factor: float) -> list[float]:
    """Per-layer thresholds: explicit ``thresholds`` or ``threshold`` for the lower half of the layers and
    ``upper_factor * threshold`` for the upper half (the token-level reference doubles it)."""
    if thresholds is not None:
        check_thresholds(thresholds, num_layers)
        return [float(t) for t in thresholds]
    half = num_layers // 2
    return [threshold if i < half else threshold * upper_factor for i in range(num_layers)]


def check_thresholds(thresholds: list[float] | None, num_layers: int) -> None:
    """Per-layer ``exit.thresholds`` must give one value per layer the model runs."""
    if thresholds is not None and len(thresholds) != num_layers:
        raise ValueError(f"exit.thresholds has {len(thresholds)} values but the model runs {num_layers} layers: "
                         f"give one threshold per layer ({num_layers} values), or exit.threshold alone")


def check_layer(layer: int, num_layers: int) -> None:
    """A 1-based ``exit.layer`` must be a layer the model runs."""
    if layer > num_layers:
        raise ValueError(f"exit.layer={layer} is beyond the model's depth: it runs {num_layers} layers, "
                         f"so exit.layer must be 1..{num_layers}")


def check_layer_setting(layer) -> int:
    """``exit.layer`` is a 1-based layer number (an int >= 1)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"exit.layer must be a whole layer number (1-based), not {layer!r}")
    if layer < 1:
        raise ValueError(f"exit.layer is 1-based and must be >= 1, not {layer}")
    return layer
