"""Training on top of the engine: Lightning modules and data modules (the engine never imports these)."""

from tokexit.lightning.datamodule import TaggingDataModule
from tokexit.lightning.self_sampling import SelfSamplingTaggerModule
from tokexit.lightning.tagging_module import MultiExitTaggerModule

__all__ = ["MultiExitTaggerModule", "SelfSamplingTaggerModule", "TaggingDataModule"]
