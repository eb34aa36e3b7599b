"""Token fates (what stopping means for the later layers): ``copy`` (halt-and-copy, default), ``drop`` and
``reduce`` (TR-BERT's learned token reduction)."""

from tokexit.fates.base import TokenFate
from tokexit.fates.copy import HaltAndCopy
from tokexit.fates.drop import Drop
from tokexit.fates.reduce import TokenReduction

__all__ = ["TokenFate", "HaltAndCopy", "Drop", "TokenReduction"]
