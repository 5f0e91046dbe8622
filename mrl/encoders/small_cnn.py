"""A small, fast convolutional encoder for 28-32 px images on CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int


class SmallCNN(nn.Module):
    """Blocks of conv3x3 + BatchNorm + ReLU with 2x2 max-pooling between them.

    The output is the global average of the last block's feature map, so
    ``num_features == widths[-1]`` for any input size of at least 2**(len(widths)-1) px.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 256)) -> None:
        """Build the network.

        Args:
            in_channels: channels of the input images.
            widths: output channels of each block; one 2x2 max-pool sits between
                consecutive blocks.

        Raises:
            ConfigError: (a ValueError) if ``in_channels`` or a width is not a positive
                int, or ``widths`` is empty.
        """
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        given = widths
        widths = tuple(given)
        if not widths:
            raise ConfigError(f"widths must be non-empty, got {given!r}")
        widths = tuple(positive_int(w, f"widths[{i}]") for i, w in enumerate(widths))

        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += [
                # No conv bias: the following BatchNorm has its own shift.
                nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.widths = widths
        self.num_features: int = widths[-1]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # channels_last makes a CPU training step ~1.5x faster (oneDNN's native layout for
        # conv, BatchNorm and max-pool); CUDA handles it as well.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``[B, C, H, W]`` to representations ``[B, num_features]``."""
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.flatten(self.pool(self.features(x)), 1)
