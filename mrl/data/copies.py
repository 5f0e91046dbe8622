"""A data set extended with seeded augmented copies of its images: a large retrieval database
built from a small one (Fashion-MNIST's 55k training images become 1M with 18 copies each).

Item `i` of `AugmentedCopies(base, copies)` is copy `i // len(base)` of base item
`i % len(base)`; copy 0 is the base image itself, copy c >= 1 is shifted by (dy, dx) pixels in
[-shift, shift] (the vacated border takes `fill`) and, with `hflip`, flipped left-right. The
draws of copy c come from `numpy.random.default_rng([seed, c])`, so the same arguments give the
same images in any order, in any process, after any interruption.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mrl.core.errors import ConfigError


class AugmentedCopies(Dataset):
    """`base` followed by `copies` seeded augmented copies of it (see the module docstring).

    `base` returns `(image [C, H, W], label)` without augmentation of its own; `fill` is the
    per-channel value of a black pixel in the base's (normalised) units.
    """

    def __init__(
        self,
        base: Dataset,
        copies: int,
        seed: int = 0,
        shift: int = 2,
        hflip: bool = False,
        fill: Tensor | float = 0.0,
    ) -> None:
        for name, value, low in (("copies", copies, 0), ("shift", shift, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if getattr(base, "is_random", False):
            raise ConfigError("the base data set augments on its own: pass its evaluation copy")
        self.base, self.copies, self.shift, self.hflip = base, copies, shift, bool(hflip)
        self.n = len(base)
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1, 1, 1)
        # (copies, n) draws; row c-1 belongs to copy c. A few bytes per item.
        dy = np.zeros((copies, self.n), dtype=np.int8)
        dx = np.zeros((copies, self.n), dtype=np.int8)
        flip = np.zeros((copies, self.n), dtype=bool)
        for c in range(1, copies + 1):
            rng = np.random.default_rng([seed, c])
            dy[c - 1] = rng.integers(-shift, shift + 1, self.n)
            dx[c - 1] = rng.integers(-shift, shift + 1, self.n)
            flip[c - 1] = rng.random(self.n) < 0.5 if hflip else False
        self._dy, self._dx, self._flip = dy, dx, flip

    def __len__(self) -> int:
        return self.n * (self.copies + 1)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        c, j = divmod(index, self.n)
        x, y = self.base[j]
        if c == 0:
            return x, y
        x = shift_image(x, int(self._dy[c - 1, j]), int(self._dx[c - 1, j]), self.fill)
        if self._flip[c - 1, j]:
            x = x.flip(-1)
        return x, y


def shift_image(x: Tensor, dy: int, dx: int, fill: Tensor) -> Tensor:
    """`x` ([C, H, W]) moved down by `dy` and right by `dx` pixels; the border takes `fill`."""
    h, w = x.shape[-2:]
    out = fill.expand_as(x).clone()
    out[..., max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = x[
        ..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)
    ]
    return out
