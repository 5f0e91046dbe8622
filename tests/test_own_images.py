"""Training on one's own ImageFolder: the run is named after the data choice, and the test set is
the `test/` folder when there is one, else the val folder, said and recorded."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIG_DIR, compose_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from mrl.cli.train import train
from mrl.core.errors import ConfigError
from mrl.data import ImageFolderDataModule
from mrl.runs.format import config_changes

# Images per class in each split; the test split's count tells its loader apart from val's.
PER_CLASS = {"train": 2, "val": 1, "test": 2}
CLASSES = 3

TINY = [
    "data=imagenet",
    "data.num_classes=null",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.image_size=32",
    "data.eval_resize=40",
    "data.eval_crop=32",
    "encoder.widths=[8,8,8,16]",
    "nesting=[4,8,16]",
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.fast_dev_run=true",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
]


def _image_folder(root: Path, splits: tuple[str, ...]) -> Path:
    """`CLASSES` classes of random 40x40 JPEGs in each of `splits`, `PER_CLASS` per class."""
    rng = np.random.default_rng(0)
    for split in splits:
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(PER_CLASS[split]):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def with_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("with_test"), ("train", "val", "test"))


@pytest.fixture(scope="module")
def without_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("without_test"), ("train", "val"))


def _run_dir(*overrides: str) -> Path:
    """The directory `mrl-train` would run in (hydra.run.dir), with `run_id=r`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["run_id=r", *overrides], return_hydra_config=True)
    return Path(cfg.hydra.run.dir)


@pytest.mark.parametrize(
    "overrides, name",
    [
        ([], "fmnist"),
        (["data=imagenet"], "imagenet"),
        (["data=imagenet_gpu_decode"], "imagenet"),
        (["data=cifar10"], "cifar10"),
        (["data=imagenet", "name=my_images"], "my_images"),
        (["experiment=fmnist_mrl_e"], "fmnist_mrl_e"),
        (["experiment=paper/resnet50_imagenet"], "paper_resnet50_imagenet_mrl"),
    ],
)
def test_the_run_is_named_after_the_data_unless_named(overrides: list[str], name: str):
    run_dir = _run_dir(*overrides)
    assert run_dir.parts[-2:] == (name, "r")
    assert compose_train("unused", *overrides).name == name


def test_runs_recorded_before_data_names_still_match_their_config(tmp_path: Path):
    for data in ("fashion_mnist", "imagenet"):
        current = OmegaConf.to_container(compose_train(tmp_path, f"data={data}"), resolve=True)
        recorded = json.loads(json.dumps(current))
        del recorded["data"]["name"]
        recorded["data"].pop("test_dir", None)
        if data == "fashion_mnist":
            assert recorded["name"] == "fmnist"  # what the default job always recorded
        assert config_changes(recorded, current) == []
    renamed = {**recorded, "name": "other"}
    assert config_changes(renamed, current) == [f"name: other -> {current['name']}"]


def _datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root=str(root), batch_size=4, num_workers=0, image_size=32, eval_resize=40,
        eval_crop=32, **kwargs,
    )  # fmt: skip


def test_a_test_folder_is_the_test_set(with_test: Path, caplog: pytest.LogCaptureFixture):
    dm = _datamodule(with_test)
    with caplog.at_level(logging.WARNING, logger="mrl.data.imagefolder"):
        dm.setup()
    assert dm.test_split == "test" and dm.test_dir == str(with_test / "test")
    assert len(dm.test_set) == CLASSES * PER_CLASS["test"]
    assert len(dm.val_set) == CLASSES * PER_CLASS["val"]
    assert not caplog.records


def test_without_a_test_folder_val_is_the_test_set_said_once(
    without_test: Path, caplog: pytest.LogCaptureFixture
):
    dm = _datamodule(without_test)
    with caplog.at_level(logging.WARNING, logger="mrl.data.imagefolder"):
        dm.check()
        dm.setup()
    assert dm.test_split == "val" and dm.test_dir == dm.val_dir
    assert dm.test_set is dm.val_set  # one dataset, not two copies of the same folder
    expected = f"no {without_test / 'test'} folder: the val folder {without_test / 'val'} is"
    assert [r.getMessage() for r in caplog.records] == [f"{expected} also the test set"]


def test_a_given_test_dir_is_used_and_checked(with_test: Path, without_test: Path, tmp_path: Path):
    dm = _datamodule(without_test, test_dir=str(with_test / "test"))
    assert dm.test_split == "test"
    dm.setup("test")
    assert len(dm.test_set) == CLASSES * PER_CLASS["test"]
    (tmp_path / "test" / "other").mkdir(parents=True)
    with pytest.raises(ConfigError, match="class folders differ"):
        _datamodule(without_test, test_dir=str(tmp_path / "test")).check()


@pytest.mark.slow
@pytest.mark.parametrize("has_test", [True, False])
def test_fast_dev_run_on_own_images(
    with_test: Path,
    without_test: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    has_test: bool,
):
    root = with_test if has_test else without_test
    cfg = compose_train(tmp_path / "run", *TINY, f"data.root={root}")
    train(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["experiment"] == "imagenet" and written["config"]["name"] == "imagenet"
    assert written["test_split"] == ("test" if has_test else "val")
    assert all(row["top1"] is not None for row in written["per_dim"])
    printed = capsys.readouterr().out
    assert "imagenet [mrl]: test accuracy per dim" in printed
    assert ("the val folder" in printed and "is also the test set" in printed) != has_test
