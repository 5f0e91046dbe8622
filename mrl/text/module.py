"""Lightning modules for the text tasks: Matryoshka contrastive training and classification.

- `TextContrastiveModule`: anchors and positives each encoded once per step (whatever the number
  of dims; chunk by chunk with gradient caching), the `MatryoshkaContrastiveLoss` on their
  prefixes (or on a projection head's outputs per dim, tied for MRL-E; or a 2D
  `Matryoshka2DLoss` on every layer's embeddings of the same forward pass), and
  reverse-dictionary retrieval metrics per dim on the validation/test loaders (queries, then
  database).
- `TextClassifierModule`: `mrl.training.module.MRLClassifier` with a text encoder behind the
  `TokenizedInput` adapter (batches are `(features dict, labels)`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.distill import SimilarityDistillationLoss
from mrl.core.errors import ConfigError
from mrl.core.heads import MRLHead
from mrl.core.losses import MatryoshkaLoss
from mrl.core.matryoshka_2d import Matryoshka2DLoss
from mrl.core.nesting import check_fits, validate_nesting
from mrl.core.validate import positive_int
from mrl.eval.retrieval import evaluate_retrieval
from mrl.text.encoders import HFTextEncoder, TokenizedInput
from mrl.training.grad_cache import average_gradients, cached_embeddings, row_chunks
from mrl.training.module import MatryoshkaModule, MRLClassifier, OptimizerFactory, SchedulerFactory

QUERY_LOADER, DATABASE_LOADER = 0, 1


def retrieval_metric_names(k: int) -> tuple[str, ...]:
    """Per-dim metric names logged by `TextContrastiveModule` (before `@{m}`): `map{k}` is the
    paper's mAP@k (÷k, at most 1/k with one relevant word per query), `map_standard{k}` the
    standard one (÷ min(k, relevant); see `mrl.eval.metrics`)."""
    return (f"recall{k}", f"map_standard{k}", f"map{k}", "1nn")


class TextContrastiveModule(MatryoshkaModule):
    """Trains a text encoder with a Matryoshka contrastive loss; evaluates reverse-dictionary
    retrieval at every dim of `nesting`.

    `nesting` is the list of dims evaluated; the loss has its own (a single-dim baseline trains
    at `[D]` and is still evaluated at every prefix). Logged: `train/loss`, `train/loss@{m}` (the
    loss's dims) and, for stage in (val, test), `{stage}/recall{k}@{m}`, `{stage}/map{k}@{m}`
    (the paper's, ÷k), `{stage}/map_standard{k}@{m}`, `{stage}/1nn@{m}` and
    `{stage}/recall{k}` (the largest dim). Evaluation batches come from
    two loaders, queries (index 0) then database (index 1), each seen in full by every process.

    `grad_cache_chunk` encodes each side that many rows at a time with gradient caching (also
    under DDP); `projection_dim` puts an `MRLHead` of that width (tied: MRL-E) between the
    prefixes and the loss; a layered loss (`Matryoshka2DLoss`) gets every layer's embeddings.
    """

    def __init__(
        self,
        encoder: HFTextEncoder,
        loss: MatryoshkaContrastiveLoss | Matryoshka2DLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        nesting: list[int] | tuple[int, ...] | None = None,
        eval_k: int = 10,
        retrieval_backend: str = "exact",
        no_weight_decay_on_norm_and_bias: bool = True,
        grad_cache_chunk: int | None = None,
        projection_dim: int | None = None,
        projection_tied: bool = True,
        distill_weight: float = 0.0,
        distill_nesting: list[int] | tuple[int, ...] | None = None,
        config: dict | None = None,
    ) -> None:
        super().__init__(loss, optimizer, scheduler)
        self.save_hyperparameters(ignore=["encoder", "loss", "optimizer", "scheduler"])
        self.encoder = encoder
        self.grad_cache_chunk = positive_int(grad_cache_chunk, "module.grad_cache_chunk",
                                             optional=True)  # fmt: skip
        # The one check of both lists against the width (mrl-train-text relies on it); the loss
        # validated its own list when it was built.
        self.nesting = (
            loss.nesting if nesting is None else validate_nesting(nesting, encoder.num_features)
        )
        check_fits(loss.nesting, encoder.num_features, "loss.nesting")
        self.layered = bool(getattr(loss, "layered", False))
        if self.layered:
            loss.bind_layers(encoder.num_layers)
        # A projection head on the prefixes for training only (MRL-E when tied: one matrix
        # whose first m columns serve dim m); the served embeddings stay the encoder's prefixes.
        self.projection: MRLHead | None = None
        if projection_dim is not None:
            if self.layered:
                raise ConfigError(
                    "module.projection_dim is for the one-layer contrastive loss; set it to "
                    "null with a 2D (layered) loss"
                )
            self.projection = MRLHead(encoder.num_features,
                                      positive_int(projection_dim, "module.projection_dim"),
                                      loss.nesting, tied=bool(projection_tied))  # fmt: skip
        self.teacher, self.distill = self._distillation(distill_weight, distill_nesting)
        self.eval_k = int(eval_k)
        self.metric_names = retrieval_metric_names(self.eval_k)
        self._eval_buffer: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._average_by_hand = False  # set when training starts (DDP with gradient caching)

    def _distillation(
        self, weight: float, nesting: list[int] | tuple[int, ...] | None
    ) -> tuple[list[HFTextEncoder], SimilarityDistillationLoss | None]:
        """A frozen copy of the encoder as it starts (the base model) and the loss that keeps
        every prefix's similarities near the base model's full ones; none at weight 0."""
        weight = float(weight)
        if not weight >= 0:
            raise ConfigError(f"module.distill_weight must be >= 0, got {weight!r}")
        if weight == 0:
            return [], None
        if self.layered or self.projection is not None:
            raise ConfigError(
                "module.distill_weight distils the encoder's own prefixes: set "
                "module.projection_dim=null and use the one-layer contrastive loss"
            )
        dims = self.loss.nesting if nesting is None else nesting
        dims = validate_nesting(dims, self.encoder.num_features)
        loss = SimilarityDistillationLoss(dims, weights=[weight] * len(dims))
        teacher = copy.deepcopy(self.encoder).eval().requires_grad_(False)
        # Held in a list: the teacher is the base model again on every start (resumes
        # included), so it stays out of the checkpoint and out of the optimizer.
        return [teacher], loss

    def auxiliary_loss(self, batch: dict[str, Any], inputs: tuple[Tensor, ...]) -> Tensor | None:
        """The distillation term on the batch's anchors and positives (both sides' texts)."""
        if self.distill is None:
            return None
        teacher = self.teacher[0].to(inputs[0].device)
        with torch.no_grad():
            target = torch.cat([teacher(f["input_ids"], f["attention_mask"])
                                for f in (batch["anchors"], batch["positives"])])  # fmt: skip
        return self.distill(torch.cat([inputs[0], inputs[1]]), target)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """The representation `(B, D)` of a tokenized batch; every prefix is an embedding."""
        return self.encoder(features["input_ids"], features["attention_mask"])

    def forward_layers(self, features: dict[str, Tensor]) -> Tensor:
        """Every layer's representation `(L, B, D)` of a tokenized batch, one forward pass."""
        return self.encoder.forward_layers(features["input_ids"], features["attention_mask"])

    def _train_embeddings(self, features: dict[str, Tensor]) -> Tensor:
        """What the loss is fed for one side of a pair: every layer's embeddings for a layered
        (2D) loss, else the last layer's; through the projection head when there is one."""
        if self.layered:
            return self.forward_layers(features)
        z = self(features)
        return z if self.projection is None else self.projection(z)

    @property
    def loss_dims(self) -> tuple[int, ...]:
        return tuple(self.loss.nesting)

    def loss_inputs(self, batch: dict[str, Any]) -> tuple[tuple[Tensor, ...], int]:
        """`(anchor, positive[, negatives])` embeddings; negatives `(B, N, D)` (`(K, B, N, P)`
        through a projection head) when the batch has `num_negatives` hard negatives a row."""
        sides = [batch["anchors"], batch["positives"]]
        negatives = int(batch.get("num_negatives") or 0)
        if negatives:
            if self.layered:
                raise ConfigError(
                    "hard negatives are for the one-layer contrastive loss: drop the negative "
                    "columns (data.columns) or use loss=matryoshka_contrastive"
                )
            sides.append(batch["negatives"])
        rows = sides[0]["input_ids"].shape[0]
        sizes = [side["input_ids"].shape[0] for side in sides]
        rows_dim = 1 if self.layered or self.projection is not None else 0
        if self.grad_cache_chunk is None:  # each side encoded once, whatever the number of dims
            z = [self._train_embeddings(side) for side in sides]
        else:
            # Chunk by chunk, gradients cached: the batch is not bound by the encoder's memory.
            chunks = [c for side in sides for c in row_chunks(side, self.grad_cache_chunk)]
            z = cached_embeddings(self._train_embeddings, chunks, sides[0]["input_ids"].device,
                                  rows_dim).split(sizes, dim=rows_dim)  # fmt: skip
        z = list(z)
        if negatives:  # rows i*N .. i*N+N-1 are row i's negatives
            shape = z[2].shape
            z[2] = z[2].reshape(*shape[:rows_dim], rows, negatives, *shape[rows_dim + 1 :])
        return tuple(z), rows

    def on_train_start(self) -> None:
        # Under DDP with gradient caching, DDP's hooks would report each parameter once per
        # chunk: they are switched off and the gradients averaged once in on_after_backward.
        self._average_by_hand = self.grad_cache_chunk is not None and self.trainer.world_size > 1
        if self._average_by_hand:
            ddp = self.trainer.strategy.model
            if not hasattr(ddp, "require_backward_grad_sync"):
                raise ConfigError(
                    f"module.grad_cache_chunk with {self.trainer.world_size} processes needs "
                    f"the ddp strategy (got {type(self.trainer.strategy).__name__}); use "
                    f"trainer.strategy=ddp or set module.grad_cache_chunk=null"
                )
            ddp.require_backward_grad_sync = False

    def on_after_backward(self) -> None:
        if self._average_by_hand:
            average_gradients(self.parameters(), self.trainer.world_size)

    def _collect(self, batch: tuple[dict, Tensor], dataloader_idx: int) -> None:
        features, labels = batch
        z = self(features).detach().float().cpu()
        self._eval_buffer.setdefault(dataloader_idx, []).append((z, labels.cpu()))

    def validation_step(self, batch: tuple[dict, Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._collect(batch, dataloader_idx)

    def test_step(self, batch: tuple[dict, Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._eval_buffer = {}

    on_test_epoch_start = on_validation_epoch_start

    def retrieval_rows(self) -> list[dict]:
        """`evaluate_retrieval` rows of the collected queries against the collected database."""
        parts = {}
        for idx in (QUERY_LOADER, DATABASE_LOADER):
            chunks = self._eval_buffer.get(idx)
            if not chunks:
                return []
            parts[idx] = (
                torch.cat([z for z, _ in chunks]).numpy(),
                torch.cat([y for _, y in chunks]).numpy(),
            )
        (queries, query_labels), (database, database_labels) = (
            parts[QUERY_LOADER],
            parts[DATABASE_LOADER],
        )
        return evaluate_retrieval(
            database,
            database_labels,
            queries,
            query_labels,
            dims=self.nesting,
            ks=(self.eval_k,),
            knn_ks=(1,),
            backend=self.hparams.retrieval_backend,
        )

    def _log_retrieval(self, stage: str) -> None:
        rename = {
            f"recall@{self.eval_k}": f"recall{self.eval_k}",
            f"map@{self.eval_k}": f"map{self.eval_k}",
            f"map_standard@{self.eval_k}": f"map_standard{self.eval_k}",
            "1nn": "1nn",
        }
        values = {}
        for row in self.retrieval_rows():
            if row["metric"] in rename and not math.isnan(row["value"]):
                values[f"{stage}/{rename[row['metric']]}@{row['dim']}"] = float(row["value"])
        self._eval_buffer = {}
        if not values:
            return
        largest = f"{stage}/recall{self.eval_k}@{self.nesting[-1]}"
        if largest in values:
            values[f"{stage}/recall{self.eval_k}"] = values[largest]
        # Every process evaluated the same full set: the mean over processes is each one's value.
        # The bar shows recall at the smallest and the largest dim.
        shown = {f"{stage}/recall{self.eval_k}@{m}" for m in (self.nesting[0], self.nesting[-1])}
        self.log_dict({k: v for k, v in values.items() if k not in shown}, sync_dist=True)
        self.log_dict({k: v for k, v in values.items() if k in shown}, sync_dist=True,
                      prog_bar=True)  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_train_epoch_end(self) -> None:
        # Data of evaluation sets (text/data=pairs) has no validation loaders: its `val` sets
        # are scored per dim at the end of every epoch, on the first process.
        datamodule = getattr(self.trainer, "datamodule", None)
        if not (getattr(datamodule, "eval_specs", {}).get("val") and self.trainer.is_global_zero):
            return
        from mrl.text.evaluation import evaluate_data_sets, set_metric_values

        rows = evaluate_data_sets(datamodule, self.encoder, self.nesting, self.device, "val")
        for logger in self.trainer.loggers:
            logger.log_metrics(set_metric_values(rows, "val"), step=self.global_step)

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")


class TextClassifierModule(MRLClassifier):
    """`MRLClassifier` over a text encoder: `head(encoder(features))` with per-dim accuracies.

    The encoder is wrapped in `TokenizedInput`, so batches are `(features dict, labels)` and all
    of `MRLClassifier` (training step, metrics, optimizers) applies unchanged.
    """

    def __init__(
        self,
        encoder: HFTextEncoder | TokenizedInput,
        head: MRLHead,
        loss: MatryoshkaLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(encoder, HFTextEncoder):
            encoder = TokenizedInput(encoder)
        super().__init__(encoder, head, loss, optimizer, scheduler, **kwargs)

    @property
    def text_encoder(self) -> HFTextEncoder:
        """The wrapped `HFTextEncoder`."""
        return self.encoder.encoder

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Per-dim metric names logged at test time (before `@{m}`)."""
        return tuple(f"top{k}" for k in self.top_ks)


def per_dim_rows(
    metrics: dict[str, Any], nesting: tuple[int, ...], names: tuple[str, ...], stage: str = "test"
) -> list[dict]:
    """Rows `{"dim", name: value}` from logged metrics named `{stage}/{name}@{m}` (None when
    absent); values rounded to 6 decimals."""
    rows = []
    for m in nesting:
        row: dict[str, Any] = {"dim": int(m)}
        for name in names:
            value = metrics.get(f"{stage}/{name}@{m}")
            row[name] = None if value is None else round(float(np.asarray(value)), 6)
        rows.append(row)
    return rows
