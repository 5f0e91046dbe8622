"""sentence-transformers as a reference for the contrastive losses: a real `SentenceTransformer`
whose embeddings are the ones given, so its losses run on fixed tensors."""

from torch import Tensor, nn


class PassThrough(nn.Module):
    """A sentence-transformers module whose output embedding is the given input embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def get_embedding_dimension(self) -> int:
        return self.dim

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**features, "sentence_embedding": features["embedding"]}


def fixed_embeddings_model(dim: int):
    """A real `SentenceTransformer` (public constructor only) that returns given embeddings."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[PassThrough(dim)], device="cpu")
