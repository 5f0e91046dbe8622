"""Batched image decoding and augmentation on the training device (``decode="device"``).

Holds the pieces of ``ImageFolderDataModule(decode="device")``: ``EncodedImageFolder`` (each
file's encoded bytes and its label, listed exactly as ``torchvision.datasets.ImageFolder``
lists them), ``collate_encoded`` with its batch type ``EncodedImages`` (a batch's bytes packed
into one tensor), ``decode_images`` (one batched ``torchvision.io.decode_jpeg`` call on the
device: nvjpeg on CUDA, libjpeg-turbo on the CPU; anything that is not a JPEG, e.g. a PNG, is
decoded on the CPU with ``decode_image`` and moved), ``random_resized_crop_params``
(torchvision's RandomResizedCrop sampling, vectorised over a batch and drawn from a given
generator) and ``train_batch`` / ``eval_batch`` / ``normalize`` (crop, resize, flip and
normalise into a float32 ``[B, 3, H, W]`` batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info
from torchvision.datasets import DatasetFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

JPEG_MAGIC = (0xFF, 0xD8, 0xFF)


class EncodedImageFolder(DatasetFolder):
    """``ImageFolder``'s samples and labels, each image as its file's undecoded bytes.

    Items are ``(uint8 1-D tensor of the file, label)``; the files, their order and the
    class indices are those of ``torchvision.datasets.ImageFolder(root)``.
    """

    def __init__(self, root: str, is_valid_file: Callable[[str], bool] | None = None) -> None:
        super().__init__(
            root,
            loader=read_file,
            extensions=None if is_valid_file is not None else IMG_EXTENSIONS,
            is_valid_file=is_valid_file,
        )


class EncodedImages(NamedTuple):
    """A batch of encoded images: ``data[offsets[i]:offsets[i + 1]]`` is image ``i``."""

    data: Tensor  # uint8 [total bytes]
    offsets: Tensor  # int64 [B + 1]

    def split(self) -> list[Tensor]:
        """The images' encoded bytes, as views of ``data``."""
        bounds = self.offsets.tolist()
        return [self.data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def collate_encoded(samples: Sequence[tuple[Tensor, Any]]) -> tuple[Any, Tensor]:
    """Batch ``(encoded bytes, label)`` samples into ``(EncodedImages, int64 labels)``.

    The bytes are packed into one tensor rather than kept as a list: a DataLoader worker
    passes every tensor of a batch through its own shared-memory file descriptor, and
    hundreds of images per batch exhaust the descriptor limit (``Too many open files``,
    then a hung loader). Samples that are already decoded images (the datasets of a data
    module used without a Trainer) go to ``default_collate``.
    """
    first = samples[0][0]
    if not (isinstance(first, Tensor) and first.ndim == 1 and first.dtype == torch.uint8):
        return default_collate(samples)
    data = [s[0] for s in samples]
    offsets = torch.zeros(len(data) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor([d.numel() for d in data]).cumsum(0)
    total = int(offsets[-1])
    out = None
    if get_worker_info() is not None:
        # Build the batch in shared memory directly, as default_collate does, saving a copy.
        storage = first._typed_storage()._new_shared(total, device=first.device)
        out = first.new(storage).resize_(total)
    packed = torch.cat(data, out=out)
    labels = torch.tensor([int(s[1]) for s in samples], dtype=torch.int64)
    return EncodedImages(packed, offsets), labels


def is_jpeg(data: Tensor) -> bool:
    """Whether the encoded bytes start with the JPEG start-of-image marker."""
    return data.numel() >= 3 and tuple(data[:3].tolist()) == JPEG_MAGIC


def _decode_one(data: Tensor, device: torch.device) -> Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        # e.g. a CMYK JPEG that nvjpeg refuses: the CPU decoder handles it.
        return decode_image(data, mode=ImageReadMode.RGB).to(device, non_blocking=True)


def decode_images(encoded: Sequence[Tensor], device: str | torch.device = "cpu") -> list[Tensor]:
    """Decode encoded images to uint8 RGB ``[3, H, W]`` tensors on ``device``.

    The JPEGs are decoded by one batched ``decode_jpeg`` call on ``device`` (nvjpeg on a
    CUDA device); any other format (PNG, ...) is decoded on the CPU with ``decode_image``
    and moved to ``device``. If the batched call fails, the JPEGs are decoded one by one,
    falling back to the CPU for those the device decoder rejects.
    """
    device = torch.device(device)
    out: list[Tensor | None] = [None] * len(encoded)
    jpegs = [i for i, data in enumerate(encoded) if is_jpeg(data)]
    if jpegs:
        try:
            decoded = decode_jpeg(
                [encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device
            )
        except RuntimeError:
            decoded = [_decode_one(encoded[i], device) for i in jpegs]
        for i, image in zip(jpegs, decoded):
            out[i] = image
    for i, image in enumerate(out):
        if image is None:
            out[i] = decode_image(encoded[i], mode=ImageReadMode.RGB).to(device, non_blocking=True)
    return out  # type: ignore[return-value]


def random_resized_crop_params(
    sizes: Tensor,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Tensor:
    """RandomResizedCrop boxes ``int64 [B, 4]`` (top, left, height, width) for images of
    ``sizes`` ``[B, 2]`` (height, width).

    torchvision's ``RandomResizedCrop.get_params`` sampling, vectorised: for each image,
    the first of ``attempts`` (area fraction in ``scale``, log-uniform aspect ratio in
    ``ratio``) draws that fits the image, else the central crop with the aspect ratio
    clamped to ``ratio``; then a uniform position. Random numbers come from ``generator``
    (the global generator when ``None``).
    """
    n = sizes.shape[0]
    height = sizes[:, 0:1].to(torch.float64)
    width = sizes[:, 1:2].to(torch.float64)
    draw = torch.rand(n, 2 * attempts + 2, dtype=torch.float64, generator=generator)
    target = height * width * (scale[0] + (scale[1] - scale[0]) * draw[:, :attempts])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draw[:, attempts : 2 * attempts])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    w_pick, h_pick = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    height, width = height[:, 0], width[:, 0]

    in_ratio = width / height
    too_tall = in_ratio < min(ratio)
    too_wide = in_ratio > max(ratio)
    w_fallback = torch.where(too_wide, torch.round(height * max(ratio)), width)
    h_fallback = torch.where(too_tall, torch.round(width / min(ratio)), height)
    found = fits.any(dim=1)
    w_box = torch.where(found, w_pick, w_fallback)
    h_box = torch.where(found, h_pick, h_fallback)
    top_random = torch.floor(draw[:, -2] * (height - h_box + 1))
    left_random = torch.floor(draw[:, -1] * (width - w_box + 1))
    top = torch.where(found, top_random, torch.div(height - h_box, 2, rounding_mode="floor"))
    left = torch.where(found, left_random, torch.div(width - w_box, 2, rounding_mode="floor"))
    return torch.stack([top, left, h_box, w_box], dim=1).to(torch.int64)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``[B, C, H, W]`` to float32 ``(images / 255 - mean) / std``.

    The operations of ``ToTensor`` + ``Normalize``, in the same order, so equal pixels give
    bit-identical results.
    """
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.to(torch.float32).div_(255).sub_(m).div_(s)


def train_batch(
    images: Sequence[Tensor],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """RandomResizedCrop to ``size`` x ``size`` + random horizontal flip + normalisation.

    ``images`` are uint8 ``[3, H, W]`` tensors (any sizes, one device); the crop boxes and
    flips are drawn from ``generator`` (on the CPU), and the crops resized bilinearly with
    antialiasing like the PIL path. Returns float32 ``[B, 3, size, size]``.
    """
    sizes = torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.int64)
    boxes = random_resized_crop_params(sizes, generator).tolist()
    flips = (torch.rand(len(images), generator=generator) < 0.5).tolist()
    out = []
    for image, (top, left, h, w), flip in zip(images, boxes, flips):
        crop = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
        out.append(crop.flip(-1) if flip else crop)
    return normalize(torch.stack(out), mean, std)


def eval_batch(
    images: Sequence[Tensor],
    resize: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Resize the shorter side to ``resize``, center-crop ``crop``, normalise.

    The tensor counterpart of ``Resize(resize)`` + ``CenterCrop(crop)`` + ``ToTensor`` +
    ``Normalize``. Returns float32 ``[B, 3, crop, crop]``.
    """
    out = [
        F.center_crop(F.resize(image, [resize], antialias=True), [crop, crop]) for image in images
    ]
    return normalize(torch.stack(out), mean, std)
