"""What an inference run does beyond the plain model: an exit policy and a token fate."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokexit.exits.base import ExitPolicy
from tokexit.exits.none import NoExit
from tokexit.fates.base import TokenFate
from tokexit.fates.copy import HaltAndCopy


@dataclass
class Setting:
    """An exit policy (:mod:`tokexit.exits`) and a token fate (:mod:`tokexit.fates`); the defaults are the full
    model (no exit, halt-and-copy)."""

    policy: ExitPolicy = field(default_factory=NoExit)
    fate: TokenFate = field(default_factory=HaltAndCopy)

    @property
    def is_full_model(self) -> bool:
        """Whether this is the plain model: every token through every layer, only the last exit head run."""
        return isinstance(self.policy, NoExit) and isinstance(self.fate, HaltAndCopy)

    def check(self, model, kind: str) -> None:
        """ValueError where this setting cannot run on ``model`` (a ``kind`` model, e.g. ``token_tagger``): a
        policy for the other task, a layer or per-layer thresholds the model lacks, a fate it cannot serve (checked
        before a run starts)."""
        self.policy.check_kind(kind)
        self.policy.check_depth(len(model.plan))
        self.fate.check(model)

    def describe(self) -> dict:
        """The ``exit`` and ``fate`` entries of metrics.json."""
        return {"exit": self.policy.describe(), "fate": self.fate.describe()}
