"""Fashion-MNIST and MNIST data modules, decoded once from IDX files into memory.

Both read the four standard IDX files (``train-images-idx3-ubyte`` etc., ``.gz`` or
not), hold a seeded validation split out of the 60k training images, and serve
normalised float tensors without per-sample PIL work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mrl.core.errors import DataError, DataNotFoundError
from mrl.data.base import InMemoryDataModule
from mrl.data.idx import idx_header, read_idx

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class _IDXDataModule(InMemoryDataModule):
    """Shared logic for 28x28 grey-scale IDX data sets (MNIST family)."""

    display_name: str = ""
    default_root: str = ""
    crop_pad = 2
    num_classes = 10
    in_channels = 1

    def __init__(self, root: str | None = None, image_size: int = 28, **kwargs: Any) -> None:
        super().__init__(
            root=self.default_root if root is None else root, image_size=image_size, **kwargs
        )

    # -- files ------------------------------------------------------------------
    def _find(self, stem: str) -> Path | None:
        root = Path(self.root)
        for name in (stem + ".gz", stem):
            if (root / name).is_file():
                return root / name
        return None

    def _missing_hint(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise ``DataNotFoundError`` unless all four IDX files are in ``root``."""
        missing = [s for s in IDX_STEMS.values() if self._find(s) is None]
        if missing:
            raise DataNotFoundError(
                f"{self.display_name} not found in {self.root} "
                f"(need {', '.join(s + '[.gz]' for s in missing)}): {self._missing_hint()}"
            )
        for split in ("train", "test"):
            self._check_split(split)

    def _check_split(self, split: str) -> None:
        """Images `[N, H, W]` and labels `[N]` of one split, whole and of the same N (headers
        and sizes only), else `DataError` naming the file."""
        shapes = {}
        for kind in ("images", "labels"):
            path = self._find(IDX_STEMS[f"{split}_{kind}"])
            try:
                shape, expected, stored = idx_header(path)
            except ValueError as err:
                raise DataError(f"{err}: replace the file") from err
            if expected != stored:
                raise DataError(
                    f"{path}: truncated or padded IDX file (header says shape {shape}): replace it"
                )
            shapes[kind] = (path, shape)
        (img_path, images), (lbl_path, labels) = shapes["images"], shapes["labels"]
        if len(images) != 3 or len(labels) != 1 or images[0] != labels[0]:
            raise DataError(
                f"{img_path} holds images {images} but {lbl_path} labels {labels}: the {split} "
                f"files do not belong together; replace them"
            )

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        split = "train" if train else "test"
        img_path = self._find(IDX_STEMS[f"{split}_images"])
        lbl_path = self._find(IDX_STEMS[f"{split}_labels"])
        assert img_path is not None and lbl_path is not None  # check() ran
        try:
            images = read_idx(img_path)
            labels = read_idx(lbl_path)
        except ValueError as err:
            raise DataError(f"{err}: replace the file") from err
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{img_path}, {lbl_path}: expected images [N,H,W] and labels [N], got "
                f"{images.shape} and {labels.shape}"
            )
        x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
        y = torch.from_numpy(labels.astype("int64"))
        return x, y


class FashionMNISTDataModule(_IDXDataModule):
    """Fashion-MNIST (Zalando): 60k train (minus ``val_size`` held out) / 10k test, 10 classes.

    ``root`` defaults to where the Debian package ``dataset-fashion-mnist`` installs the
    IDX files. ``augment=True`` adds a random crop with 2 px padding and a horizontal
    flip. See ``VisionDataModule`` for the shared arguments.
    """

    display_name = "Fashion-MNIST"
    default_root = "/usr/share/datasets/fashion-mnist"
    mean = (0.2860,)
    std = (0.3530,)
    hflip = True

    def _missing_hint(self) -> str:
        return (
            "install it with 'sudo apt-get install dataset-fashion-mnist' "
            "or point data.root=<dir> at the IDX files"
        )


class MNISTDataModule(_IDXDataModule):
    """MNIST digits: 60k train (minus ``val_size`` held out) / 10k test, 10 classes.

    ``root`` is a directory with the raw IDX files (default ``data/MNIST/raw``, the
    torchvision layout). ``augment=True`` adds a random crop with 2 px padding (no
    flip: mirrored digits change meaning). See ``VisionDataModule`` for the rest.
    """

    display_name = "MNIST"
    default_root = "data/MNIST/raw"
    mean = (0.1307,)
    std = (0.3081,)
    hflip = False

    def _missing_hint(self) -> str:
        return (
            "point data.root=<dir> at the MNIST IDX files (torchvision's "
            "MNIST('<dir>', download=True) on a machine with internet puts them in <dir>/MNIST/raw)"
        )
