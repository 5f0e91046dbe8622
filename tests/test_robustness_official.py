"""Tests for mrl.eval.corruptions, mrl.eval.robust_sets and mrl.saved.official."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision import models

from mrl import MRLHead
from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.data import FashionMNISTDataModule, SyntheticDataModule
from mrl.data.base import TEST_STREAM
from mrl.encoders.resnet import resnet
from mrl.eval.corruptions import (
    CORRUPTION_PARAMS,
    CORRUPTIONS,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    SEVERITIES,
    corrupt,
    corrupted_datasets,
    corrupted_test_sets,
    fashion_mnist_test_images01,
)
from mrl.eval.robust_sets import (
    ImageFolderTestSet,
    check_subset,
    class_subset_from_file,
    restrict_logits,
    subset_accuracy,
    subset_targets,
)
from mrl.saved.official import (
    PAPER_NESTING,
    convert_official_state_dict,
    detect_official_layout,
    load_official_checkpoint,
)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
requires_fmnist = pytest.mark.skipif(
    not (FASHION_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
    reason="needs Debian's dataset-fashion-mnist",
)


# -- corruptions --------------------------------------------------------------------


def smooth_images(n: int = 64, channels: int = 1, size: int = 28, seed: int = 0) -> Tensor:
    """Images in [0, 1] with both smooth regions and edges (like real photos, unlike noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 7, 7, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    edges = (torch.rand(n, channels, 4, 4, generator=g) > 0.5).float()
    blocks = F.interpolate(edges, size=(size, size), mode="nearest")
    return (0.6 * smooth + 0.4 * blocks).clamp(0, 1)


@pytest.mark.parametrize("name", ["gaussian_noise", "salt_pepper"])
def test_random_corruptions_are_seeded_and_leave_global_rng_alone(name: str) -> None:
    x = smooth_images()
    state = torch.get_rng_state()
    a = corrupt(x, name, 3, seed=7)
    b = corrupt(x, name, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, corrupt(x, name, 3, seed=8))
    # Each severity draws its own stream, not a rescaled copy of one noise tensor.
    lo, hi = corrupt(x, name, 1, seed=7) - x, corrupt(x, name, 2, seed=7) - x
    assert not torch.allclose(hi / hi.abs().mean(), lo / lo.abs().mean(), atol=1e-3)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_changes_images_stays_in_range_and_keeps_input(name: str) -> None:
    x = smooth_images(channels=3, size=32)
    before = x.clone()
    for severity in SEVERITIES:
        y = corrupt(x, name, severity, seed=0)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1
        assert (y - x).abs().mean() > 1e-3, (name, severity)
    assert torch.equal(x, before)


def _monotone_check(x: Tensor) -> None:
    for name in CORRUPTIONS:
        dist = [(corrupt(x, name, s, seed=1) - x).abs().mean().item() for s in SEVERITIES]
        assert all(a < b for a, b in zip(dist, dist[1:])), (name, dist)


def test_distortion_grows_with_severity_on_structured_images() -> None:
    _monotone_check(smooth_images(n=128))


@requires_fmnist
def test_distortion_grows_with_severity_on_fashion_mnist() -> None:
    images, _ = fashion_mnist_test_images01(FASHION_ROOT)
    _monotone_check(images[:1000])


def test_contrast_and_blur_do_what_they_say() -> None:
    x = smooth_images()
    low = corrupt(x, "contrast", 5)
    # Contrast keeps each image's mean and shrinks its spread.
    torch.testing.assert_close(low.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-5, rtol=0)
    assert (low.std(dim=(-2, -1)) < 0.1 * x.std(dim=(-2, -1))).all()
    # Blurring a constant image changes nothing (kernel sums to one, edges replicated).
    flat = torch.full((2, 1, 28, 28), 0.3)
    torch.testing.assert_close(corrupt(flat, "gaussian_blur", 5), flat)


def test_bad_corruption_arguments_raise() -> None:
    x = smooth_images(n=2)
    with pytest.raises(ValueError, match="gaussian_noise") as err:
        corrupt(x, "fog", 1)
    assert "unknown corruption 'fog'" in str(err.value)
    for severity in (0, 6, True):
        with pytest.raises(ValueError, match="1, 2, 3, 4, 5"):
            corrupt(x, "contrast", severity)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt((x - 0.5) / 0.2, "contrast", 1)  # normalised images by mistake
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupted_datasets(x, torch.zeros(2, dtype=torch.long), (0.5,), (0.2,), ["snow"], [1])


def write_idx_test_files(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Gzipped IDX test files (header: 0, 0, type 0x08, ndim, big-endian dims)."""
    for stem, arr in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (root / (stem + ".gz")).write_bytes(gzip.compress(header + arr.tobytes()))
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        n = 40
        arr = np.zeros((n, 28, 28) if "images" in stem else (n,), dtype=np.uint8)
        header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (root / (stem + ".gz")).write_bytes(gzip.compress(header + arr.tobytes()))


def test_corrupted_sets_from_files_and_from_the_data_module_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50).astype(np.uint8)
    write_idx_test_files(tmp_path, images, labels)

    x01, y = fashion_mnist_test_images01(tmp_path)
    assert x01.shape == (50, 1, 28, 28) and x01.dtype == torch.float32
    torch.testing.assert_close(x01[:, 0] * 255, torch.from_numpy(images).float())
    assert torch.equal(y, torch.from_numpy(labels).long())

    dm = FashionMNISTDataModule(root=str(tmp_path), val_size=10, limit_test=30, seed=4)
    sets = corrupted_test_sets(dm, ["gaussian_noise", "pixelate"], [2, 4], seed=5)
    assert list(sets) == ["gaussian_noise-2", "gaussian_noise-4", "pixelate-2", "pixelate-4"]
    # The module's test set is a seeded subset; corrupting those raw images must match.
    idx = dm.subset_indices(50, 30, TEST_STREAM)
    direct = corrupted_datasets(
        x01[idx],
        y[idx],
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        ["gaussian_noise", "pixelate"],
        [2, 4],
        seed=5,
    )
    for key, ds in sets.items():
        assert len(ds) == 30
        assert torch.equal(ds.labels, y[idx])
        torch.testing.assert_close(ds.images, direct[key].images, atol=1e-5, rtol=0)
    clean = (x01[idx] - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    assert not torch.allclose(sets["pixelate-4"].images, clean, atol=0.1)


def test_corrupted_test_sets_rejects_modules_without_tensors_or_stats() -> None:
    with pytest.raises(ConfigError, match="mean/std"):
        corrupted_test_sets(SyntheticDataModule(num_test=8), ["contrast"], [1])


@requires_fmnist
def test_corrupted_sets_from_real_fashion_mnist() -> None:
    images, labels = fashion_mnist_test_images01(FASHION_ROOT)
    assert images.shape == (10_000, 1, 28, 28) and labels.shape == (10_000,)
    assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.99
    assert torch.equal(labels.bincount(), torch.full((10,), 1000))
    dm = FashionMNISTDataModule(root=str(FASHION_ROOT))
    dm.setup("test")
    # Same pixels and normalisation as the data module's clean test set.
    norm = (images - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    torch.testing.assert_close(dm.test_set.images, norm)
    assert torch.equal(dm.test_set.labels, labels)

    sets = corrupted_datasets(
        images, labels, FASHION_MNIST_MEAN, FASHION_MNIST_STD, ["gaussian_blur"], [1, 5], seed=0
    )
    assert list(sets) == ["gaussian_blur-1", "gaussian_blur-5"]
    for key, ds in sets.items():
        assert len(ds) == 10_000
        x, label = ds[1234]
        assert x.shape == (1, 28, 28) and label.item() == labels[1234].item()
        assert torch.equal(ds.labels, labels)
        expected = (corrupt(images[:16], "gaussian_blur", int(key[-1])) - 0.2860) / 0.3530
        torch.testing.assert_close(ds.images[:16], expected)


# -- extra ImageFolder test sets ------------------------------------------------------


def make_folder(root: Path, names: list[str], per_class: int = 2) -> Path:
    """Class folders of 40x40 PNGs; the red value 40 * i + 20 marks folder ``names[i]``."""
    for pos, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = np.full((40, 40, 3), (40 * pos + 20, 10 * j, 0), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{j}.png")
    return root


def test_image_folder_test_set_labels_are_original_logit_indices(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "a", ["n003", "n001", "n002"])  # sorted: n001, n002, n003
    ds = ImageFolderTestSet(root, [5, 2, 7], resize=36, crop=32, num_classes=10)
    assert len(ds) == 6 and ds.class_subset == [5, 2, 7]
    assert ds.class_to_idx == {"n001": 5, "n002": 2, "n003": 7}
    red_to_label = {}
    for i in range(len(ds)):
        x, label = ds[i]
        assert x.shape == (3, 32, 32)
        # Undo the ImageNet normalisation of the red channel to find the source folder.
        red = round((x[0, 0, 0].item() * 0.229 + 0.485) * 255)
        red_to_label[red] = label
    # Red 60 is n001 (first in sorted order), 100 is n002, 20 is n003.
    assert red_to_label == {60: 5, 100: 2, 20: 7}
    assert sorted(ds.targets) == [2, 2, 5, 5, 7, 7]

    by_name = ImageFolderTestSet(root, {"n003": 7, "n002": 2, "n001": 5}, resize=36, crop=32)
    assert by_name.class_subset == [5, 2, 7] and by_name.targets == ds.targets


def test_image_folder_without_subset_reads_numeric_folders_as_labels(tmp_path: Path) -> None:
    # ImageNet-V2 names its folders 0..999; as strings they sort 0, 1, 10, 2.
    root = make_folder(tmp_path / "v2", ["0", "1", "2", "10"], per_class=1)
    ds = ImageFolderTestSet(root, None, resize=32, crop=32)
    assert ds.class_to_idx == {"0": 0, "1": 1, "10": 10, "2": 2}
    wnid_root = make_folder(tmp_path / "sketch", ["n02", "n01"], per_class=1)
    assert ImageFolderTestSet(wnid_root, None, resize=32, crop=32).targets == [0, 1]
    with pytest.raises(ConfigError, match="2 class folders but the model has 1000"):
        ImageFolderTestSet(wnid_root, None, num_classes=1000)


def test_image_folder_test_set_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="not found"):
        ImageFolderTestSet(tmp_path / "absent", [0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no class folders"):
        ImageFolderTestSet(tmp_path / "empty", [0])
    root = make_folder(tmp_path / "r", ["a", "b", "c"], per_class=1)
    with pytest.raises(ConfigError, match="3 class folders but class_subset has 2"):
        ImageFolderTestSet(root, [5, 2])
    with pytest.raises(ConfigError, match=r"class_subset\[2\] = 10 is out of range .* 10 classes"):
        ImageFolderTestSet(root, [5, 2, 10], num_classes=10)
    with pytest.raises(ConfigError, match=r"\['c'\]"):
        ImageFolderTestSet(root, {"a": 1, "b": 2})
    (root / "d").mkdir()  # a class folder without images
    with pytest.raises(DataNotFoundError, match="d"):
        ImageFolderTestSet(root, [1, 2, 3, 4])


def test_check_subset_and_subset_targets() -> None:
    assert check_subset([5, 2, 7], 10) == [5, 2, 7]
    with pytest.raises(ConfigError, match="out of range"):
        check_subset([-1], 10)
    with pytest.raises(ConfigError, match="more than once"):
        check_subset([1, 2, 1], 10)
    with pytest.raises(ConfigError, match="not an integer"):
        check_subset([1, 2.0], 10)
    targets = torch.tensor([7, 5, 2, 7])
    assert subset_targets(targets, [5, 2, 7]).tolist() == [2, 0, 1, 2]
    with pytest.raises(ValueError, match=r"labels \[3\] are not in class_subset"):
        subset_targets(torch.tensor([5, 3]), [5, 2, 7])


def test_restrict_logits_and_accuracy_among_the_subset() -> None:
    subset = [5, 2, 7]
    logits = torch.arange(2 * 4 * 10, dtype=torch.float32).reshape(2, 4, 10)
    restricted = restrict_logits(logits, subset)
    assert restricted.shape == (2, 4, 3)
    assert torch.equal(restricted, logits[..., [5, 2, 7]])
    with pytest.raises(ConfigError, match="out of range"):
        restrict_logits(logits, [5, 2, 10])

    # Class 0 (outside the subset) always has the largest logit, so accuracy over all ten
    # logits is zero; among the subset, the highest of columns 5, 2, 7 decides.
    scores = torch.zeros(2, 4, 10)
    scores[..., 0] = 100.0
    scores[0, :, 5] = 3.0  # dim 0 always predicts 5
    scores[0, :, 2] = 2.0
    scores[1, 0, 7] = 1.0  # dim 1: samples 0, 1 predict 7, 2; 2, 3 predict 5
    scores[1, 1, 2] = 1.0
    scores[1, 2:, 5] = 1.0
    targets = torch.tensor([7, 2, 5, 2])
    acc = subset_accuracy(scores, targets, subset, topk=(1, 2))
    assert acc[1].tolist() == [0.25, 0.75]
    assert acc[2].tolist() == [0.75, 1.0]
    assert subset_accuracy(scores, targets, None, topk=(1,))[1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="k <= 3"):
        subset_accuracy(scores, targets, subset, topk=(5,))


def test_class_subset_from_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("# imagenet-a\n6\n11\n\n13  # comment\n")
    assert class_subset_from_file(tmp_path / "a.txt") == [6, 11, 13]
    (tmp_path / "r.json").write_text(json.dumps({"n03": 9, "n01": 1, "n02": 4}))
    assert class_subset_from_file(tmp_path / "r.json") == [1, 4, 9]
    (tmp_path / "w.txt").write_text("n0003\nn0001\n")
    with pytest.raises(ConfigError, match="all_wnids"):
        class_subset_from_file(tmp_path / "w.txt")
    all_wnids = ["n0000", "n0001", "n0002", "n0003"]
    assert class_subset_from_file(tmp_path / "w.txt", all_wnids) == [1, 3]
    (tmp_path / "all.txt").write_text("\n".join(all_wnids))
    assert class_subset_from_file(tmp_path / "w.txt", tmp_path / "all.txt") == [1, 3]
    with pytest.raises(ConfigError, match=r"2 names not in all_wnids, e.g. \['n0003', 'n0001'\]"):
        class_subset_from_file(tmp_path / "w.txt", ["n0009"] + all_wnids[:1])
    (tmp_path / "bad.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="JSON object"):
        class_subset_from_file(tmp_path / "bad.json")
    with pytest.raises(DataNotFoundError):
        class_subset_from_file(tmp_path / "absent.txt")


# -- the authors' released checkpoints -----------------------------------------------


class OfficialMRLLinear(nn.Module):
    """The official MRL_Linear_Layer (RAIVNLab/MRL, MRL.py), written out plainly."""

    def __init__(self, nesting_list: list[int], num_classes: int, efficient: bool) -> None:
        super().__init__()
        self.nesting_list, self.efficient = nesting_list, efficient
        if efficient:
            self.nesting_classifier_0 = nn.Linear(nesting_list[-1], num_classes)
        else:
            for i, m in enumerate(nesting_list):
                setattr(self, f"nesting_classifier_{i}", nn.Linear(m, num_classes))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        logits = ()
        for i, m in enumerate(self.nesting_list):
            if self.efficient:
                w, b = self.nesting_classifier_0.weight, self.nesting_classifier_0.bias
                logits += (torch.matmul(x[:, :m], w[:, :m].t()) + b,)
            else:
                logits += (getattr(self, f"nesting_classifier_{i}")(x[:, :m]),)
        return logits


class OfficialFixedFeatureLayer(nn.Linear):
    """The official FixedFeatureLayer: a Linear reading the first in_features features."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x[:, : self.in_features], self.weight.t()) + self.bias


class OfficialBlurPoolConv2d(nn.Module):
    """FFCV's BlurPoolConv2d as in the official utils.py."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        filt = torch.tensor([[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]]) / 16.0
        self.conv = conv
        self.register_buffer("blur_filter", filt.repeat(conv.in_channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        blurred = F.conv2d(
            x, self.blur_filter, stride=1, padding=(1, 1), groups=self.conv.in_channels
        )
        return self.conv.forward(blurred)


def official_apply_blurpool(mod: nn.Module) -> None:
    for name, child in mod.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(mod, name, OfficialBlurPoolConv2d(child))
        else:
            official_apply_blurpool(child)


def official_model(fc: nn.Module, blurpool: bool, seed: int) -> nn.Module:
    """torchvision resnet50 with the given fc, random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = models.resnet50(weights=None)
    model.fc = fc
    if blurpool:
        official_apply_blurpool(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.1)
                m.num_batches_tracked.fill_(123)
    return model.eval()


def official_logits(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out = model(x)
    return torch.stack(out) if isinstance(out, tuple) else out[None]


def assert_same_logits(ours: Tensor, ref: Tensor) -> None:
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize(
    ("method", "blurpool", "ddp", "wrapper"),
    [
        ("mrl", True, True, "state_dict"),
        ("mrl_e", False, False, None),
        ("ff", True, True, "model"),
    ],
)
def test_official_checkpoint_reproduces_the_official_logits(
    tmp_path: Path, method: str, blurpool: bool, ddp: bool, wrapper: str | None
) -> None:
    nesting = list(PAPER_NESTING)
    if method == "ff":
        fc: nn.Module = OfficialFixedFeatureLayer(64, 1000)
    else:
        fc = OfficialMRLLinear(nesting, 1000, efficient=method == "mrl_e")
    model = official_model(fc, blurpool, seed=0)
    state = {("module." + k if ddp else k): v for k, v in model.state_dict().items()}
    assert detect_official_layout(state) == method
    path = tmp_path / "ckpt.pt"
    torch.save({wrapper: state, "epoch": 40} if wrapper else state, path)

    encoder, head, info = load_official_checkpoint(path)
    expected_nesting = [64] if method == "ff" else nesting
    assert info == {
        "method": method,
        "nesting": expected_nesting,
        "num_classes": 1000,
        "blurpool": blurpool,
        "bias": True,
    }
    assert head.method == method and list(head.nesting) == expected_nesting
    assert not encoder.training and not head.training
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = head(encoder(x))
    ref = official_logits(model, x)
    assert ref.abs().max() > 0.01  # not degenerate
    assert_same_logits(ours, ref)


@pytest.fixture(scope="module")
def plain_backbone_state() -> dict[str, Tensor]:
    """A torchvision resnet50 state dict without fc (random weights)."""
    torch.manual_seed(0)
    state = models.resnet50(weights=None).state_dict()
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def test_old_mrl_e_files_and_the_ff_layout(plain_backbone_state: dict[str, Tensor]) -> None:
    # The repository's older MRL-E files (SingleHeadNestedLinear) store a plain fc.
    official = OfficialMRLLinear(list(PAPER_NESTING), 1000, efficient=True)
    fc = {
        "fc.weight": official.nesting_classifier_0.weight.detach(),
        "fc.bias": official.nesting_classifier_0.bias.detach(),
    }
    state = {**plain_backbone_state, **fc}
    assert detect_official_layout(state) == "ff"
    z = torch.randn(3, 2048)
    ref = torch.stack(official(z)).detach()

    _, head_state, info = convert_official_state_dict(state, method="mrl_e")
    assert info["method"] == "mrl_e" and info["nesting"] == list(PAPER_NESTING)
    head = MRLHead(2048, 1000, info["nesting"], tied=True)
    head.load_state_dict(head_state, strict=True)
    assert_same_logits(head(z).detach(), ref)

    # Read as FF-2048, the same weights give the largest dim's logits.
    _, head_state, info = convert_official_state_dict(state)
    assert info["method"] == "ff" and info["nesting"] == [2048]
    head = MRLHead(2048, 1000, [2048])
    head.load_state_dict(head_state, strict=True)
    assert_same_logits(head(z).detach(), ref[-1:])

    # MRL-E evaluated at chosen dims uses the tied weight's first m columns.
    _, head_state, info = convert_official_state_dict(state, nesting=[16, 256], method="mrl_e")
    head = MRLHead(2048, 1000, [16, 256], tied=True)
    head.load_state_dict(head_state, strict=True)
    assert_same_logits(head(z).detach(), ref[[1, 5]])


def mrl_fc(nesting: list[int], num_classes: int = 10) -> dict[str, Tensor]:
    out = {}
    for i, m in enumerate(nesting):
        out[f"fc.nesting_classifier_{i}.weight"] = torch.randn(num_classes, m)
        out[f"fc.nesting_classifier_{i}.bias"] = torch.randn(num_classes)
    return out


def test_official_conversion_names_unexpected_and_missing_keys(
    plain_backbone_state: dict[str, Tensor],
) -> None:
    good = {**plain_backbone_state, **mrl_fc([8, 16, 2048])}
    enc, head_state, info = convert_official_state_dict(good)
    assert info["nesting"] == [8, 16, 2048] and info["num_classes"] == 10
    assert set(head_state) == {f"linears.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert all(k.startswith("backbone.") for k in enc)

    with pytest.raises(ConfigError, match=r"unexpected key\(s\) fc\.extra\.weight"):
        convert_official_state_dict({**good, "fc.extra.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) fc\.extra\.weight"):
        detect_official_layout({**good, "module.fc.extra.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) layer5\.0\.conv1\.weight"):
        convert_official_state_dict({**good, "layer5.0.conv1.weight": torch.zeros(1)})
    missing = {k: v for k, v in good.items() if k != "layer1.0.bn1.weight"}
    with pytest.raises(ConfigError, match=r"missing key\(s\) layer1\.0\.bn1\.weight"):
        convert_official_state_dict(missing)
    no_bias = {k: v for k, v in good.items() if k != "fc.nesting_classifier_1.bias"}
    with pytest.raises(ConfigError, match=r"fc\.nesting_classifier_1\.bias"):
        convert_official_state_dict(no_bias)
    wrong_shape = {**good, "conv1.weight": torch.zeros(64, 1, 7, 7)}
    with pytest.raises(ConfigError, match=r"conv1\.weight has shape \(64, 1, 7, 7\)"):
        convert_official_state_dict(wrong_shape)
    with pytest.raises(ConfigError, match=r"nesting=\[8, 32, 2048\]"):
        convert_official_state_dict(good, nesting=[8, 32, 2048])
    with pytest.raises(ConfigError, match="'mrl' layout"):
        convert_official_state_dict(good, method="ff")
    with pytest.raises(ConfigError, match="no fc"):
        detect_official_layout(plain_backbone_state)


def test_missing_num_batches_tracked_is_tolerated(plain_backbone_state: dict[str, Tensor]) -> None:
    # Checkpoints from older PyTorch versions have no num_batches_tracked buffers.
    state = {k: v for k, v in plain_backbone_state.items() if "num_batches_tracked" not in k}
    state.update(mrl_fc([2048], num_classes=5))
    enc_state, _, info = convert_official_state_dict(state)
    assert info["method"] == "mrl_e" and info["nesting"] == list(PAPER_NESTING)
    assert enc_state["backbone.bn1.num_batches_tracked"].item() == 0
    encoder, head, _ = load_official_checkpoint({"state_dict": state})
    torch.testing.assert_close(encoder.backbone.layer1[0].bn1.weight, state["layer1.0.bn1.weight"])
    torch.testing.assert_close(head.linear.weight, state["fc.nesting_classifier_0.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True])
def test_a_trained_blurpool_model_round_trips_through_the_official_layout(tied: bool) -> None:
    from mrl.saved.official import PAPER_NESTING, to_official_state_dict

    torch.manual_seed(0)
    encoder = resnet(depth=50, blurpool=True)
    head = MRLHead(2048, 3, PAPER_NESTING, tied=tied)
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    loss = sum(F.cross_entropy(logits, y) for logits in head(encoder(x)))
    loss.backward()
    optimizer.step()  # trained: weights and BatchNorm statistics moved
    encoder.eval(), head.eval()
    official = to_official_state_dict(encoder, head)
    # The authors' model (their BlurPool and MRL layer) takes the state dict as it is ...
    fc = OfficialMRLLinear(list(PAPER_NESTING), 3, efficient=tied)
    theirs = official_model(fc, blurpool=True, seed=1)
    theirs.load_state_dict(official, strict=True)
    # ... and it comes back unchanged, computing the same logits.
    back_encoder, back_head, info = load_official_checkpoint(official)
    assert info["blurpool"] and info["method"] == ("mrl_e" if tied else "mrl")
    for ours, back in ((encoder, back_encoder), (head, back_head)):
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0, msg=key)
    probe = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours_logits = head(encoder(probe))
        assert_same_logits(back_head(back_encoder(probe)), ours_logits)
        assert_same_logits(official_logits(theirs, probe), ours_logits)


def test_paper_recipes_train_with_blurpool(tmp_path: Path) -> None:
    from conftest import compose_train

    cfg = compose_train(tmp_path, "experiment=paper/resnet50_imagenet")
    assert cfg.encoder.blurpool is True
    assert compose_train(tmp_path).get("encoder", {}).get("blurpool") in (None, False)


def test_the_corruptions_agree_with_torchvision_where_they_share_a_definition() -> None:
    """torchvision's functionals as the independent reference, where they compute the same
    thing: contrast on one channel (its grayscale mean is the channel's mean) and the blur away
    from the border (torchvision pads by reflection, ImageNet-C's skimage repeats the edge)."""
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for severity in SEVERITIES:
        factor = CORRUPTION_PARAMS["contrast"][severity - 1]
        torch.testing.assert_close(
            corrupt(x, "contrast", severity), TF.adjust_contrast(x, factor), atol=1e-6, rtol=0
        )
        sigma = CORRUPTION_PARAMS["gaussian_blur"][severity - 1]
        radius = max(1, int(4.0 * sigma + 0.5))
        theirs = TF.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])
        ours = corrupt(x, "gaussian_blur", severity)
        inner = (..., slice(radius, -radius), slice(radius, -radius))
        torch.testing.assert_close(ours[inner], theirs[inner], atol=1e-6, rtol=0)
        assert not torch.allclose(ours[..., 0, :], theirs[..., 0, :], atol=1e-4)  # the border
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # In colour they differ on purpose: ImageNet-C blends each channel towards its own mean.
    means = rgb.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(corrupt(rgb, "contrast", 1), (rgb - means) * 0.4 + means)
    assert not torch.allclose(corrupt(rgb, "contrast", 1), TF.adjust_contrast(rgb, 0.4), atol=1e-3)
