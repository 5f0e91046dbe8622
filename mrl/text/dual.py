"""Vision-language Matryoshka training: an ALIGN/CLIP-style dual encoder.

An image encoder (any of `mrl.encoders`) and a text encoder (`HFTextEncoder`) are each followed by
a linear projection to a shared size D; the symmetric Matryoshka contrastive loss (image -> text
and text -> image InfoNCE on every nested prefix) trains both towers. Evaluation is zero-shot
classification per dim: each image is assigned the class whose caption embedding prefix is the
most similar. Its smoke-test data is `mrl.text.data.SyntheticCaptionsDataModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.errors import ConfigError
from mrl.core.nesting import check_fits, validate_nesting
from mrl.core.validate import positive_int
from mrl.text.encoders import HFTextEncoder
from mrl.training.module import MatryoshkaModule, OptimizerFactory, SchedulerFactory


class DualEncoder(nn.Module):
    """Image and text towers projected to one `embed_dim`-sized space.

    Every prefix of `embed_dim` is a joint embedding once trained with a Matryoshka loss.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: HFTextEncoder, embed_dim: int):
        super().__init__()
        embed_dim = positive_int(embed_dim, "embed_dim")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(int(image_encoder.num_features), embed_dim)
        self.text_proj = nn.Linear(text_encoder.num_features, embed_dim)
        self.num_features = embed_dim

    def encode_image(self, images: Tensor) -> Tensor:
        """Joint embeddings `(B, embed_dim)` of images `(B, C, H, W)`."""
        return self.image_proj(self.image_encoder(images))

    def encode_text(self, features: dict[str, Tensor]) -> Tensor:
        """Joint embeddings `(B, embed_dim)` of a tokenized batch."""
        return self.text_proj(self.text_encoder(features["input_ids"], features["attention_mask"]))


class DualEncoderModule(MatryoshkaModule):
    """Trains a `DualEncoder` with a symmetric `MatryoshkaContrastiveLoss`.

    Logged: `train/loss`, `train/loss@{m}`, and for stage in (val, test) the zero-shot accuracy
    `{stage}/zeroshot_top1@{m}` per dim of `nesting` and `{stage}/zeroshot_top1` (the largest);
    class captions come from the data module's `class_caption_features()`.
    """

    metric_names = ("zeroshot_top1",)

    def __init__(
        self,
        model: DualEncoder,
        loss: MatryoshkaContrastiveLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        nesting: Sequence[int] | None = None,
        num_classes: int = 10,
        no_weight_decay_on_norm_and_bias: bool = True,
        config: dict | None = None,
    ) -> None:
        if not loss.symmetric:
            raise ConfigError("the dual encoder needs a symmetric loss: set loss.symmetric=true")
        super().__init__(loss, optimizer, scheduler)
        self.save_hyperparameters(ignore=["model", "loss", "optimizer", "scheduler"])
        self.model = model
        # The one check of both lists against the width (mrl-train-text relies on it).
        self.nesting = (
            loss.nesting if nesting is None else validate_nesting(nesting, model.num_features)
        )
        check_fits(loss.nesting, model.num_features, "loss.nesting")  # the loss checked the rest
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{m}": MulticlassAccuracy(num_classes, top_k=1, average="micro")
                for stage in ("val", "test")
                for m in self.nesting
            }
        )
        self._class_text: Tensor | None = None

    @property
    def loss_dims(self) -> tuple[int, ...]:
        return tuple(self.loss.nesting)

    def loss_inputs(self, batch: dict[str, Any]) -> tuple[tuple[Tensor, ...], int]:
        image_z = self.model.encode_image(batch["images"])
        text_z = self.model.encode_text(batch["features"])
        return (image_z, text_z), image_z.shape[0]

    def _encode_class_captions(self) -> None:
        features = self.trainer.datamodule.class_caption_features()
        features = {k: v.to(self.device) for k, v in features.items()}
        with torch.no_grad():
            self._class_text = self.model.encode_text(features)

    def on_validation_epoch_start(self) -> None:
        self._encode_class_captions()

    on_test_epoch_start = on_validation_epoch_start

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        image_z = self.model.encode_image(batch["images"])
        for m in self.nesting:
            logits = (
                F.normalize(image_z[:, :m], dim=-1) @ F.normalize(self._class_text[:, :m], dim=-1).T
            )
            metric = self.metrics[f"{stage}_{m}"]
            metric.update(logits, batch["labels"])
            self.log(f"{stage}/zeroshot_top1@{m}", metric, batch_size=image_z.shape[0])
        largest = self.metrics[f"{stage}_{self.nesting[-1]}"]
        self.log(f"{stage}/zeroshot_top1", largest, prog_bar=True, batch_size=image_z.shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)
