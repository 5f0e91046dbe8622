"""`load_saved`: a run directory or checkpoint file, read once, rebuilt in eval mode on the CPU.

Three kinds of file: a checkpoint of `mrl-train` (an `MRLClassifier`), one of `mrl-train-text`
(its contrastive and classification tasks), and the authors' released ResNet-50 weights (a bare
state dict, converted by `mrl.saved.official`). Bad input is a `ConfigError` whose one line names
the problem and the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from torch import nn

from mrl.conf import CONFIG_DIR
from mrl.config import call, instantiate, saved_config
from mrl.core.errors import ConfigError, NonFiniteError
from mrl.core.heads import MRLHead
from mrl.runs.checkpoints import (
    check_finite_state,
    checkpoint_path,
    load_checkpoint,
    run_dir_of,
)
from mrl.saved.inputs import ImageInput, image_input
from mrl.training.builders import build_model

# The text tasks whose encoder maps token ids to the Matryoshka representation.
TEXT_TASKS = ("contrastive", "classification")
# The evaluation transform of the authors' checkpoints: ImageNet's.
OFFICIAL_DATA = CONFIG_DIR / "data" / "imagenet.yaml"
Format = Literal["mrl", "official"]


@dataclass
class SavedModel:
    """A rebuilt checkpoint: its encoder (eval mode), its nested head if any, the dims it was
    trained at, and what its inputs look like. `format` is `mrl` (either trainer) or
    `official` (the authors' ResNet-50); `config` is the run's config (for `official`, the
    conversion's facts under `official`)."""

    kind: Literal["image", "text"]
    format: Format
    checkpoint: Path
    config: DictConfig
    encoder: nn.Module
    head: MRLHead | None
    nesting: tuple[int, ...]
    method: str | None
    global_step: int | None
    image: ImageInput | None = None
    tokenizer: Any = None
    datamodule: Any = None
    # The whole Lightning module of an `mrl-train` run (encoder, head, loss), for its state.
    module: nn.Module | None = None

    @property
    def run_dir(self) -> Path:
        """The run directory the checkpoint belongs to (where its results files are)."""
        return run_dir_of(self.checkpoint)

    @property
    def width(self) -> int:
        """The representation's size: the encoder's feature count."""
        return int(self.encoder.num_features)

    @property
    def task(self) -> str:
        """`classification` for images, else the text run's task."""
        return str(self.config.get("task") or "classification")


def load_saved(
    source: str | Path,
    formats: Sequence[Format] = ("mrl", "official"),
    nesting: Sequence[int] | None = None,
    method: str | None = None,
    where: str = "checkpoint",
    purpose: str = "use",
) -> SavedModel:
    """The model of a run directory or checkpoint file among `formats`, read once.

    `nesting` and `method` apply to the authors' checkpoints only (see
    `mrl.saved.official.convert_official_state_dict`). `where` names the input in errors (the
    option it came from) and `purpose` the verb of their fix ("export an earlier checkpoint").
    """
    path = checkpoint_path(source, where)
    raw = load_checkpoint(path, where=where, lightning=False)
    ours = isinstance(raw, dict) and "hyper_parameters" in raw
    if "mrl" in formats and (ours or "official" not in formats):
        if not isinstance(raw, dict) or "state_dict" not in raw:
            raise ConfigError(f"{where}={path} is not a Lightning checkpoint (no state_dict)")
        cfg = saved_config(raw, path)
        try:
            check_finite_state(raw["state_dict"], f"checkpoint {path}")
        except NonFiniteError as err:
            raise ConfigError(f"{err}: the run diverged; {purpose} an earlier checkpoint") from err
        if cfg.get("task") is not None:
            return _text(raw, cfg, path, purpose)
        return _image(raw, cfg, path)
    if "official" not in formats:
        raise ConfigError(f"{where}={path} is not one of the formats {list(formats)}")
    return _official(raw, path, nesting, method, guessed="mrl" in formats)


def check_dims(saved: SavedModel, dims: Sequence[int]) -> list[int]:
    """`dims` ascending, each a dim of the run's nesting (so no larger than its
    representation); `ConfigError` naming the first one that is not."""
    given = [int(d) for d in dims]
    nesting = list(saved.nesting)
    if not given:
        raise ConfigError(f"no dims given: choose some of the run's nesting {nesting}")
    for dim in given:
        if dim > saved.width:
            raise ConfigError(
                f"dim {dim} is larger than the representation ({saved.width} dims): choose dims "
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


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars of transformers (loading and saving weights) inside the block: their
    lines would bury a one-line error about the input and a command's own table."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_part(module: nn.Module, state: dict[str, Any], prefix: str, path: Path) -> None:
    """Load the entries of `state` under `prefix` into `module`, strictly."""
    part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    _load_strict(module, part, path)


def _load_strict(module: nn.Module, state: dict[str, Any], path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit its own config: {first}") from err


def _image(ckpt: dict, cfg: DictConfig, path: Path) -> SavedModel:
    # The weights come from the checkpoint: neither the initial encoder weights nor
    # torch.compile (which the ONNX exporter cannot trace) are wanted here.
    OmegaConf.update(cfg, "model.encoder_init", None, force_add=True)
    OmegaConf.update(cfg, "model.compile", False, force_add=True)
    datamodule = instantiate(cfg.data, "data")
    model = build_model(cfg, datamodule.num_classes, datamodule.in_channels)
    _load_strict(model, ckpt["state_dict"], path)
    model.eval()
    return SavedModel(
        kind="image",
        format="mrl",
        checkpoint=path,
        config=cfg,
        encoder=model.encoder,
        head=model.head,
        nesting=tuple(model.nesting),
        method=model.head.method,
        global_step=ckpt.get("global_step"),
        image=image_input(datamodule),
        datamodule=datamodule,
        module=model,
    )


def _head_classes(state: dict[str, Any], prefix: str) -> int:
    """The number of classes of a saved `MRLHead` (tied or not)."""
    for name in (f"{prefix}linear.weight", f"{prefix}linears.0.weight"):
        if name in state:
            return int(state[name].shape[0])
    raise ConfigError(f"the checkpoint holds no {prefix.rstrip('.')} weights")


def _text(ckpt: dict, cfg: DictConfig, path: Path, purpose: str) -> SavedModel:
    from mrl.text.encoders import load_tokenizer

    task = cfg.get("task")
    if task not in TEXT_TASKS:
        raise ConfigError(
            f"checkpoint {path} is a text run of task={task}: only the "
            f"{' and '.join(TEXT_TASKS)} tasks of mrl-train-text and the runs of mrl-train "
            f"have a Matryoshka encoder to {purpose}"
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
    return SavedModel(
        kind="text",
        format="mrl",
        checkpoint=path,
        config=cfg,
        encoder=encoder,
        head=head,
        nesting=nesting,
        method=head.method if head is not None else None,
        global_step=ckpt.get("global_step"),
        tokenizer=load_tokenizer(cfg.encoder.get("model_name_or_path")),
    )


def _official(
    state: Any, path: Path, nesting: Sequence[int] | None, method: str | None, guessed: bool
) -> SavedModel:
    """One of the authors' ResNet-50 checkpoints, with the ImageNet eval transform of
    `conf/data/imagenet.yaml`."""
    from mrl.data.imagefolder import ImageFolderDataModule
    from mrl.saved.official import load_official_checkpoint

    try:
        encoder, head, info = load_official_checkpoint(state, nesting=nesting, method=method)
    except ConfigError as err:
        if not guessed:
            raise
        raise ConfigError(
            f"{path} is neither a checkpoint of mrl-train or mrl-train-text nor one of the "
            f"authors' ResNet-50 checkpoints ({err}): give one of those"
        ) from err
    data = OmegaConf.load(OFFICIAL_DATA)
    datamodule = ImageFolderDataModule(
        num_classes=info["num_classes"],
        image_size=int(data.image_size),
        eval_resize=int(data.eval_resize),
        eval_crop=int(data.eval_crop),
    )
    return SavedModel(
        kind="image",
        format="official",
        checkpoint=path,
        config=OmegaConf.create({"official": info}),
        encoder=encoder,
        head=head,
        nesting=tuple(info["nesting"]),
        method=info["method"],
        global_step=None,
        image=image_input(datamodule),
        datamodule=datamodule,
    )
