"""Vision-language Matryoshka training: an ALIGN/CLIP-style dual encoder.

An image encoder (any of `mrl.encoders`) and a text encoder (`HFTextEncoder`) are each followed by
a linear projection to a shared size D; the symmetric Matryoshka contrastive loss (image -> text
and text -> image InfoNCE on every nested prefix) trains both towers. Evaluation is zero-shot
classification per dim: each image is assigned the class whose caption embedding prefix is the
most similar. `SyntheticCaptionsDataModule` provides tiny seeded image-caption pairs for smoke
tests (class-prototype images from `mrl.data.SyntheticDataModule`, captions from a template);
it makes no claim about accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.errors import ConfigError
from mrl.core.nesting import validate_nesting
from mrl.data.base import (
    ResumableTraining,
    SeededSamples,
    eval_sampler,
    loader_generator,
    train_sampler,
)
from mrl.data.synthetic import SyntheticDataModule
from mrl.text.encoders import HFTextEncoder, load_tokenizer, tokenize
from mrl.training.module import (
    MRLClassifier,
    OptimizerFactory,
    SchedulerFactory,
    check_finite,
    log_training_losses,
)


class DualEncoder(nn.Module):
    """Image and text towers projected to one `embed_dim`-sized space.

    Every prefix of `embed_dim` is a joint embedding once trained with a Matryoshka loss.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: HFTextEncoder, embed_dim: int):
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ConfigError(f"embed_dim must be a positive integer, got {embed_dim!r}")
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


class CaptionedImages(Dataset):
    """`(image, caption, label)` items: an image dataset's items with their class caption."""

    def __init__(self, images: Dataset, captions: Sequence[str]) -> None:
        self.images, self.captions = images, list(captions)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, str, int]:
        image, label = self.images[index]
        return image, self.captions[int(label)], int(label)


class CaptionCollator:
    """Stacks images, tokenizes captions: `{"images", "features", "labels"}`."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: Sequence[tuple[Tensor, str, int]]) -> dict[str, Any]:
        images, captions, labels = zip(*items)
        return {
            "images": torch.stack(images),
            "features": tokenize(self.tokenizer, captions, self.max_length),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


class SyntheticCaptionsDataModule(ResumableTraining, pl.LightningDataModule):
    """Seeded synthetic images (see `SyntheticDataModule`) paired with `template.format(label=k)`.

    Args:
        template: caption of class k, e.g. `"a photo of class {label}"`.
        model_name_or_path: where the tokenizer is stored (`None` = bundled MiniLM).
        max_length: longest caption in tokens.
        batch_size / eval_batch_size / num_workers / seed: as for the image data modules.
        Other arguments: passed to `SyntheticDataModule` (num_classes, in_channels, image_size,
        num_train, num_val, num_test, noise).
    """

    def __init__(
        self,
        template: str = "a photo of class {label}",
        model_name_or_path: str | None = None,
        max_length: int = 32,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        **image_kwargs: Any,
    ) -> None:
        super().__init__()
        if "{label}" not in template:
            raise ConfigError(f"data.template={template!r} must contain {{label}}")
        self.images = SyntheticDataModule(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            **image_kwargs,
        )
        self.num_classes, self.in_channels = self.images.num_classes, self.images.in_channels
        self.captions = [template.format(label=k) for k in range(self.num_classes)]
        self.model_name_or_path, self.max_length = model_name_or_path, max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self._tokenizer = None

    def check(self) -> None:
        """Nothing to check: the data are generated."""

    @property
    def tokenizer(self):
        """The caption tokenizer, loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        return self._tokenizer

    def class_caption_features(self) -> dict[str, Tensor]:
        """The tokenized caption of every class, row k = class k."""
        return tokenize(self.tokenizer, self.captions, self.max_length)

    def setup(self, stage: str | None = None) -> None:
        self.images.setup(stage)

    def _loader(self, images: Dataset, train: bool) -> DataLoader:
        dataset = CaptionedImages(images, self.captions)
        sampler = (
            train_sampler(dataset, self.seed, self.samples_done_this_epoch, per_sample_seeds=True)
            if train
            else eval_sampler(dataset)
        )
        return DataLoader(
            SeededSamples(dataset) if train else dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=loader_generator(self.seed),
            drop_last=train,
            collate_fn=CaptionCollator(self.tokenizer, self.max_length),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        self.images.setup("fit")
        return self._loader(self.images.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.images.setup("validate")
        return self._loader(self.images.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.images.setup("test")
        return self._loader(self.images.test_set, train=False)


class DualEncoderModule(pl.LightningModule):
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
        super().__init__()
        self.save_hyperparameters(ignore=["model", "loss", "optimizer", "scheduler"])
        if not loss.symmetric:
            raise ConfigError("the dual encoder needs a symmetric loss: set loss.symmetric=true")
        self.model, self.loss = model, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.nesting = validate_nesting(
            loss.nesting if nesting is None else nesting, model.num_features
        )
        validate_nesting(loss.nesting, model.num_features)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{m}": MulticlassAccuracy(num_classes, top_k=1, average="micro")
                for stage in ("val", "test")
                for m in self.nesting
            }
        )
        self._class_text: Tensor | None = None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        image_z = self.model.encode_image(batch["images"])
        text_z = self.model.encode_text(batch["features"])
        per_dim = self.loss.per_dim(image_z, text_z)
        total = self.loss.weighted(per_dim)
        check_finite(total, self.global_step, batch_idx)
        log_training_losses(self, total, per_dim, self.loss.nesting, batch_size=image_z.shape[0])
        return total

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

    # The optimizer set-up is the classifier's (see `TextContrastiveModule`).
    parameter_groups = MRLClassifier.parameter_groups
    configure_optimizers = MRLClassifier.configure_optimizers
