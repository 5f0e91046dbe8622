"""BlurPool (FFCV's anti-aliased downsampling), as the paper's ImageNet models were trained.

Every strided convolution with at least 16 input channels blurs its input with a fixed 3x3
binomial filter first. The module layout (`conv`, `blur_filter`) is that of the authors'
`BlurPoolConv2d`, so their checkpoints' keys load unchanged (see `mrl.saved.official`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def blur_filter(channels: int) -> Tensor:
    """The fixed depthwise 3x3 binomial filter ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16``."""
    filt = torch.tensor([[[[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]]]) / 16.0
    return filt.repeat(channels, 1, 1, 1)


class BlurPoolConv2d(nn.Module):
    """A convolution applied to its input blurred by a fixed 3x3 binomial filter (FFCV).

    Same module structure (``conv``, ``blur_filter``) and arithmetic as the official
    repository's ``BlurPoolConv2d``, so its state-dict keys load unchanged.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("blur_filter", blur_filter(conv.in_channels))

    def forward(self, x: Tensor) -> Tensor:
        """Blur each channel of ``x`` (stride 1, zero padding 1), then apply ``conv``."""
        blurred = F.conv2d(
            x, self.blur_filter, stride=1, padding=(1, 1), groups=self.conv.in_channels
        )
        return self.conv(blurred)


def apply_blurpool(module: nn.Module) -> nn.Module:
    """Wrap, in place, every strided ``Conv2d`` with >= 16 input channels in ``BlurPoolConv2d``.

    The rule of FFCV's ImageNet example, which the released checkpoints were trained with.
    Returns ``module``.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(module, name, BlurPoolConv2d(child))
        else:
            apply_blurpool(child)
    return module
