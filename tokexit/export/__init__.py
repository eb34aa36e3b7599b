"""Export DynaBERT sub-networks as plain, smaller Hugging Face model directories.

tokexit loads them with its own ``slim_bert`` classes (registered with transformers' auto classes); the directories
also ship those classes' code so that transformers alone, without tokexit, loads them with ``trust_remote_code=True``.
"""

from tokexit.export.subnetwork import export_subnetwork, slice_bert

__all__ = ["export_subnetwork", "slice_bert"]
