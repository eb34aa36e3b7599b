"""Exit policies for sequence labeling. Build one from a config with ``hydra.utils.instantiate`` or directly."""

from tokexit.exits.base import ExitPolicy, normalised_entropy, one_minus_max_prob
from tokexit.exits.none import NoExit
from tokexit.exits.sentence import SentenceExit
from tokexit.exits.static import StaticExit
from tokexit.exits.token_window import TokenWindowExit

__all__ = ["ExitPolicy", "NoExit", "SentenceExit", "StaticExit", "TokenWindowExit", "normalised_entropy",
           "one_minus_max_prob"]
