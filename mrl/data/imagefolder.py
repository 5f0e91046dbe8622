"""ImageFolder data module (ImageNet-style ``<dir>/<class>/<image>`` trees).

Training images come from ``train_dir`` (RandomResizedCrop + horizontal flip),
validation images from ``val_dir`` and test images from ``test_dir`` (``root/test`` when that
folder exists, else ``val_dir`` again, which ``check`` says in one line), both Resize +
CenterCrop, all normalised with the ImageNet mean/std. The training crop side
(``train_resolution``) can be changed between epochs, e.g. by
``mrl.training.callbacks.ProgressiveResolution``.

``decode="cpu"`` (default) decodes with PIL and transforms in the loader workers;
``decode="device"`` has the workers only read the files' bytes and decodes and augments
whole batches on the training device (``mrl.data.jpeg``) in ``on_before_batch_transfer``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T

from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.core.validate import positive_int
from mrl.data.base import TEST_STREAM, TRAIN_STREAM, VAL_STREAM, VisionDataModule
from mrl.data.jpeg import (
    EncodedImageFolder,
    EncodedImages,
    collate_encoded,
    decode_images,
    eval_batch,
    train_batch,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODE_MODES = ("cpu", "device")


def _class_folders(path: Path) -> list[str]:
    # Same rule as torchvision's find_classes, so the count matches ImageFolder's labels.
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir())


class SharedSizeRandomResizedCrop(T.RandomResizedCrop):
    """``RandomResizedCrop`` whose output side is read, for every image, from ``side``.

    ``side`` is a one-element integer tensor in shared memory: DataLoader workers hold
    copies of the dataset and its transforms, but a shared tensor stays one buffer in
    every process (inherited by forked workers, passed by handle to spawned ones), so a
    value written by the main process reaches persistent workers too, from their next
    image on.
    """

    def __init__(self, side: Tensor, **kwargs: Any) -> None:
        super().__init__(int(side[0]), **kwargs)
        self.side = side

    def forward(self, img: Any) -> Any:
        """Crop and resize ``img`` to the side currently held by ``side``."""
        size = int(self.side[0])
        self.size = (size, size)
        return super().forward(img)


class ImageFolderDataModule(VisionDataModule):
    """Image classification from class-per-folder directory trees, RGB images.

    Args:
        root: parent directory; ``train_dir``/``val_dir`` default to ``root/train`` and
            ``root/val``, ``test_dir`` to ``root/test`` if that folder exists.
        train_dir: training tree (one sub-folder per class).
        val_dir: validation tree with the same class folders.
        test_dir: test tree with the same class folders. ``None``: ``root/test`` when it is
            a folder, else the validation tree doubles as the test set (``test_split``
            says which: ``"test"`` or ``"val"``).
        num_classes: expected number of classes; checked against the class folders.
            ``None`` counts the folders of ``train_dir`` at construction.
        image_size: training crop (RandomResizedCrop) side at the start; see
            ``train_resolution`` to change it between epochs.
        eval_resize: shorter-side resize before the evaluation center crop.
        eval_crop: evaluation center-crop side (normally equal to ``image_size``).
        decode: ``cpu``: PIL decoding and torchvision transforms in the loader workers.
            ``device``: the workers only read the files; each batch is decoded (one
            ``decode_jpeg`` call, nvjpeg on a GPU; non-JPEG files on the CPU) and augmented
            on the trainer's device in ``on_before_batch_transfer``, with the same crops,
            flips, resizing and normalisation (crops and flips drawn from a generator
            seeded by seed, rank, epoch and batch, so independent of ``num_workers``). This
            applies to the loaders a Trainer drives: without a trainer attached (e.g. the
            datasets ``mrl-eval`` reads) images are decoded as with ``cpu``.
        Other arguments: see ``VisionDataModule``.
    """

    in_channels = 3

    def __init__(
        self,
        root: str = "",
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        num_classes: int | None = None,
        batch_size: int = 256,
        num_workers: int = 8,
        image_size: int = 224,
        eval_resize: int = 256,
        eval_crop: int = 224,
        decode: str = "cpu",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            **kwargs,
        )
        for name, value in (("eval_resize", eval_resize), ("eval_crop", eval_crop)):
            positive_int(value, f"data.{name}")
        if eval_crop > eval_resize:
            raise ConfigError(
                f"data.eval_crop={eval_crop} must not exceed data.eval_resize={eval_resize}"
            )
        if decode not in DECODE_MODES:
            raise ConfigError(f"data.decode must be one of {DECODE_MODES}, got {decode!r}")
        if num_classes is not None:
            positive_int(num_classes, "data.num_classes")
        self.train_dir = str(train_dir) if train_dir else str(Path(self.root) / "train")
        self.val_dir = str(val_dir) if val_dir else str(Path(self.root) / "val")
        self.test_dir, self.test_split = self._test_folder(test_dir)
        self._told_val_is_test = False
        self.eval_resize = eval_resize
        self.eval_crop = eval_crop
        self._expected_classes = num_classes
        self.num_classes = num_classes if num_classes is not None else len(self._check_classes())
        self.decode = decode
        self._eval_folders: dict[str, Dataset] = {}
        self._augment_epoch, self._augment_batches = -1, 0
        # In shared memory so that a change reaches the workers' copies of the transform.
        self._train_side = torch.tensor([image_size], dtype=torch.int64).share_memory_()
        self.train_resolution_schedule: Callable[[int], int] | None = None

    def _test_folder(self, test_dir: str | None) -> tuple[str, str]:
        """The test tree and its split name: ``test_dir`` if given, else ``root/test`` when
        it is a folder (``"test"``), else the validation tree (``"val"``)."""
        if test_dir:
            return str(test_dir), "test"
        default = Path(self.root) / "test"
        if self.root and default.is_dir():
            return str(default), "test"
        return self.val_dir, "val"

    @property
    def train_resolution(self) -> int:
        """Side of the training crops; setting it changes them from the next image on.

        Set it before an epoch's iterator is created, since DataLoader workers prefetch
        batches from that moment (see ``mrl.training.callbacks.ProgressiveResolution``).
        """
        return int(self._train_side[0])

    @train_resolution.setter
    def train_resolution(self, side: int) -> None:
        self._train_side.fill_(positive_int(side, "train_resolution"))

    def _check_classes(self) -> list[str]:
        """Verify the trees exist with identical class folders; return the class names."""
        trees = [("train_dir", self.train_dir), ("val_dir", self.val_dir)]
        if self.test_split == "test":
            trees.append(("test_dir", self.test_dir))
        names: dict[str, list[str]] = {}
        for field, d in trees:
            path = Path(d)
            if not path.is_dir():
                raise DataNotFoundError(
                    f"image folder not found: {path} (data.{field}); point data.root=<dir> at a "
                    f"directory with train/ and val/ class folders, or set data.{field}=<dir>"
                )
            names[field] = _class_folders(path)
            if not names[field]:
                raise DataNotFoundError(
                    f"no class folders in {path} (data.{field}): ImageFolder needs one "
                    "sub-folder per class, e.g. <dir>/n01440764/*.JPEG"
                )
        train = names["train_dir"]
        for field, d in trees[1:]:
            other = names[field]
            if train != other:
                only = sorted(set(train) ^ set(other))[:3]
                raise ConfigError(
                    f"class folders differ between {self.train_dir} ({len(train)}) and "
                    f"{d} ({len(other)}), e.g. {only}: labels would not line up"
                )
        expected = self._expected_classes
        if expected is not None and expected != len(train):
            raise ConfigError(
                f"data.num_classes={expected} but {self.train_dir} has {len(train)} class "
                f"folders: set data.num_classes={len(train)} or fix the directory"
            )
        return train

    def check(self) -> None:
        """Raise ``DataNotFoundError`` if a directory or its class folders are missing,
        ``ConfigError`` if the class folders disagree with each other or ``num_classes``;
        say once when the validation tree doubles as the test set."""
        self._check_classes()
        if self.test_split == "val" and not self._told_val_is_test:
            self._told_val_is_test = True
            if rank_zero_only.rank == 0:
                log.warning(self.val_is_test_note())

    def val_is_test_note(self) -> str:
        """The line saying that the validation tree is also the test set."""
        missing = f"no {Path(self.root) / 'test'} folder" if self.root else "no data.test_dir"
        return f"{missing}: the val folder {self.val_dir} is also the test set"

    def train_dataloader(self) -> DataLoader:
        """The training loader; with a ``train_resolution_schedule`` (epoch -> side) and a
        trainer attached, the crops are first set to the side of the trainer's current epoch.

        Lightning creates the first iterator of a ``fit`` (and of every reload) right after
        this call and before any epoch hook, so this is where its side must be set.
        """
        if self.train_resolution_schedule is not None and self.trainer is not None:
            self.train_resolution = int(self.train_resolution_schedule(self.trainer.current_epoch))
        return super().train_dataloader()

    def train_transform(self) -> T.Compose:
        """RandomResizedCrop(train_resolution) + horizontal flip + ImageNet normalisation."""
        return T.Compose(
            [
                SharedSizeRandomResizedCrop(self._train_side),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def eval_transform(self) -> T.Compose:
        """Resize(eval_resize) + CenterCrop(eval_crop) + ImageNet normalisation."""
        return T.Compose(
            [
                T.Resize(self.eval_resize),
                T.CenterCrop(self.eval_crop),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def _decodes_on_device(self) -> bool:
        # Only a Trainer calls on_before_batch_transfer, so only its loaders get bytes.
        return self.decode == "device" and self.trainer is not None

    def _loader_kwargs(self) -> dict[str, Any]:
        kwargs = super()._loader_kwargs()
        if self.decode == "device":
            kwargs["collate_fn"] = collate_encoded
        return kwargs

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Also continue the device-side augmentation's batch count where the checkpoint was."""
        super().load_state_dict(state_dict)
        if state_dict:
            self._augment_epoch = int(state_dict["epoch"])
            self._augment_batches = int(state_dict["batches"])

    def _augment_generator(self) -> torch.Generator:
        """Generator of the next training batch's crops and flips, seeded by
        (seed, rank, epoch, batch of the epoch)."""
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        if epoch != self._augment_epoch:
            self._augment_epoch, self._augment_batches = epoch, 0
        key = f"{self.seed}/{rank}/{epoch}/{self._augment_batches}".encode()
        self._augment_batches += 1
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)

    def decode_batch(
        self,
        batch: tuple[EncodedImages, Tensor],
        device: str | torch.device,
        train: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Decode and transform an encoded batch on ``device``: (float32 images, labels).

        ``train``: RandomResizedCrop(``train_resolution``) + flip, drawn from ``generator``
        (default: the next batch's seeded generator); else Resize(``eval_resize``) +
        CenterCrop(``eval_crop``). Both are normalised with the ImageNet mean/std; the labels
        are returned as they are.
        """
        encoded, labels = batch
        images = decode_images(encoded.split(), device)
        if train:
            generator = generator if generator is not None else self._augment_generator()
            x = train_batch(
                images, self.train_resolution, IMAGENET_MEAN, IMAGENET_STD, generator=generator
            )
        else:
            x = eval_batch(images, self.eval_resize, self.eval_crop, IMAGENET_MEAN, IMAGENET_STD)
        return x, labels

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Decode an encoded batch (``decode="device"``) on the trainer's device, with the
        training transform while the trainer trains and the evaluation one otherwise;
        other batches pass unchanged."""
        encoded = isinstance(batch, (tuple, list)) and len(batch) == 2
        if not (encoded and isinstance(batch[0], EncodedImages)):
            return batch
        trainer = self.trainer
        if trainer is None:
            return self.decode_batch(batch, "cpu", train=False)
        decoded = self.decode_batch(batch, trainer.strategy.root_device, train=trainer.training)
        # The loops convert a batch's float tensors for "*-true" precisions before this
        # hook, when the images were still bytes; convert the decoded ones now.
        return trainer.precision_plugin.convert_input(decoded)

    def _limited(self, ds: Dataset, limit: int | None, stream: int) -> Dataset:
        if limit is None or limit >= len(ds):
            return ds
        return Subset(ds, self.subset_indices(len(ds), limit, stream).tolist())

    def _eval(self, path: str) -> Dataset:
        """The evaluation dataset of one tree (encoded bytes when decoding on the device),
        made once: validation and test share it when they are the same tree."""
        encoded = self._decodes_on_device()
        key = f"{'encoded' if encoded else 'decoded'}:{path}"
        if key not in self._eval_folders:
            self._eval_folders[key] = (
                EncodedImageFolder(path)
                if encoded
                else torchvision.datasets.ImageFolder(path, transform=self.eval_transform())
            )
        return self._eval_folders[key]

    def _make_train_val(self, train_augment: bool = True) -> tuple[Dataset, Dataset]:
        if train_augment and self._decodes_on_device():
            train: Dataset = EncodedImageFolder(self.train_dir)
            return (
                self._limited(train, self.limit_train, TRAIN_STREAM),
                self._limited(self._eval(self.val_dir), self.limit_val, VAL_STREAM),
            )
        transform = self.train_transform() if train_augment else self.eval_transform()
        train = torchvision.datasets.ImageFolder(self.train_dir, transform=transform)
        return (
            self._limited(train, self.limit_train, TRAIN_STREAM),
            self._limited(self._eval(self.val_dir), self.limit_val, VAL_STREAM),
        )

    def _make_test(self) -> Dataset:
        return self._limited(self._eval(self.test_dir), self.limit_test, TEST_STREAM)
