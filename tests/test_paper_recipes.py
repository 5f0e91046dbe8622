"""The paper's ImageNet recipes (`experiment=paper/*`): the recipe's values, learning-rate
scaling, the progressive-resolution schedule and callback, and short real runs on a tiny
generated ImageFolder."""

import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import CONFIG_DIR, PAPER_CPU_TINY, compose_train
from hydra.utils import instantiate
from omegaconf.errors import InterpolationResolutionError
from PIL import Image

from mrl.cli.train import train
from mrl.core.errors import ConfigError
from mrl.data import ImageFolderDataModule
from mrl.training.builders import build_model
from mrl.training.callbacks import ProgressiveResolution, resolution_at
from mrl.training.resolvers import scale_lr

ENCODERS = sorted(p.stem for p in (CONFIG_DIR / "experiment" / "paper").glob("resnet*.yaml"))
# Every paper experiment, named `<encoder file>_<method>`: one file per encoder, `method` a switch.
PAPER = [f"{encoder}_{method}" for encoder in ENCODERS for method in ("mrl", "mrl_e", "ff")]
R50 = "experiment=paper/resnet50_imagenet"


def paper(experiment: str) -> list[str]:
    """The overrides of one paper experiment, e.g. `resnet50_imagenet_mrl_e`."""
    encoder, method = re.fullmatch(r"(resnet\d+_imagenet)_(mrl|mrl_e|ff)", experiment).groups()
    return [f"experiment=paper/{encoder}", f"method={method}"]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 random 40x40 PNG images, in train/ and in val/."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_there_are_twelve_paper_experiments():
    assert len(PAPER) == 12


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiment_has_the_recipe(tmp_path: Path, experiment: str):
    cfg = compose_train(tmp_path, *paper(experiment))
    depth, method = re.fullmatch(r"resnet(\d+)_imagenet_(mrl|mrl_e|ff)", experiment).groups()
    assert cfg.name == f"paper_{experiment}"
    assert cfg.encoder._target_ == "mrl.encoders.resnet" and cfg.encoder.depth == int(depth)
    width = 2048 if int(depth) >= 50 else 512
    assert list(cfg.nesting) == [2**i for i in range(3, int(math.log2(width)) + 1)]
    assert list(cfg.head.nesting) == ([width] if method == "ff" else list(cfg.nesting))
    assert cfg.head.tied is (method == "mrl_e")

    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.lr_per_256 == 0.10625
    assert cfg.optimizer.lr == pytest.approx(1.7)  # 0.10625 * (512 x 8) / 256
    assert cfg.model.no_weight_decay_on_norm_and_bias is True
    assert cfg.model.channels_last is True
    assert cfg.loss.label_smoothing == 0.1
    assert cfg.scheduler._target_ == "mrl.training.schedules.warmup_linear"
    assert cfg.scheduler.warmup_epochs == 2

    assert cfg.data._target_ == "mrl.data.ImageFolderDataModule"
    assert cfg.data.batch_size == 512 and cfg.data.image_size == 160
    assert (cfg.data.eval_resize, cfg.data.eval_crop) == (256, 224)
    trainer = cfg.trainer
    assert trainer.max_epochs == 40 and trainer.devices == 8 and trainer.num_nodes == 1
    assert trainer.strategy == "ddp" and trainer.accelerator == "gpu"
    assert trainer.precision == "bf16-mixed" and trainer.accumulate_grad_batches == 1
    progressive = cfg.callbacks.progressive_resolution
    assert progressive._target_ == "mrl.training.callbacks.ProgressiveResolution"
    assert (progressive.start_res, progressive.end_res) == (160, 192)
    assert (progressive.start_epoch, progressive.end_epoch, progressive.step) == (29, 34, 32)


@pytest.mark.parametrize(
    "overrides, lr",
    [
        ([], 1.7),
        (["data.batch_size=256"], 0.85),
        (["trainer.devices=2"], 0.425),  # the MRL README's 2-GPU command
        (["trainer.devices=[0,1,2,3]"], 0.85),
        (["trainer.num_nodes=2"], 3.4),
        (["trainer.accumulate_grad_batches=4"], 6.8),
        (["lr_per_256=0.2"], 3.2),
    ],
)
def test_lr_scales_with_the_global_batch(tmp_path: Path, overrides: list[str], lr: float):
    assert compose_train(tmp_path, R50, *overrides).optimizer.lr == pytest.approx(lr)


def test_lr_scaling_needs_a_device_count(tmp_path: Path):
    cfg = compose_train(tmp_path, R50, "trainer.devices=auto")
    with pytest.raises(InterpolationResolutionError, match="trainer.devices=<n>"):
        _ = cfg.optimizer.lr
    assert scale_lr(0.1, 256, "0,1", 1, 1) == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="data.batch_size"):
        scale_lr(0.1, 0, 1, 1, 1)


def test_default_job_is_untouched(tmp_path: Path):
    cfg = compose_train(tmp_path)
    assert cfg.name == "fmnist" and "progressive_resolution" not in cfg.callbacks
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.2


@pytest.mark.parametrize(
    "epoch, side",
    [(0, 160), (28, 160), (29, 160), (30, 160), (31, 160), (32, 192), (33, 192), (34, 192)]
    + [(39, 192)],
)
def test_resolution_at_matches_ffcv(epoch: int, side: int):
    # Interpolations 166.4, 172.8, 179.2, 185.6 at epochs 30-33 round to the nearest of 32.
    assert resolution_at(epoch, 160, 192, 29, 34, 32) == side


