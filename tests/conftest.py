"""Shared test set-up: offline mode for every library, and a composed-config helper."""

import os
import shutil
import subprocess

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import mrl.training.resolvers  # noqa: E402,F401
from mrl.conf import CONFIG_DIR  # noqa: E402

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# A tiny, fast run: synthetic data, a narrow CNN, CSV logging only, no progress bars.
FAST = [
    "data=synthetic",
    "optimizer=adamw",  # the tests' tiny runs keep one optimizer, whatever the default
    "logger=csv",
    "encoder.widths=[8,16,16,32]",
    "nesting=[2,4,8,16,32]",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
]


def compose_train(run_dir: Path | str, *overrides: str) -> DictConfig:
    """The real `conf/train.yaml` composed with `overrides`, writing under `run_dir`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.run_dir={run_dir}", *overrides])


# A paper recipe made tiny for a CPU run: 32 px, 3 classes, no GPU-only settings.
PAPER_CPU_TINY = [
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.strategy=auto",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.image_size=32",
    "data.eval_resize=40",
    "data.eval_crop=32",
    "data.num_classes=3",
    "logger=csv",
    "callbacks.progressive_resolution.start_res=32",
    "callbacks.progressive_resolution.end_res=48",
    "callbacks.progressive_resolution.step=16",
]

requires_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="needs Debian's dataset-fashion-mnist (make test installs it)",
)


def compose_eval(*overrides: str) -> DictConfig:
    """The real `conf/eval.yaml` composed with `overrides`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


# -- small and read-only disks (root only: tmpfs mounts) ------------------------------------


def _mount_tmpfs(where: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                            capture_output=True)  # fmt: skip
    return result.returncode == 0


def _tmpfs(where: Path, options: str, what: str):
    if not _mount_tmpfs(where, options):
        pytest.skip(f"needs root and tmpfs mounts to make a {what}")
    yield where
    subprocess.run(["umount", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 96 KiB file system, to fill up."""
    yield from _tmpfs(tmp_path / "disk", "size=96k", "small disk")


@pytest.fixture
def read_only_disk(tmp_path: Path):
    """A read-only file system."""
    yield from _tmpfs(tmp_path / "ro", "size=1m,ro", "read-only disk")
