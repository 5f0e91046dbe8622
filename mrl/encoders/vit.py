"""torchvision Vision Transformers (named or custom size) returning the class token."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn
from torchvision.models import vision_transformer as tv_vit

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int

# Patch size of each named torchvision variant, needed to validate image_size up front.
_VARIANT_PATCH: dict[str, int] = {
    "vit_b_16": 16,
    "vit_b_32": 32,
    "vit_l_16": 16,
    "vit_l_32": 32,
    "vit_h_14": 14,
}
_ARCH_KEYS = ("patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim")


class ViTEncoder(nn.Module):
    """A torchvision ``VisionTransformer`` whose ``heads`` are an identity.

    ``forward`` returns the final-layer class token, of width ``num_features``
    (the transformer's ``hidden_dim``). Inputs must be ``image_size`` px square.
    """

    def __init__(self, model: tv_vit.VisionTransformer) -> None:
        """Wrap ``model``, whose ``heads`` must already be an identity."""
        super().__init__()
        self.model = model
        self.num_features: int = model.hidden_dim
        self.image_size: int = model.image_size
        self.patch_size: int = model.patch_size

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``[B, C, image_size, image_size]`` to ``[B, num_features]``."""
        return self.model(x)


def _replace_conv_proj(model: tv_vit.VisionTransformer, in_channels: int) -> None:
    if not isinstance(model.conv_proj, nn.Conv2d):
        raise ConfigError(
            f"in_channels={in_channels} is not supported together with conv_stem_configs"
        )
    conv = nn.Conv2d(
        in_channels, model.hidden_dim, kernel_size=model.patch_size, stride=model.patch_size
    )
    # Same init torchvision gives its own patch projection.
    fan_in = in_channels * model.patch_size * model.patch_size
    nn.init.trunc_normal_(conv.weight, std=math.sqrt(1 / fan_in))
    nn.init.zeros_(conv.bias)
    model.conv_proj = conv


def vit(
    variant: str = "vit_b_16",
    in_channels: int = 3,
    image_size: int = 224,
    **overrides: Any,
) -> ViTEncoder:
    """Build a Vision Transformer encoder without classification head.

    Args:
        variant: a torchvision name (``vit_b_16``, ``vit_b_32``, ``vit_l_16``,
            ``vit_l_32``, ``vit_h_14``), or ``"custom"``; then ``overrides`` must give
            ``patch_size``, ``num_layers``, ``num_heads``, ``hidden_dim`` and ``mlp_dim``.
        in_channels: channels of the input images; != 3 replaces ``conv_proj``.
        image_size: side of the square input images; must be divisible by the patch size.
        **overrides: further ``VisionTransformer`` arguments (e.g. ``dropout``,
            ``attention_dropout``). Randomly initialised; never downloads weights.

    Returns:
        A module mapping ``[B, in_channels, image_size, image_size]`` to
        ``[B, num_features]`` with ``num_features == hidden_dim``.

    Raises:
        ConfigError: (a ValueError) for an unknown variant, missing or misplaced
            architecture arguments, a bad ``in_channels``, or an ``image_size`` not
            divisible by the patch size.
    """
    in_channels = positive_int(in_channels, "in_channels")
    for key in ("num_classes", "representation_size"):
        if key in overrides:
            raise ConfigError(f"{key} is not allowed: the encoder has no classification head")

    if variant == "custom":
        missing = [k for k in _ARCH_KEYS if k not in overrides]
        if missing:
            raise ConfigError(f"variant 'custom' needs {', '.join(missing)}")
        patch_size = positive_int(overrides["patch_size"], "patch_size")
    elif variant in _VARIANT_PATCH:
        given = [k for k in _ARCH_KEYS if k in overrides]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be overridden for variant {variant!r}; "
                "use variant='custom'"
            )
        patch_size = _VARIANT_PATCH[variant]
    else:
        known = ", ".join([*_VARIANT_PATCH, "custom"])
        raise ConfigError(f"unknown ViT variant {variant!r}; supported: {known}")

    image_size = positive_int(image_size, "image_size")
    if image_size % patch_size != 0:
        raise ConfigError(
            f"image_size={image_size} is not divisible by patch_size={patch_size} "
            f"(variant {variant!r})"
        )

    if variant == "custom":
        model = tv_vit.VisionTransformer(image_size=image_size, **overrides)
    else:
        model = getattr(tv_vit, variant)(weights=None, image_size=image_size, **overrides)
    model.heads = nn.Identity()
    if in_channels != 3:
        _replace_conv_proj(model, in_channels)
    return ViTEncoder(model)
