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


def matryoshka_mnrl(width: int, dims: list[int], weights: list[float] | None, symmetric: bool):
    """sentence-transformers' `MatryoshkaLoss(MultipleNegativesRankingLoss)` at scale 20 over
    fixed `width`-d embeddings; `symmetric` adds the positive -> anchor direction (CLIP's)."""
    from sentence_transformers.sentence_transformer.losses import (
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    model = fixed_embeddings_model(width)
    directions = (
        {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
        if symmetric
        else {}
    )
    return MatryoshkaLoss(
        model,
        MultipleNegativesRankingLoss(model, scale=20.0, **directions),
        matryoshka_dims=dims,
        matryoshka_weights=weights,
    )
