"""The input contract of a saved image model: channels, side and the normalisation its data
module applies, read from that data module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mrl.core.errors import ConfigError
from mrl.data.base import InMemoryDataModule
from mrl.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule
from mrl.data.synthetic import SyntheticDataModule


@dataclass
class ImageInput:
    """The input contract of an image encoder: channels, side, and the normalisation the data
    module applies (None: the images are fed as they are, as for the synthetic data)."""

    channels: int
    side: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    resize: str


def image_input(datamodule: Any) -> ImageInput:
    """The input contract of a vision data module's evaluation images."""
    channels = int(datamodule.in_channels)
    if isinstance(datamodule, ImageFolderDataModule):
        resize = (
            f"resize the shorter side to {datamodule.eval_resize} px (bilinear), center-crop "
            f"{datamodule.eval_crop} px, scale to [0, 1]"
        )
        return ImageInput(channels, int(datamodule.eval_crop), IMAGENET_MEAN, IMAGENET_STD, resize)
    side = int(datamodule.image_size)
    resize = f"resize to {side} x {side} px (bilinear, antialiased), scale to [0, 1]"
    if isinstance(datamodule, InMemoryDataModule):
        return ImageInput(channels, side, tuple(datamodule.mean), tuple(datamodule.std), resize)
    if isinstance(datamodule, SyntheticDataModule):
        # Its images are generated already standardised: the model sees them as they are.
        return ImageInput(channels, side, None, None, "none: the synthetic data's own images")
    raise ConfigError(
        f"cannot tell the input normalisation of {type(datamodule).__name__}: export supports "
        f"the data modules of mrl.data"
    )