def test_resolution_at_finer_step_and_ties():
    # Epochs 30-33 interpolate to 166.4, 172.8, 179.2, 185.6; nearest multiples of 8:
    sides = [resolution_at(e, 160, 192, 29, 34, step=8) for e in range(28, 36)]
    assert sides == [160, 160, 168, 176, 176, 184, 192, 192]
    assert [resolution_at(e, 32, 64, 0, 2, step=16) for e in range(4)] == [32, 48, 64, 64]
    assert resolution_at(1, 32, 48, 0, 2, step=16) == 32  # 40 / 16 = 2.5: half to even, as np
    with pytest.raises(ConfigError, match="step"):
        resolution_at(0, 32, 64, 0, 2, step=48)
    with pytest.raises(ConfigError, match="end_epoch"):
        ProgressiveResolution(160, 192, 34, 29)


class SideProbe(pl.Callback):
    """Records the side of every training batch, in order, per epoch.

    Placed before `ProgressiveResolution`, it also stalls the first epoch hook of a `fit` so
    that the worker has prefetched its first batches by then: a side set only in that hook
    would come too late for them, and the test would see it.
    """

    def __init__(self) -> None:
        self.sides: dict[int, list[int]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self.sides:
            time.sleep(0.5)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sides.setdefault(trainer.current_epoch, []).append(int(batch[0].shape[-1]))


def _fit(root: Path, tmp_path: Path, max_epochs: int, ckpt_path: str | None = None):
    """Fit a small CNN on the tiny ImageFolder with a persistent DataLoader worker."""
    cfg = compose_train(
        tmp_path, "encoder.widths=[8,8,8,16]", "nesting=[4,8,16]", "model.channels_last=true"
    )
    model = build_model(cfg, num_classes=3, in_channels=3)
    # image_size 40 differs from the schedule's first side, so a missed update shows.
    datamodule = ImageFolderDataModule(
        root=str(root), num_classes=3, batch_size=4, num_workers=1, image_size=40,
        eval_resize=40, eval_crop=32,
    )  # fmt: skip
    probe = SideProbe()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs,
        limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
        callbacks=[probe, ProgressiveResolution(32, 64, 0, 2, step=16)],
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, datamodule, probe


def test_callback_changes_the_resolution_every_epoch(image_root: Path, tmp_path: Path):
    trainer, datamodule, probe = _fit(image_root, tmp_path, max_epochs=3)
    assert probe.sides == {0: [32] * 3, 1: [48] * 3, 2: [64] * 3}
    assert datamodule.train_resolution == 64 and datamodule.train_resolution_schedule is None
    assert float(trainer.callback_metrics["train/resolution"]) == 64


def test_a_resumed_run_follows_the_schedule(image_root: Path, tmp_path: Path):
    ckpt = tmp_path / "after_epoch_1.ckpt"
    _fit(image_root, tmp_path, max_epochs=2)[0].save_checkpoint(ckpt)
    _, datamodule, probe = _fit(image_root, tmp_path, max_epochs=3, ckpt_path=str(ckpt))
    # Batches prefetched before Lightning restores the epoch may be smaller (documented).
    assert list(probe.sides) == [2] and probe.sides[2][-1] == 64
    assert datamodule.train_resolution == 64


def test_train_resolution_reaches_persistent_workers(image_root: Path):
    datamodule = ImageFolderDataModule(
        root=str(image_root), num_classes=3, batch_size=4, num_workers=1, image_size=32
    )
    loader = datamodule.train_dataloader()
    assert loader.persistent_workers
    assert next(iter(loader))[0].shape[-2:] == (32, 32)
    datamodule.train_resolution = 48
    assert next(iter(loader))[0].shape[-2:] == (48, 48)
    with pytest.raises(ConfigError, match="train_resolution"):
        datamodule.train_resolution = 0


def test_callback_refuses_data_without_a_train_resolution(tmp_path: Path):
    synthetic = instantiate(compose_train(tmp_path, "data=synthetic").data)
    with pytest.raises(ConfigError, match="progressive_resolution"):
        ProgressiveResolution(32, 64, 0, 2, 16).setup(
            SimpleNamespace(datamodule=synthetic), None, "fit"
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment, dims", [("resnet50_imagenet_mrl", 9), ("resnet50_imagenet_ff", 1)]
)
def test_fast_dev_run_on_a_tiny_imagefolder(
    image_root: Path, tmp_path: Path, experiment: str, dims: int
):
    cfg = compose_train(
        tmp_path / "run",
        *paper(experiment),
        f"data.root={image_root}",
        "trainer.fast_dev_run=true",
        *PAPER_CPU_TINY,
    )
    assert cfg.model.channels_last is True
    results = train(cfg)

    written = json.loads((tmp_path / "run" / "results.json").read_text())
    nesting = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert written["nesting"] == (nesting if dims == 9 else [2048])
    assert [row["dim"] for row in written["per_dim"]] == written["nesting"]
    assert all(row["top1"] is not None for row in written["per_dim"])
    assert results["config"]["model"]["channels_last"] is True
    assert results["config"]["optimizer"]["lr"] == pytest.approx(0.10625 * 4 / 256)

    model = build_model(cfg, num_classes=3, in_channels=3)
    conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
