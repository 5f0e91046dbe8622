"""Tests for mrl.data: IDX reader, data modules, configs and the DDP eval sampler."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from omegaconf import OmegaConf
from PIL import Image

from mrl.conf import CONFIG_DIR
from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SyntheticDataModule,
    VisionDataModule,
    eval_sampler,
    read_idx,
)
from mrl.data.base import TensorImageDataset

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
CONF_DIR = CONFIG_DIR / "data"


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """Hand-built IDX encoding: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    be = array.astype(array.dtype.newbyteorder(">"))
    return header + be.tobytes()


def write_fake_idx_set(root: Path, n_train: int, n_test: int, gz: bool) -> None:
    """Fake MNIST-style files whose pixel values encode the label (for checking pairing)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:] = (labels * 20)[:, None, None]
        for kind, arr, ndim in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(arr, 0x08)
            name = f"{prefix}-{kind}-idx{ndim}-ubyte"
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)


# -- read_idx -----------------------------------------------------------------------


def test_read_idx_plain_and_gz_exact(tmp_path: Path) -> None:
    # Written by hand, not via idx_bytes, so the test does not share the writer's bugs.
    raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 250, 5, 0])
    (tmp_path / "a-idx2-ubyte").write_bytes(raw)
    (tmp_path / "a-idx2-ubyte.gz").write_bytes(gzip.compress(raw))
    expected = np.array([[1, 2, 3], [250, 5, 0]], dtype=np.uint8)
    for name in ("a-idx2-ubyte", "a-idx2-ubyte.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)


def test_read_idx_big_endian_int32_and_float(tmp_path: Path) -> None:
    raw = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + bytes([0, 0, 1, 2]) + bytes([255, 255, 255, 254])
    (tmp_path / "i.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "i.idx"), np.array([258, -2]))
    f = np.array([[1.5], [-2.25]], dtype=np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(f, 0x0D))
    out = read_idx(tmp_path / "f.idx")
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, f)


@pytest.mark.parametrize(
    "raw, match",
    [
        (bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]), "magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "type code"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 7]), "truncated"),
        (bytes([0, 0, 0x08, 2, 0, 0]), "header"),
        (bytes([0, 0]), "header"),
    ],
)
def test_read_idx_bad_files(tmp_path: Path, raw: bytes, match: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(bytes([0, 0, 0x08, 1, 0, 0, 0, 100]) + bytes(100))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(path)


# -- Fashion-MNIST (real files) -----------------------------------------------------


@pytest.fixture(scope="module")
def fashion() -> FashionMNISTDataModule:
    if not FASHION_ROOT.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    dm = FashionMNISTDataModule(batch_size=64, eval_batch_size=500, seed=0)
    dm.setup()
    return dm


def test_fashion_attributes_before_setup() -> None:
    dm = FashionMNISTDataModule(root="/nonexistent")
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    assert dm.eval_batch_size == dm.batch_size


def test_fashion_real_sizes_and_batches(fashion: FashionMNISTDataModule) -> None:
    assert (len(fashion.train_set), len(fashion.val_set), len(fashion.test_set)) == (
        55000,
        5000,
        10000,
    )
    x, y = next(iter(fashion.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    xv, yv = next(iter(fashion.val_dataloader()))
    assert xv.shape == (500, 1, 28, 28) and yv.dtype == torch.int64
    assert sum(len(b[1]) for b in fashion.test_dataloader()) == 10000
    # Normalised with the data set's statistics.
    imgs = fashion.train_set.images
    assert abs(imgs.mean().item()) < 0.02 and abs(imgs.std().item() - 1) < 0.02
    # Labels are balanced in the real test set: 1000 per class.
    assert torch.bincount(fashion.test_set.labels, minlength=10).tolist() == [1000] * 10


def test_fashion_val_split_seeded_and_disjoint(fashion: FashionMNISTDataModule) -> None:
    train_idx, val_idx = fashion.train_indices, fashion.val_indices
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 60000
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    same = FashionMNISTDataModule(seed=0).held_out_split(60000, 5000)
    other = FashionMNISTDataModule(seed=1).held_out_split(60000, 5000)
    assert torch.equal(same[1], val_idx) and torch.equal(same[0], train_idx)
    assert not torch.equal(other[1], val_idx)


def test_fashion_missing_root_message(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data.root=" in msg and "nowhere" in msg and "\n" not in msg


# -- MNIST (fake files) -------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_fake_files(tmp_path: Path, gz: bool) -> None:
    write_fake_idx_set(tmp_path, n_train=300, n_test=70, gz=gz)
    dm = MNISTDataModule(root=str(tmp_path), batch_size=32, val_size=50, seed=3, augment=True)
    dm.check()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (250, 50, 70)
    assert not dm.train_set.hflip and dm.train_set.crop_pad == 2
    # Pixel value encodes the label: check images and labels stayed paired.
    for ds in (dm.val_set, dm.test_set):
        raw = ds.images[:, 0, 14, 14] * 0.3081 + 0.1307
        np.testing.assert_allclose(raw * 255, ds.labels.float() * 20, atol=1e-3)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and y.dtype == torch.int64


def test_mnist_limits_and_resize(tmp_path: Path) -> None:
    write_fake_idx_set(tmp_path, n_train=300, n_test=70, gz=True)
    dm = MNISTDataModule(
        root=str(tmp_path),
        val_size=50,
        limit_train=40,
        limit_test=20,
        image_size=32,
        batch_size=8,
        drop_last=False,
    )
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 50, 20)
    assert set(dm.train_indices.tolist()) <= set(range(300)) - set(dm.val_indices.tolist())
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 1, 32, 32)


def test_mnist_bad_config(tmp_path: Path) -> None:
    write_fake_idx_set(tmp_path, n_train=30, n_test=10, gz=True)
    with pytest.raises(ConfigError, match="val_size"):
        MNISTDataModule(root=str(tmp_path), val_size=30).setup("fit")
    with pytest.raises(ConfigError, match="batch_size"):
        MNISTDataModule(root=str(tmp_path), batch_size=0)
    dm = MNISTDataModule(root=str(tmp_path), val_size=5, batch_size=64)
    with pytest.raises(ConfigError, match="drop_last"):
        dm.train_dataloader()
    with pytest.raises(DataNotFoundError, match=r"data\.root="):
        MNISTDataModule(root=str(tmp_path / "none")).check()


# -- CIFAR ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, folder",
    [(CIFAR10DataModule, "cifar-10-batches-py"), (CIFAR100DataModule, "cifar-100-python")],
)
def test_cifar_missing(tmp_path: Path, cls: type, folder: str) -> None:
    dm = cls(root=str(tmp_path))
    assert dm.in_channels == 3 and dm.image_size == 32
    with pytest.raises(DataNotFoundError) as info:
        dm.setup("fit")
    assert folder in str(info.value) and "data.root=" in str(info.value)


def test_cifar10_fake_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)

    def batch(n: int) -> dict:
        labels = rng.integers(0, 10, size=n).tolist()
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        return {"data": data, "labels": labels}

    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(batch(20)))
    (base / "test_batch").write_bytes(pickle.dumps(batch(30)))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (base / "batches.meta").write_bytes(pickle.dumps(meta))
    # The fake files cannot match torchvision's MD5 sums.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=10, batch_size=16, seed=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (90, 10, 30)
    assert dm.train_set.crop_pad == 4 and dm.train_set.hflip and not dm.val_set.crop_pad
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


# -- ImageFolder ----------------------------------------------------------------------


@pytest.fixture()
def image_tree(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for c in ("cat", "dog", "fox"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return tmp_path


def test_imagefolder_batches(image_tree: Path) -> None:
    dm = ImageFolderDataModule(
        root=str(image_tree),
        batch_size=4,
        num_workers=0,
        image_size=24,
        eval_resize=32,
        eval_crop=24,
    )
    assert dm.num_classes == 3 and dm.in_channels == 3
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 6, 6)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = zip(*dm.val_dataloader())
    assert torch.cat(xs).shape == (6, 3, 24, 24)
    assert sorted(torch.cat(ys).tolist()) == [0, 0, 1, 1, 2, 2]


def test_imagefolder_errors(image_tree: Path) -> None:
    with pytest.raises(ConfigError, match="num_classes=5"):
        ImageFolderDataModule(root=str(image_tree), num_classes=5, num_workers=0).check()
    # Given num_classes, construction touches no files; check() reports the missing dir.
    dm = ImageFolderDataModule(root=str(image_tree / "nope"), num_classes=3)
    with pytest.raises(DataNotFoundError, match="train"):
        dm.setup("fit")
    (image_tree / "val" / "extra").mkdir()
    with pytest.raises(ConfigError, match="differ"):
        ImageFolderDataModule(root=str(image_tree), num_classes=3).check()


# -- Synthetic --------------------------------------------------------------------------


def test_synthetic_deterministic() -> None:
    a, b, c = (SyntheticDataModule(seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.train_set.images, b.train_set.images)
    assert torch.equal(a.test_set.labels, b.test_set.labels)
    assert not torch.equal(a.train_set.images, c.train_set.images)
    assert not torch.equal(a.train_set.images[:10], a.val_set.images[:10])
    assert a.train_set.images.shape == (512, 1, 28, 28)
    assert torch.bincount(a.train_set.labels).tolist() == [52] * 2 + [51] * 8
    a.check()


def test_synthetic_learnable() -> None:
    torch.manual_seed(0)
    dm = SyntheticDataModule(num_classes=10, in_channels=3, image_size=16, seed=5, batch_size=32)
    dm.setup()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step, (x, y) in enumerate(dm.train_dataloader()):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 9:
            break
    with torch.no_grad():
        acc = torch.cat([(model(x).argmax(1) == y) for x, y in dm.test_dataloader()]).float()
    assert acc.mean().item() > 0.5  # chance is 0.1


# -- eval sampler / loaders -----------------------------------------------------------


def test_eval_sampler_two_ranks_exact() -> None:
    ds = TensorImageDataset(torch.zeros(11, 1, 2, 2), torch.arange(11))
    seen = []
    for rank in range(2):
        sampler = eval_sampler(ds, num_replicas=2, rank=rank)
        assert isinstance(sampler, UnrepeatedDistributedSampler)
        seen += list(sampler)
    assert sorted(seen) == list(range(11))  # each index once, no padding duplicates
    assert eval_sampler(ds) is None  # not distributed: plain sequential loading


def test_eval_loaders_sequential_and_train_shuffled() -> None:
    dm = SyntheticDataModule(num_train=64, num_val=50, batch_size=16, eval_batch_size=16)
    assert isinstance(dm, VisionDataModule)
    labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert torch.equal(labels, dm.val_set.labels)
    loader = dm.train_dataloader()
    assert loader.drop_last and not loader.persistent_workers
    order = torch.cat([y for _, y in loader])
    assert len(order) == 64 and not torch.equal(order, dm.train_set.labels)
    # Constructing (not iterating) a loader with workers starts no process.
    workers = SyntheticDataModule(num_workers=2, drop_last=False)
    assert workers.train_dataloader().persistent_workers
    assert not workers.train_dataloader().drop_last
    assert workers.test_dataloader().persistent_workers


def test_val_loader_under_simulated_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    import mrl.data.base as base

    monkeypatch.setattr(base.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(base.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(base.dist, "get_rank", lambda: 1)
    dm = SyntheticDataModule(num_val=7, eval_batch_size=2)
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
    assert torch.equal(torch.cat([y for _, y in loader]), dm.val_set.labels[1::2])


# -- configs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet", "synthetic"]
)
def test_configs_instantiate(name: str) -> None:
    from hydra.utils import instantiate

    data = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg = OmegaConf.create({"seed": 7, "data": data})
    assert isinstance(cfg.data.image_size, int) and isinstance(cfg.data.batch_size, int)
    dm = instantiate(cfg.data)
    assert isinstance(dm, VisionDataModule)
    assert dm.seed == 7 and dm.image_size == cfg.data.image_size
    if name == "imagenet":
        assert dm.train_dir == f"{cfg.data.root}/train" and dm.num_classes == 1000
