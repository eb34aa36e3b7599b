"""Exit policies for sequence labeling and classification.

Build one from a config with ``hydra.utils.instantiate`` or directly.
"""

from tokexit.exits.base import ExitPolicy, entropy, normalised_entropy, one_minus_max_prob
from tokexit.exits.entropy import EntropyExit
from tokexit.exits.none import NoExit
from tokexit.exits.patience import PatienceExit
from tokexit.exits.sentence import SentenceExit
from tokexit.exits.static import StaticExit
from tokexit.exits.token_window import TokenWindowExit

__all__ = ["EntropyExit", "ExitPolicy", "NoExit", "PatienceExit", "SentenceExit", "StaticExit", "TokenWindowExit",
           "entropy", "normalised_entropy", "one_minus_max_prob"]
