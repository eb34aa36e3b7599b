"""tokexit: early exit for pretrained transformer encoders (sentence-, token- and layer-level)."""

__version__ = "0.1.0"
