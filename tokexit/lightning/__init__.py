"""Training on top of the engine: Lightning modules and data modules (the engine never imports these)."""

from tokexit.lightning.classification_datamodule import ClassificationDataModule
from tokexit.lightning.classification_module import MultiExitClassifierModule
from tokexit.lightning.datamodule import TaggingDataModule
from tokexit.lightning.dynabert_module import DynaBertModule
from tokexit.lightning.self_sampling import SelfSamplingTaggerModule
from tokexit.lightning.tagging_module import MultiExitTaggerModule
from tokexit.lightning.token_reduction import TokenReductionModule

__all__ = [
    "ClassificationDataModule",
    "DynaBertModule",
    "MultiExitClassifierModule",
    "MultiExitTaggerModule",
    "SelfSamplingTaggerModule",
    "TaggingDataModule",
    "TokenReductionModule",
]
