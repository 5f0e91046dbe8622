"""Image encoders: plain PyTorch modules mapping ``[B, C, H, W]`` to ``[B, num_features]``."""

from mrl.encoders.resnet import ResNetEncoder, resnet
from mrl.encoders.small_cnn import SmallCNN
from mrl.encoders.vit import ViTEncoder, vit

__all__ = ["ResNetEncoder", "SmallCNN", "ViTEncoder", "resnet", "vit"]
