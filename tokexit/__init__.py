"""tokexit: early exit for pretrained transformer encoders (sentence-, token- and layer-level)."""

from pathlib import Path

__version__ = "0.1.0"

#: The Hydra configs shipped inside the package (``data/``, ``model/``, ``trainer/``, ``exit/``, ``fate/``,
#: ``experiment/``).
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
