"""Seeded, built-in image corruptions for robustness evaluation on small test sets.

Holds ``corrupt`` (one corruption at one severity, deterministic given a seed), the
parameter table ``CORRUPTION_PARAMS`` behind it (ImageNet-C-like, adapted to 28-32 px),
``corrupted_datasets`` (normalised tensor datasets, one per corruption and severity),
``fashion_mnist_test_images01`` (the raw Fashion-MNIST test split in [0, 1]) and
``corrupted_test_sets`` (the same for an in-memory data module such as Fashion-MNIST,
MNIST or CIFAR). Everything runs on CPU with torch alone.

Why not torchvision's `v2` functionals: they agree where they share a definition (contrast on
one channel, the blur away from the border; tests/test_robustness_official.py checks both) but
differ where ImageNet-C's definition is followed here: `adjust_contrast` blends colour images
towards their grayscale mean, ImageNet-C towards each channel's mean; `gaussian_blur` pads by
reflection, ImageNet-C's skimage repeats the edge pixel; `gaussian_noise` draws from the global
generator, while every corruption here draws from its own seeded generator; salt-and-pepper
and pixelate have no torchvision counterpart. Swapping them in would change recorded results.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.data.base import TensorImageDataset, VisionDataModule, make_tensor_dataset
from mrl.data.idx import read_idx
from mrl.data.mnist import IDX_STEMS, FashionMNISTDataModule

SEVERITIES = (1, 2, 3, 4, 5)

# One parameter per severity 1..5. Pixel-wise corruptions do not depend on the image size,
# so they take ImageNet-C's values (Hendrycks & Dietterich, 2019). The blur takes
# CIFAR-10-C's sigmas, whose 32 px images are the nearest published size to Fashion-MNIST's
# 28 px (ImageNet-C's 224 px radii would wipe out a 28 px image). Pixelate uses whole
# blocks: ImageNet-C's fractional grids (e.g. 28 -> 27 px) misalign with the pixels, so
# at 28 px their distortion does not grow with severity.
CORRUPTION_PARAMS: dict[str, tuple[float, ...]] = {
    # standard deviation of the additive Gaussian noise
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # sigma of the Gaussian blur kernel, in pixels
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # factor by which each image's deviation from its own mean is scaled
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # fraction of pixels set to 0 or 1 (half each), as ImageNet-C's impulse noise
    "salt_pepper": (0.03, 0.06, 0.09, 0.17, 0.27),
    # side in pixels of the square blocks that are averaged
    "pixelate": (2, 3, 4, 5, 6),
}

# Above this, values are taken to be normalised rather than in [0, 1] (rounding slack).
_RANGE_TOL = 1e-4


def _gaussian_noise(x: Tensor, std: float, gen: torch.Generator) -> Tensor:
    return x + std * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def _gaussian_kernel(sigma: float) -> Tensor:
    # Truncated at 4 sigma, as scipy / skimage (which ImageNet-C uses) do.
    radius = max(1, int(4.0 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian_blur(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    del gen  # deterministic
    c = x.shape[1]
    k = _gaussian_kernel(sigma).to(x.dtype)
    r = k.numel() // 2
    # Edge pixels are repeated (skimage's default mode 'nearest'); the kernel is separable.
    out = F.pad(x, (r, r, 0, 0), mode="replicate")
    out = F.conv2d(out, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, r, r), mode="replicate")
    return F.conv2d(out, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _contrast(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    del gen  # deterministic
    means = x.mean(dim=(-2, -1), keepdim=True)
    return (x - means) * factor + means


def _salt_pepper(x: Tensor, amount: float, gen: torch.Generator) -> Tensor:
    hit = torch.rand(x.shape, generator=gen) < amount
    salt = torch.rand(x.shape, generator=gen) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def _pixelate(x: Tensor, block: float, gen: torch.Generator) -> Tensor:
    del gen  # deterministic
    b = int(block)
    h, w = x.shape[-2:]
    # Sides that are not a multiple of b get a partial last block, filled by its edge pixels.
    padded = F.pad(x, (0, (-w) % b, 0, (-h) % b), mode="replicate")
    coarse = F.avg_pool2d(padded, b)
    return coarse.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)[..., :h, :w]


CORRUPTIONS: dict[str, Callable[[Tensor, float, torch.Generator], Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "salt_pepper": _salt_pepper,
    "pixelate": _pixelate,
}


def _check_choice(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choices: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(
            f"unknown severity {severity!r} for {name!r}; choices: "
            f"{', '.join(str(s) for s in SEVERITIES)}"
        )


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """The generator seed used for ``(seed, name, severity)``.

    Independent of Python's per-process string hashing, so runs are reproducible.
    """
    mixed = int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 101 + int(severity)
    return mixed % (2**63)


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` to a batch of images in [0, 1].

    Random corruptions draw from a local ``torch.Generator`` seeded from
    ``(seed, name, severity)`` (see ``corruption_seed``); the global RNG is untouched.
    The noise is drawn for the whole tensor at once, so an image's noise depends on its
    position in ``images`` as well as on the seed.

    Args:
        images: float ``[N, C, H, W]`` with values in [0, 1] (before normalisation).
        name: a key of ``CORRUPTIONS``.
        severity: one of ``SEVERITIES`` (1 = mildest).
        seed: seed of the random corruptions.

    Returns:
        A new tensor of the same shape and dtype, clamped to [0, 1].

    Raises:
        ValueError: for an unknown name or severity (listing the choices), or images that
            are not a 4-D float tensor in [0, 1].
    """
    _check_choice(name, severity)
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"corrupt: need float images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if images.numel() and (images.min() < -_RANGE_TOL or images.max() > 1 + _RANGE_TOL):
        raise ValueError(
            f"corrupt: images must be in [0, 1] (before normalisation), got values in "
            f"[{images.min().item():.3g}, {images.max().item():.3g}]"
        )
    gen = torch.Generator().manual_seed(corruption_seed(seed, name, severity))
    param = CORRUPTION_PARAMS[name][SEVERITIES.index(severity)]
    return CORRUPTIONS[name](images, param, gen).clamp_(0.0, 1.0)


