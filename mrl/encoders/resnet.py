"""torchvision ResNet backbones (18/34/50/101) returning the pooled representation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision import models

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int
from mrl.encoders.blurpool import apply_blurpool

_BUILDERS: dict[int, Callable[..., models.ResNet]] = {
    18: models.resnet18,
    34: models.resnet34,
    50: models.resnet50,
    101: models.resnet101,
}


class ResNetEncoder(nn.Module):
    """A torchvision ResNet with its ``fc`` replaced by identity.

    ``backbone`` is the torchvision module; ``num_features`` is the width of the
    globally pooled output (512 for depth 18/34, 2048 for 50/101).
    """

    def __init__(self, backbone: models.ResNet, num_features: int) -> None:
        """Wrap ``backbone``, whose ``fc`` must already be an identity."""
        super().__init__()
        self.backbone = backbone
        self.num_features: int = num_features

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``[B, C, H, W]`` to representations ``[B, num_features]``."""
        return self.backbone(x)


def _new_conv1(in_channels: int, small_input: bool) -> nn.Conv2d:
    if small_input:
        conv = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # Same init torchvision gives its own stem.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _load_weights(backbone: models.ResNet, weights_path: str) -> None:
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # Accept both a plain torchvision state_dict and one saved from ResNetEncoder;
    # the classifier is dropped because the encoder has none.
    state = {
        (k[len("backbone.") :] if k.startswith("backbone.") else k): v for k, v in state.items()
    }
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(
            f"weights_path={weights_path!r} does not match this ResNet "
            f"(check depth, in_channels and small_input): {err}"
        ) from err


def resnet(
    depth: int,
    in_channels: int = 3,
    small_input: bool = False,
    zero_init_residual: bool = False,
    weights_path: str | None = None,
    blurpool: bool = False,
) -> ResNetEncoder:
    """Build a torchvision ResNet encoder without classifier.

    Args:
        depth: 18, 34, 50 or 101.
        in_channels: channels of the input images; != 3 replaces ``conv1``.
        small_input: for 28-32 px images, use a 3x3 stride-1 stem and no max-pool.
        zero_init_residual: zero the last BatchNorm of each residual block.
        weights_path: optional local ``state_dict`` file to load (never downloads);
            ``fc.*`` keys and a ``backbone.`` prefix are ignored.
        blurpool: blur the input of every strided convolution with >= 16 input channels
            (FFCV's BlurPool, which the paper's released models were trained with).

    Returns:
        A module mapping ``[B, in_channels, H, W]`` to ``[B, num_features]``.

    Raises:
        ConfigError: (a ValueError) for an unsupported depth, a bad ``in_channels``,
            or weights that do not fit the architecture.
    """
    if isinstance(depth, bool) or depth not in _BUILDERS:
        supported = ", ".join(str(d) for d in _BUILDERS)
        raise ConfigError(f"unsupported ResNet depth {depth!r}; supported: {supported}")
    in_channels = positive_int(in_channels, "in_channels")

    backbone = _BUILDERS[depth](weights=None, zero_init_residual=zero_init_residual)
    num_features = backbone.fc.in_features
    backbone.fc = nn.Identity()
    if small_input or in_channels != 3:
        backbone.conv1 = _new_conv1(in_channels, small_input)
    if small_input:
        backbone.maxpool = nn.Identity()
    if blurpool:
        apply_blurpool(backbone)
    if weights_path is not None:
        _load_weights(backbone, weights_path)
    return ResNetEncoder(backbone, num_features)
