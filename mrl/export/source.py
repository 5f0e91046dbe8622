"""What an export reads: a checkpoint of either trainer, rebuilt in eval mode, and the checks of
the requested dims and output folder that run before any export work.

`load_source` accepts a run directory (its `checkpoints/last.ckpt`, the weights its
`results.json` describes) or a checkpoint file of `mrl-train` (an `MRLClassifier`) or of
`mrl-train-text` (the contrastive and classification tasks). Bad input is a `ConfigError` whose
one line names the problem and the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from torch import nn

from mrl.config import call, instantiate, saved_config
from mrl.core.errors import ConfigError, NonFiniteError
from mrl.core.heads import MRLHead
from mrl.data.base import InMemoryDataModule
from mrl.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule
from mrl.data.synthetic import SyntheticDataModule
from mrl.runs.checkpoints import CHECKPOINT_DIR, LAST, check_finite_state, load_checkpoint
from mrl.training.builders import build_model

# The text tasks whose encoder maps token ids to the Matryoshka representation.
TEXT_TASKS = ("contrastive", "classification")


@dataclass
class ImageInput:
    """The input contract of an image encoder: channels, side, and the normalisation the data
    module applies (None: the images are fed as they are, as for the synthetic data)."""

    channels: int
    side: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    resize: str


@dataclass
class Source:
    """A rebuilt checkpoint ready to export: its encoder (eval mode), its nested head if any,
    the dims it was trained or evaluated at, and what its inputs look like."""

    kind: Literal["image", "text"]
    checkpoint: Path
    run_dir: Path
    config: DictConfig
    encoder: nn.Module
    head: MRLHead | None
    nesting: tuple[int, ...]
    width: int
    method: str | None
    global_step: int | None
    image: ImageInput | None = None
    tokenizer: Any = None
    datamodule: Any = None

    @property
    def task(self) -> str:
        """`classification` for images, else the text run's task."""
        return str(self.config.get("task") or "classification")


def checkpoint_path(source: str | Path) -> Path:
    """The checkpoint file of `source`: itself, or a run directory's `checkpoints/last.ckpt`."""
    path = Path(source)
    if path.is_dir():
        last = path / CHECKPOINT_DIR / LAST
        if not last.is_file():
            raise ConfigError(
                f"{path} is a folder without {CHECKPOINT_DIR}/{LAST}: give a run directory of "
                f"mrl-train or mrl-train-text, or the checkpoint file itself"
            )
        return last
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist: give a run directory or a .ckpt file")
    return path


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (where its results files are)."""
    return (
        checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
    )


def image_input(datamodule: Any) -> ImageInput:
    """The input contract of a vision data module's evaluation images."""
    channels = int(datamodule.in_channels)
    if isinstance(datamodule, ImageFolderDataModule):
        resize = (
            f"resize the shorter side to {datamodule.eval_resize} px (bilinear), center-crop "
            f"{datamodule.eval_crop} px, scale to [0, 1]"
        )
        return ImageInput(channels, int(datamodule.eval_crop), IMAGENET_MEAN, IMAGENET_STD, resize)
    side = int(datamodule.image_size)
    resize = f"resize to {side} x {side} px (bilinear, antialiased), scale to [0, 1]"
    if isinstance(datamodule, InMemoryDataModule):
        return ImageInput(channels, side, tuple(datamodule.mean), tuple(datamodule.std), resize)
    if isinstance(datamodule, SyntheticDataModule):
        # Its images are generated already standardised: the model sees them as they are.
        return ImageInput(channels, side, None, None, "none: the synthetic data's own images")
    raise ConfigError(
        f"cannot tell the input normalisation of {type(datamodule).__name__}: export supports "
        f"the data modules of mrl.data"
    )


def _finite(state: dict[str, Any], path: Path) -> None:
    try:
        check_finite_state(state, f"checkpoint {path}")
    except NonFiniteError as err:
        raise ConfigError(f"{err}: the run diverged; export an earlier checkpoint") from err


def _load_part(module: nn.Module, state: dict[str, Any], prefix: str, path: Path) -> None:
    """Load the entries of `state` under `prefix` into `module`, strictly."""
    part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit its own config: {first}") from err