def corrupted_datasets(
    images01: Tensor,
    labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    image_size: int | None = None,
) -> dict[str, Dataset]:
    """Normalised tensor datasets of ``images01`` under every corruption and severity.

    Each set holds ``N`` images (float32, about 4 bytes x C x H x W each), built eagerly;
    pass fewer corruptions at a time to bound memory.

    Args:
        images01: float ``[N, C, H, W]`` in [0, 1].
        labels: int ``[N]``.
        mean, std: per-channel normalisation applied after corrupting.
        corruptions: names from ``CORRUPTIONS``.
        severities: values from ``SEVERITIES``.
        seed: seed of the random corruptions (see ``corrupt``).
        image_size: resize to this side after corrupting (default: keep the size).

    Returns:
        ``{"<name>-<severity>": TensorImageDataset}`` in the order given, e.g.
        ``"gaussian_noise-3"``.
    """
    for name in corruptions:
        for severity in severities:
            _check_choice(name, severity)
    size = images01.shape[-1] if image_size is None else image_size
    return {
        f"{name}-{severity}": make_tensor_dataset(
            corrupt(images01, name, severity, seed), labels, mean, std, image_size=size
        )
        for name in corruptions
        for severity in severities
    }


# The normalisation FashionMNISTDataModule applies, as per-channel tuples.
FASHION_MNIST_MEAN: tuple[float, ...] = tuple(FashionMNISTDataModule.mean)
FASHION_MNIST_STD: tuple[float, ...] = tuple(FashionMNISTDataModule.std)


def fashion_mnist_test_images01(
    root: str | Path = FashionMNISTDataModule.default_root,
) -> tuple[Tensor, Tensor]:
    """The 10k Fashion-MNIST test images in [0, 1] and their labels, from the raw IDX files.

    Normalise with ``FASHION_MNIST_MEAN`` / ``FASHION_MNIST_STD`` (what
    ``FashionMNISTDataModule`` uses) after corrupting.

    Returns:
        ``(images float32 [N, 1, 28, 28] in [0, 1], labels int64 [N])``.

    Raises:
        DataNotFoundError: if ``t10k-images-idx3-ubyte[.gz]`` or the labels file is absent.
    """
    root = Path(root)
    paths = []
    for stem in (IDX_STEMS["test_images"], IDX_STEMS["test_labels"]):
        found = [root / n for n in (stem + ".gz", stem) if (root / n).is_file()]
        if not found:
            raise DataNotFoundError(
                f"Fashion-MNIST test file {stem}[.gz] not found in {root}: install "
                "'dataset-fashion-mnist' or pass root=<dir with the IDX files>"
            )
        paths.append(found[0])
    images = torch.from_numpy(read_idx(paths[0])).unsqueeze(1).float().div_(255.0)
    labels = torch.from_numpy(read_idx(paths[1]).astype("int64"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{paths}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def corrupted_test_sets(
    datamodule: VisionDataModule,
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
) -> dict[str, Dataset]:
    """Corrupted copies of an in-memory data module's test set (MNIST family, CIFAR).

    Sets the module up for testing, undoes the normalisation of the stored test tensors
    (``x * std + mean``, using the module's ``mean``/``std``), corrupts them and
    normalises again. ``limit_test`` is honoured because the stored test set already is
    the subset. Corruptions act at the stored resolution: the native one, or
    ``image_size`` when the module resized the whole split once.

    Raises:
        ConfigError: if the module has no ``mean``/``std`` or its test set is not an
            in-memory ``TensorImageDataset``.
    """
    if not hasattr(datamodule, "mean") or not hasattr(datamodule, "std"):
        raise ConfigError(
            f"corrupted_test_sets: {type(datamodule).__name__} has no mean/std attributes; "
            "use corrupted_datasets(images01, labels, mean, std, ...) instead"
        )
    if datamodule.test_set is None:
        datamodule.setup("test")
    test_set = datamodule.test_set
    if not isinstance(test_set, TensorImageDataset):
        raise ConfigError(
            f"corrupted_test_sets: the test set of {type(datamodule).__name__} is a "
            f"{type(test_set).__name__}, not an in-memory TensorImageDataset; "
            "use corrupted_datasets(images01, labels, mean, std, ...) instead"
        )
    mean, std = tuple(datamodule.mean), tuple(datamodule.std)
    mean_t = torch.tensor(mean).reshape(1, -1, 1, 1)
    std_t = torch.tensor(std).reshape(1, -1, 1, 1)
    # Un-normalising leaves float rounding of ~1e-7 outside [0, 1]; clamp it away.
    images01 = (test_set.images * std_t + mean_t).clamp_(0.0, 1.0)
    out_size = test_set.out_size if test_set.out_size is not None else images01.shape[-1]
    return corrupted_datasets(
        images01,
        test_set.labels,
        mean,
        std,
        corruptions,
        severities,
        seed,
        image_size=out_size,
    )
