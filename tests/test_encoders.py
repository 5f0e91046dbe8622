"""Tests for mrl.encoders: output shapes, stems, input channels, validation, configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchvision import models

from mrl.conf import CONFIG_DIR
from mrl.encoders import SmallCNN, resnet, vit

CONF_DIR = CONFIG_DIR / "encoder"


def _spatial_after(module: nn.Module, layer: nn.Module, x: Tensor) -> tuple[int, int]:
    """Run ``module`` on ``x`` and return the (H, W) of ``layer``'s output."""
    seen: list[torch.Size] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    try:
        module(x)
    finally:
        handle.remove()
    return tuple(seen[0][-2:])


# --- SmallCNN -------------------------------------------------------------------------


def test_small_cnn_output_shape() -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1)
    out = model(torch.randn(4, 1, 28, 28))
    assert model.num_features == 256
    assert out.shape == (4, 256)


def test_small_cnn_custom_widths_and_channels() -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, widths=[8, 24])
    out = model(torch.randn(2, 3, 32, 32))
    assert model.num_features == 24
    assert out.shape == (2, 24)


def test_small_cnn_size_matches_calibration() -> None:
    n_params = sum(p.numel() for p in SmallCNN(in_channels=1).parameters())
    assert 150_000 < n_params < 200_000


@pytest.mark.parametrize(
    ("widths", "bad"),
    [
        ([], r"non-empty, got \[\]"),
        ([16, 0, 32], r"widths\[1\].*got 0"),
        ([16, -4], "got -4"),
        ([16, 2.5], "got 2.5"),
        ([True], "got True"),
    ],
)
def test_small_cnn_rejects_bad_widths(widths: list, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        SmallCNN(in_channels=1, widths=widths)


# --- ResNet ---------------------------------------------------------------------------


def test_resnet18_small_input_stem() -> None:
    torch.manual_seed(0)
    model = resnet(18, in_channels=3, small_input=True)
    conv1 = model.backbone.conv1
    assert conv1.kernel_size == (3, 3)
    assert conv1.stride == (1, 1)
    assert conv1.padding == (1, 1)
    assert isinstance(model.backbone.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())

    x = torch.randn(2, 3, 32, 32)
    assert _spatial_after(model, model.backbone.layer1, x) == (32, 32)
    assert _spatial_after(model, model.backbone.layer4, x) == (4, 4)
    out = model(x)
    assert model.num_features == 512
    assert out.shape == (2, 512)


def test_resnet18_default_stem_downsamples() -> None:
    torch.manual_seed(0)
    model = resnet(18)
    assert model.backbone.conv1.stride == (2, 2)
    assert isinstance(model.backbone.maxpool, nn.MaxPool2d)
    x = torch.randn(2, 3, 64, 64)
    assert _spatial_after(model, model.backbone.layer1, x) == (16, 16)
    assert model(x).shape == (2, 512)


@pytest.mark.parametrize(
    ("small_input", "kernel"),
    [(True, 3), (False, 7)],
)
def test_resnet_in_channels_changes_conv1(small_input: bool, kernel: int) -> None:
    torch.manual_seed(0)
    model = resnet(18, in_channels=1, small_input=small_input)
    assert model.backbone.conv1.weight.shape == (64, 1, kernel, kernel)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_resnet50_output_size() -> None:
    torch.manual_seed(0)
    model = resnet(50, in_channels=3, small_input=True)
    assert model.num_features == 2048
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 2048)


def test_resnet_zero_init_residual() -> None:
    model = resnet(18, zero_init_residual=True)
    assert torch.all(model.backbone.layer1[0].bn2.weight == 0)


@pytest.mark.parametrize("depth", [19, 152, 0])
def test_resnet_rejects_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match=rf"{depth}.*18, 34, 50, 101"):
        resnet(depth)


