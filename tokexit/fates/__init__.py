"""Token fates (what stopping means for the later layers): ``copy`` (halt-and-copy, default), ``drop`` and
``reduce`` (TR-BERT's learned token reduction)."""

from tokexit.fates.base import TokenFate
from tokexit.fates.copy import HaltAndCopy
from tokexit.fates.drop import Drop
from tokexit.fates.reduce import TokenReduction

#: every fate by its name (``fate=`` in configs, ``--fate`` in the scripts), built with its defaults
FATES: dict[str, type[TokenFate]] = {fate.name: fate for fate in (HaltAndCopy, Drop, TokenReduction)}

__all__ = ["FATES", "TokenFate", "HaltAndCopy", "Drop", "TokenReduction"]
