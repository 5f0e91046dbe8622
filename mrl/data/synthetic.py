"""Synthetic, seeded and learnable image data for smoke tests (no files needed).

Each class has a fixed random, spatially smooth prototype image; a sample is its
class prototype plus Gaussian pixel noise, so even a linear model separates the
classes within a few steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int
from mrl.data.base import TensorImageDataset, VisionDataModule, seeded_generator

# Prototypes are drawn on a coarse grid and upsampled, so they are smooth and
# convolutional encoders see spatial structure, not just per-pixel noise.
_PROTO_GRID = 7
_PROTO_STREAM, _TRAIN_STREAM, _VAL_STREAM, _TEST_STREAM = 0, 1, 2, 3


class SyntheticDataModule(VisionDataModule):
    """Class-prototype-plus-noise images, fully determined by ``seed``.

    Args:
        num_classes: number of classes (labels are balanced).
        in_channels: image channels.
        image_size: image side length.
        num_train / num_val / num_test: split sizes.
        noise: standard deviation of the per-pixel noise (prototypes have unit std);
            raise it to make the task harder.
        augment: random 2 px crops and horizontal flips of the training images.
        root: ignored (kept so every data module takes the same arguments).
        Other arguments: see ``VisionDataModule``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        noise: float = 1.0,
        augment: bool = False,
        root: str = "",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            image_size=image_size,
            drop_last=drop_last,
            pin_memory=pin_memory,
            name=name,
        )
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
        ):
            positive_int(value, f"data.{name}")
        if not noise >= 0:
            raise ConfigError(f"data.noise must be >= 0, got {noise!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.noise = float(noise)
        self.augment = bool(augment)

    def check(self) -> None:
        """Nothing to check: the data are generated."""

    def prototypes(self) -> Tensor:
        """The class prototypes, ``[num_classes, C, H, W]``, each pixel with unit std."""
        g = seeded_generator(self.seed, _PROTO_STREAM)
        grid = min(_PROTO_GRID, self.image_size)
        coarse = torch.randn(self.num_classes, self.in_channels, grid, grid, generator=g)
        protos = F.interpolate(
            coarse, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        return (protos - protos.mean()) / protos.std().clamp_min(1e-6)

    def _split(self, n: int, stream: int, augment: bool = False) -> TensorImageDataset:
        g = seeded_generator(self.seed, stream)
        labels = (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=g)]
        images = self.prototypes()[labels]
        images = images + self.noise * torch.randn(images.shape, generator=g)
        return TensorImageDataset(images, labels, crop_pad=2 * augment, hflip=augment)

    def _make_train_val(self, train_augment: bool = True) -> tuple[Dataset, Dataset]:
        train = self._split(self.num_train, _TRAIN_STREAM, self.augment and train_augment)
        return train, self._split(self.num_val, _VAL_STREAM)

    def _make_test(self) -> Dataset:
        return self._split(self.num_test, _TEST_STREAM)
