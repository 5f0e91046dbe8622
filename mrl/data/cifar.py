"""CIFAR-10 and CIFAR-100 data modules (torchvision's python-pickle layout, no download).

The images are read once through ``torchvision.datasets.CIFAR10/100`` and served as
normalised in-memory tensors; training augmentation (random crop with 4 px padding
and horizontal flip) is done on tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor

from mrl.core.errors import DataNotFoundError
from mrl.data.base import InMemoryDataModule


class _CIFARDataModule(InMemoryDataModule):
    """Shared logic for CIFAR-10/100: seeded val split out of the 50k training images."""

    display_name: str = ""
    folder: str = ""
    torchvision_cls: type = torchvision.datasets.CIFAR10
    crop_pad = 4
    hflip = True
    in_channels = 3

    def __init__(
        self, root: str = "data", image_size: int = 32, augment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(root=root, image_size=image_size, augment=augment, **kwargs)

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
