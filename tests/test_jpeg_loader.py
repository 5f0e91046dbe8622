"""The device-decoding ImageFolder input path (`data.decode=device`, `mrl.data.jpeg`): encoded
bytes datasets and their collate, decoding (JPEG and a PNG), the evaluation transform against the
PIL path, the seeded training augmentation and its resolution, and short real runs."""

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2 as v2
from conftest import PAPER_CPU_TINY, compose_train
from PIL import Image
from torch.utils.data import DataLoader

from mrl.cli.train import train
from mrl.core.errors import ConfigError
from mrl.data import ImageFolderDataModule
from mrl.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from mrl.data.jpeg import (
    EncodedImageFolder,
    EncodedImages,
    collate_encoded,
    decode_images,
    random_resized_crop_params,
    train_batch,
)
from mrl.training.builders import build_model
from mrl.training.callbacks import ProgressiveResolution

# One uint8 level after normalisation, in the channel with the smallest std.
ONE_LEVEL = 1 / (255 * min(IMAGENET_STD))


def _photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour fields plus noise: JPEG-typical content, unlike pure noise."""
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), int)
    return np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 JPEGs (quality 90, 48-80 px sides) in train/ and val/; in each split
    one image of class1 is a PNG."""
    root = tmp_path_factory.mktemp("jpegfolder")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                image = Image.fromarray(_photo_like(rng, *rng.integers(48, 81, 2)))
                if c == 1 and i == 0:
                    image.save(folder / f"{i}.png")
                else:
                    image.save(folder / f"{i}.jpg", quality=90)
    return root


def _datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    args = dict(root=str(root), num_classes=3, batch_size=4, num_workers=0, image_size=32)
    return ImageFolderDataModule(**{**args, "eval_resize": 40, "eval_crop": 32, **kwargs})


def test_encoded_folder_lists_imagefolders_files_as_bytes(jpeg_root: Path):
    encoded = EncodedImageFolder(str(jpeg_root / "train"))
    folder = torchvision.datasets.ImageFolder(str(jpeg_root / "train"))
    assert encoded.samples == folder.samples and len(encoded) == 12
    assert sum(p.endswith(".png") for p, _ in encoded.samples) == 1
    for (path, label), (data, y) in zip(encoded.samples, encoded):
        assert data.dtype == torch.uint8 and data.ndim == 1 and y == label
        assert data.numpy().tobytes() == Path(path).read_bytes()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_collate_packs_the_bytes_and_keeps_the_labels(jpeg_root: Path, num_workers: int):
    dataset = EncodedImageFolder(str(jpeg_root / "val"))
    loader = DataLoader(dataset, batch_size=5, collate_fn=collate_encoded, num_workers=num_workers)
    seen = []
    for encoded, labels in loader:
        assert isinstance(encoded, EncodedImages) and encoded.data.dtype == torch.uint8
        parts = encoded.split()
        assert len(parts) == len(labels) == encoded.offsets.numel() - 1
        seen += [(p.numpy().tobytes(), int(y)) for p, y in zip(parts, labels)]
    assert seen == [(Path(p).read_bytes(), y) for p, y in dataset.samples]


def test_decode_images_matches_pil_for_jpeg_and_png(jpeg_root: Path):
    dataset = EncodedImageFolder(str(jpeg_root / "train"))
    decoded = decode_images([data for data, _ in dataset], "cpu")
    for (path, _), image in zip(dataset.samples, decoded):
        with Image.open(path) as f:
            pil = torch.from_numpy(np.array(f.convert("RGB"))).permute(2, 0, 1)
        assert image.shape == pil.shape and image.dtype == torch.uint8
        diff = (image.int() - pil.int()).abs().max().item()
        if path.endswith(".png"):
            assert diff == 0  # lossless, so any difference would be a bug
        else:
            # PIL and torchvision both bundle libjpeg-turbo with its default (islow) IDCT and
            # are bit-identical here; allow 2 levels for other builds of the library.
            assert diff <= 2


def test_eval_decode_is_close_to_the_pil_path(jpeg_root: Path):
    dm = _datamodule(jpeg_root, decode="device")
    encoded = EncodedImageFolder(dm.val_dir)
    batch = collate_encoded([encoded[i] for i in range(len(encoded))])
    x, labels = dm.decode_batch(batch, "cpu", train=False)

    reference = torchvision.datasets.ImageFolder(dm.val_dir, transform=dm.eval_transform())
    expected = torch.stack([reference[i][0] for i in range(len(reference))])
    assert x.shape == expected.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    assert labels.tolist() == reference.targets
    # Decoding is bit-identical (see above), so only the resize differs: torchvision's
    # antialiased bilinear kernel is PIL's, rounded to uint8 in a different order, which
    # moves a few pixels by one level (measured: max exactly 1 level, mean ~1e-4).
    diff = (x - expected).abs()
    assert diff.max().item() <= ONE_LEVEL * 1.001
    assert diff.mean().item() < 2e-3
    png = [i for i, (p, _) in enumerate(reference.samples) if p.endswith(".png")]
    assert len(png) == 1 and diff[png].max().item() <= ONE_LEVEL * 1.001


def test_train_decode_follows_the_train_resolution(jpeg_root: Path):
    dm = _datamodule(jpeg_root, decode="device")
    encoded = EncodedImageFolder(dm.train_dir)
    batch = collate_encoded([encoded[i] for i in range(len(encoded))])
    x, labels = dm.decode_batch(batch, "cpu", train=True)
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    assert labels.tolist() == encoded.targets
    lowest = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    highest = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    per_channel = x.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= lowest - 1e-5).all()
    assert (per_channel.max(1).values <= highest + 1e-5).all()
    dm.train_resolution = 48
    assert dm.decode_batch(batch, "cpu", train=True)[0].shape == (12, 3, 48, 48)


