"""Export DynaBERT sub-networks as plain, smaller Hugging Face model directories (loaded with trust_remote_code)."""

from tokexit.export.subnetwork import export_subnetwork, slice_bert

__all__ = ["export_subnetwork", "slice_bert"]