def _image_source(ckpt: dict, cfg: DictConfig, path: Path) -> Source:
    # The weights come from the checkpoint: neither the initial encoder weights nor
    # torch.compile (which the ONNX exporter cannot trace) are wanted here.
    OmegaConf.update(cfg, "model.encoder_init", None, force_add=True)
    OmegaConf.update(cfg, "model.compile", False, force_add=True)
    datamodule = instantiate(cfg.data, "data")
    model = build_model(cfg, datamodule.num_classes, datamodule.in_channels)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit its own config: {first}") from err
    model.eval()
    return Source(
        kind="image",
        checkpoint=path,
        run_dir=run_dir_of(path),
        config=cfg,
        encoder=model.encoder,
        head=model.head,
        nesting=tuple(model.nesting),
        width=int(model.encoder.num_features),
        method=model.head.method,
        global_step=ckpt.get("global_step"),
        image=image_input(datamodule),
        datamodule=datamodule,
    )


def _head_classes(state: dict[str, Any], prefix: str) -> int:
    """The number of classes of a saved `MRLHead` (tied or not)."""
    for name in (f"{prefix}linear.weight", f"{prefix}linears.0.weight"):
        if name in state:
            return int(state[name].shape[0])
    raise ConfigError(f"the checkpoint holds no {prefix.rstrip('.')} weights")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars of transformers (loading and saving weights) inside the block: their
    lines would bury a one-line error about the input and the export's own table."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _text_source(ckpt: dict, cfg: DictConfig, path: Path) -> Source:
    from mrl.text.encoders import load_tokenizer

    task = cfg.get("task")
    if task not in TEXT_TASKS:
        raise ConfigError(
            f"checkpoint {path} is a text run of task={task}: mrl-export takes the "
            f"{' and '.join(TEXT_TASKS)} tasks of mrl-train-text and the runs of mrl-train"
        )
    state = ckpt["state_dict"]
    with quiet_transformers():
        encoder = instantiate(cfg.encoder, "encoder")
    head = None
    if task == "contrastive":
        _load_part(encoder, state, "encoder.", path)
        nesting = tuple(int(m) for m in cfg.nesting)
    else:
        _load_part(encoder, state, "encoder.encoder.", path)
        head = call(
            instantiate(cfg.head, "head"),
            "head",
            in_features=encoder.num_features,
            num_classes=_head_classes(state, "head."),
        )
        _load_part(head, state, "head.", path)
        head.eval()
        nesting = tuple(head.nesting)
    encoder.eval()
    return Source(
        kind="text",
        checkpoint=path,
        run_dir=run_dir_of(path),
        config=cfg,
        encoder=encoder,
        head=head,
        nesting=nesting,
        width=int(encoder.num_features),
        method=head.method if head is not None else None,
        global_step=ckpt.get("global_step"),
        tokenizer=load_tokenizer(cfg.encoder.get("model_name_or_path")),
    )


def load_source(source: str | Path) -> Source:
    """Rebuild the model of a run directory or checkpoint for export (nothing is written)."""
    path = checkpoint_path(source)
    ckpt = load_checkpoint(path, where="checkpoint")
    cfg = saved_config(ckpt, path)
    _finite(ckpt["state_dict"], path)
    if cfg.get("task") is not None:
        return _text_source(ckpt, cfg, path)
    return _image_source(ckpt, cfg, path)


def check_dims(source: Source, dims: list[int] | tuple[int, ...]) -> list[int]:
    """`dims` ascending, each a dim of the run's nesting (so no larger than its
    representation); `ConfigError` naming the first one that is not."""
    given = [int(d) for d in dims]
    nesting = list(source.nesting)
    if not given:
        raise ConfigError(f"no dims given: choose some of the run's nesting {nesting}")
    for dim in given:
        if dim > source.width:
            raise ConfigError(
                f"dim {dim} is larger than the representation ({source.width} dims): choose dims "
                f"of the run's nesting {nesting}"
            )
        if dim not in nesting:
            raise ConfigError(
                f"dim {dim} is not in the run's nesting {nesting}: only its dims were trained "
                f"as embeddings; choose dims from it"
            )
    if len(set(given)) != len(given):
        raise ConfigError(f"dims {given} repeat a dim: give each dim once")
    return sorted(given)


def check_head(source: Source, head: bool) -> None:
    """Refuse `head=True` for a model without a classification head."""
    if head and source.head is None:
        raise ConfigError(
            f"the checkpoint has no classification head (a {source.task} run): drop --head"
        )


def check_out_dir(out_dir: str | Path) -> Path:
    """`out_dir`, which must be absent or an empty folder, inside a writable folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: give a new folder or remove it")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write into {parent}; give a folder you can write")
    return out