def test_train_augmentation_is_seeded_per_batch(jpeg_root: Path):
    one, other = _datamodule(jpeg_root, decode="device"), _datamodule(jpeg_root, decode="device")
    encoded = EncodedImageFolder(one.train_dir)
    batch = collate_encoded([encoded[i] for i in range(8)])
    first, second = (one.decode_batch(batch, "cpu", train=True)[0] for _ in range(2))
    assert torch.equal(first, other.decode_batch(batch, "cpu", train=True)[0])
    assert not torch.equal(first, second)  # the next batch draws new crops
    reseeded = _datamodule(jpeg_root, decode="device", seed=1)
    assert not torch.equal(first, reseeded.decode_batch(batch, "cpu", train=True)[0])


def test_crop_params_follow_torchvision():
    sizes = torch.tensor([[375, 500]] * 20000)
    boxes = random_resized_crop_params(sizes, torch.Generator().manual_seed(0)).double()
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 375).all()
    assert (left + w <= 500).all()
    area, log_aspect = h * w / (375 * 500), torch.log(w / h)
    assert area.min() >= 0.079 and area.max() <= 1.0
    assert log_aspect.abs().max() <= math.log(4 / 3) + 0.02  # rounding to whole pixels

    torch.manual_seed(0)
    reference = torch.tensor(
        [v2.RandomResizedCrop.get_params(torch.zeros(1, 375, 500), [0.08, 1.0], [3 / 4, 4 / 3])
         for _ in range(20000)], dtype=torch.float64,
    )  # fmt: skip
    # Same sampling, other random numbers: the means agree within a few standard errors
    # (about 0.4 px for the offsets, 0.5 px for the sides, with these seeds).
    assert torch.allclose(boxes.mean(0), reference.mean(0), atol=2.5)

    # A 10 x 1000 strip admits no crop of area >= 8% with aspect <= 4/3: central fallback.
    strip = random_resized_crop_params(torch.tensor([[10, 1000]]), torch.Generator())
    assert strip.tolist() == [[0, 493, 10, 13]]


def test_train_flips_about_half_the_images():
    ramp = torch.arange(256, dtype=torch.uint8).expand(3, 64, 256)  # brighter to the right
    x = train_batch([ramp] * 200, 16, (0.0,) * 3, (1.0,) * 3, torch.Generator().manual_seed(0))
    left, right = x[..., :8].mean((1, 2, 3)), x[..., 8:].mean((1, 2, 3))
    assert (left != right).all()
    assert 70 <= int((left > right).sum()) <= 130


def test_without_a_trainer_the_images_are_decoded_on_the_cpu(jpeg_root: Path):
    """What mrl-eval reads from a decode=device run's data config: ordinary image tensors."""
    dm = _datamodule(jpeg_root, decode="device")
    dm.setup()
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert dm.database_set()[0][0].shape == (3, 32, 32)
    batch = next(iter(dm.train_dataloader()))
    assert dm.on_before_batch_transfer(batch, 0) is batch  # already decoded: unchanged


def test_the_hook_follows_the_trainers_state_and_precision(jpeg_root: Path):
    dm = _datamodule(jpeg_root, decode="device")
    encoded = EncodedImageFolder(dm.train_dir)
    batch = collate_encoded([encoded[i] for i in range(4)])
    dm.trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision="bf16-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    dm.trainer.training = True
    dm.train_resolution = 24
    images, labels = dm.on_before_batch_transfer(batch, 0)
    assert images.shape == (4, 3, 24, 24) and images.dtype == torch.bfloat16
    assert labels.tolist() == encoded.targets[:4]
    dm.trainer.validating = True
    assert dm.on_before_batch_transfer(batch, 0)[0].shape == (4, 3, 32, 32)  # eval_crop


def test_decode_must_be_cpu_or_device(jpeg_root: Path):
    with pytest.raises(ConfigError, match="data.decode"):
        _datamodule(jpeg_root, decode="gpu")


class BatchProbe(pl.Callback):
    """Records, per epoch, the type and side of every training batch the model receives."""

    def __init__(self) -> None:
        self.sides: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images, labels = batch
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        self.sides.setdefault(trainer.current_epoch, []).append(int(images.shape[-1]))


@pytest.mark.slow
def test_fit_decodes_on_the_device_and_follows_the_schedule(jpeg_root: Path, tmp_path: Path):
    cfg = compose_train(tmp_path, "encoder.widths=[8,8,8,16]", "nesting=[4,8,16]")
    model = build_model(cfg, num_classes=3, in_channels=3)
    datamodule = _datamodule(jpeg_root, decode="device", num_workers=1, image_size=40)
    probe = BatchProbe()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, limit_val_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
        callbacks=[probe, ProgressiveResolution(32, 48, 0, 1, step=16)],
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert isinstance(datamodule.train_set, EncodedImageFolder)
    assert probe.sides == {0: [32] * 3, 1: [48] * 3}


@pytest.mark.slow
def test_fast_dev_run_with_device_decoding(jpeg_root: Path, tmp_path: Path):
    cfg = compose_train(
        tmp_path / "run",
        "experiment=paper/resnet50_imagenet",
        "data=imagenet_gpu_decode",
        f"data.root={jpeg_root}",
        "trainer.fast_dev_run=true",
        *PAPER_CPU_TINY,
        "data.decode=device",
    )
    results = train(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["nesting"] == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert all(row["top1"] is not None for row in written["per_dim"])
    assert results["config"]["data"]["decode"] == "device"
