"""Token fates (what stopping means for the later layers): ``copy`` (halt-and-copy, default) and ``drop``."""

from tokexit.fates.base import TokenFate
from tokexit.fates.copy import HaltAndCopy
from tokexit.fates.drop import Drop

__all__ = ["TokenFate", "HaltAndCopy", "Drop"]
