"""CIFAR-10 and CIFAR-100 data modules (torchvision's python-pickle layout, no download).

The images are read once through ``torchvision.datasets.CIFAR10/100`` and served as
normalised in-memory tensors; training augmentation (random crop with 4 px padding
and horizontal flip) is done on tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset

from mrl.data.base import TEST_STREAM, VisionDataModule, check_val_size, make_tensor_dataset
from mrl.errors import DataNotFoundError


class _CIFARDataModule(VisionDataModule):
    """Shared logic for CIFAR-10/100: seeded val split out of the 50k training images."""

    display_name: str = ""
    folder: str = ""
    torchvision_cls: type = torchvision.datasets.CIFAR10
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    in_channels = 3

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        image_size: int = 32,
        val_size: int = 5000,
        augment: bool = True,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        drop_last: bool = True,
        pin_memory: bool | None = None,
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
            limit_train=limit_train,
            limit_val=limit_val,
            limit_test=limit_test,
        )
        self.val_size = check_val_size(val_size)
        self.augment = bool(augment)
        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None

    def check(self) -> None:
        """Raise ``DataNotFoundError`` unless ``root/<cifar folder>`` exists."""
        path = Path(self.root) / self.folder
        if not path.is_dir():
            raise DataNotFoundError(
                f"{self.display_name} not found: no folder {path} (torchvision's "
                f"'{self.folder}'): point data.root=<dir> at the directory that contains it "
                f"(torchvision.datasets.{self.torchvision_cls.__name__}('<dir>', download=True) "
                "creates it on a machine with internet)"
            )

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            ds = self.torchvision_cls(self.root, train=train, download=False)
        except RuntimeError as e:
            # torchvision raises RuntimeError when its checksums fail.
            raise DataNotFoundError(
                f"{self.display_name} in {Path(self.root) / self.folder} is incomplete or "
                f"corrupted ({e}): re-extract it or point data.root=<dir> at a good copy"
            ) from e
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        return x, y

    def _dataset(self, x: Tensor, y: Tensor, train: bool) -> Dataset:
        aug = train and self.augment
        return make_tensor_dataset(
            x,
            y,
            mean=self.mean,
            std=self.std,
            image_size=self.image_size,
            crop_pad=4 if aug else 0,
            hflip=aug,
        )

    def _make_train_val(self, train_augment: bool = True) -> tuple[Dataset, Dataset]:
        x, y = self._load(train=True)
        train_idx, val_idx = self.held_out_split(x.shape[0], self.val_size)
        self.train_indices, self.val_indices = train_idx, val_idx
        return (
            self._dataset(x[train_idx], y[train_idx], train=train_augment),
            self._dataset(x[val_idx], y[val_idx], train=False),
        )

    def _make_test(self) -> Dataset:
        x, y = self._load(train=False)
        idx = self.subset_indices(x.shape[0], self.limit_test, TEST_STREAM)
        return self._dataset(x[idx], y[idx], train=False)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 50k train (minus ``val_size`` held out) / 10k test, 10 classes, 32x32 RGB.

    ``root`` is the directory containing ``cifar-10-batches-py``. ``augment`` (default
    on) applies random crop 32 with 4 px padding and horizontal flip to training
    images. See ``VisionDataModule`` for the shared arguments.
    """

    display_name = "CIFAR-10"
    folder = "cifar-10-batches-py"
    torchvision_cls = torchvision.datasets.CIFAR10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    num_classes = 10


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (fine labels): 50k train (minus ``val_size``) / 10k test, 100 classes.

    ``root`` is the directory containing ``cifar-100-python``. Same augmentation and
    arguments as ``CIFAR10DataModule``.
    """

    display_name = "CIFAR-100"
    folder = "cifar-100-python"
    torchvision_cls = torchvision.datasets.CIFAR100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    num_classes = 100
