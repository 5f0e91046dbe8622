"""Lightning data modules for image classification (MNIST family, CIFAR, ImageFolder,
synthetic), all derived from ``VisionDataModule``."""

from mrl.data.base import VisionDataModule, eval_sampler
from mrl.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from mrl.data.idx import read_idx
from mrl.data.imagefolder import ImageFolderDataModule
from mrl.data.mnist import FashionMNISTDataModule, MNISTDataModule
from mrl.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SyntheticDataModule",
    "VisionDataModule",
    "eval_sampler",
    "read_idx",
]
