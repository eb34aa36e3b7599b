"""The inference engine: layers, exits, encoders. Needs only torch and transformers."""

from tokexit.engine.early_exit import ExitOutput, early_exit_forward
from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.heads import ExitHead
from tokexit.engine.layer import encoder_layer, key_mask

__all__ = ["ExitOutput", "early_exit_forward", "MultiExitEncoder", "ExitHead", "encoder_layer", "key_mask"]