def test_resnet_loads_local_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(reference.state_dict(), path)

    torch.manual_seed(1)
    model = resnet(18, weights_path=str(path))
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(
        model.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var
    )

    # A state_dict saved from the encoder itself round-trips too.
    own = tmp_path / "own.pt"
    torch.save(model.state_dict(), own)
    again = resnet(18, weights_path=str(own))
    torch.testing.assert_close(again.backbone.conv1.weight, reference.conv1.weight)


def test_resnet_weights_mismatch_raises(tmp_path: Path) -> None:
    path = tmp_path / "r18.pt"
    torch.save(models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="r18.pt"):
        resnet(18, small_input=True, weights_path=str(path))


# --- ViT ------------------------------------------------------------------------------


def _tiny_vit(**kwargs) -> nn.Module:
    args = dict(
        variant="custom",
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        mlp_dim=128,
        image_size=28,
        in_channels=1,
    )
    args.update(kwargs)
    return vit(**args)


def test_vit_custom_tiny_one_channel() -> None:
    torch.manual_seed(0)
    model = _tiny_vit()
    assert model.num_features == 64
    assert model.model.conv_proj.weight.shape == (64, 1, 4, 4)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 64)


def test_vit_custom_tiny_rgb_32px() -> None:
    torch.manual_seed(0)
    model = _tiny_vit(in_channels=3, image_size=32)
    assert model.model.conv_proj.weight.shape == (64, 3, 4, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_vit_custom_rejects_indivisible_image_size() -> None:
    with pytest.raises(ValueError, match=r"image_size=30.*patch_size=4"):
        _tiny_vit(image_size=30)


def test_vit_named_rejects_indivisible_image_size() -> None:
    with pytest.raises(ValueError, match=r"image_size=100.*patch_size=16"):
        vit("vit_b_16", image_size=100)


def test_vit_custom_requires_architecture() -> None:
    with pytest.raises(ValueError, match="mlp_dim"):
        vit("custom", patch_size=4, num_layers=2, num_heads=2, hidden_dim=64, image_size=28)


def test_vit_rejects_unknown_variant() -> None:
    with pytest.raises(ValueError, match="vit_s_8"):
        vit("vit_s_8")


def test_vit_b_16() -> None:
    torch.manual_seed(0)
    model = vit("vit_b_16", in_channels=3, image_size=224)
    assert model.num_features == 768
    assert isinstance(model.model.heads, nn.Identity)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 768)


# --- shared ---------------------------------------------------------------------------

GRAD_CASES: dict[str, Callable[[], tuple[nn.Module, nn.Conv2d, Tensor]]] = {
    "small_cnn": lambda: (m := SmallCNN(in_channels=1), m.features[0], torch.randn(4, 1, 28, 28)),
    "resnet18": lambda: (
        m := resnet(18, in_channels=1, small_input=True),
        m.backbone.conv1,
        torch.randn(2, 1, 32, 32),
    ),
    "vit_tiny": lambda: (m := _tiny_vit(), m.model.conv_proj, torch.randn(2, 1, 28, 28)),
}


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_reach_first_conv(name: str) -> None:
    torch.manual_seed(0)
    model, first_conv, x = GRAD_CASES[name]()
    model(x).pow(2).sum().backward()
    grad = first_conv.weight.grad
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("config", "in_channels", "image_size", "num_features"),
    [
        ("small_cnn", 1, 28, 256),
        ("resnet18", 3, 32, 512),
        ("resnet34", 1, 28, 512),
        ("resnet50", 3, 32, 2048),
        ("resnet101", 3, 32, 2048),
        ("vit_b_16", 3, 224, 768),
        ("vit_tiny", 1, 28, 64),
    ],
)
def test_config_instantiates(
    config: str, in_channels: int, image_size: int, num_features: int
) -> None:
    cfg = OmegaConf.create(
        {
            "data": {"image_size": image_size},
            "encoder": OmegaConf.load(CONF_DIR / f"{config}.yaml"),
        }
    )
    build = instantiate(cfg.encoder)
    model = build(in_channels=in_channels)
    assert model.num_features == num_features
