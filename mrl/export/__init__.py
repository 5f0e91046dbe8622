"""Export a trained model's Matryoshka dims as servable tiers: ONNX graphs with truncation and
re-normalisation inside, sentence-transformers folders for text, optional nested heads and int8
variants, each checked against PyTorch and described by a model card (`export_run`)."""

from mrl.export.exporter import export_run
from mrl.export.verify import INT8_MIN_COSINE, PARITY_ATOL, ExportError

__all__ = ["INT8_MIN_COSINE", "PARITY_ATOL", "ExportError", "export_run"]
