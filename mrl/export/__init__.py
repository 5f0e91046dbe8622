"""Export a trained model's Matryoshka dims as servable tiers that store the encoder once: one
ONNX graph with an output per dim (truncation and re-normalisation inside), one
sentence-transformers folder for text, optional nested heads and an int8 variant, each tier
checked against PyTorch and described by a model card (`export_run`); read an export folder's
tiers back (`load_export`) and run them with ONNX Runtime (`mrl.export.runtime`)."""

from mrl.export.exporter import export_run
from mrl.export.folder import Tier, load_export
from mrl.export.verify import INT8_MIN_COSINE, PARITY_ATOL, ExportError

__all__ = ["INT8_MIN_COSINE", "PARITY_ATOL", "ExportError", "Tier", "export_run", "load_export"]
