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

    def describe(self) -> dict:
        """The ``exit`` and ``fate`` entries of metrics.json."""
        return {"exit": self.policy.describe(), "fate": self.fate.describe()}
