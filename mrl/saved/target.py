"""A saved model with the data it is evaluated on: the target of `mrl-eval`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mrl.core.errors import ConfigError
from mrl.eval.inputs import EvalTarget
from mrl.saved.model import SavedModel, load_saved
from mrl.training.builders import checked_datamodule


def saved_for_eval(cfg: DictConfig) -> SavedModel:
    """The checkpoint of `cfg.ckpt_path`: a run of `mrl-train` or `mrl-train-text`, or the
    authors' ResNet-50, as `cfg.checkpoint_format` says."""
    formats = {"auto": ("mrl", "official"), "mrl": ("mrl",), "official": ("official",)}
    nesting = list(cfg.official_nesting) if cfg.official_nesting else None
    return load_saved(
        cfg.ckpt_path,
        formats=formats[cfg.checkpoint_format],
        nesting=nesting,
        where="ckpt_path",
        purpose="evaluate",
    )


def eval_target(cfg: DictConfig, saved: SavedModel) -> EvalTarget:
    """An image checkpoint (`saved_for_eval`) and its data module: the run's own, or
    `cfg.data`."""
    if saved.kind != "image":
        raise ConfigError(
            f"ckpt_path={saved.checkpoint} is a text run: mrl-eval evaluates it on its "
            f"evaluation sets (text_sets=...), not on image data"
        )
    path = saved.checkpoint
    if saved.format == "official":
        if not cfg.get("data"):
            raise ConfigError(
                "an official checkpoint carries no data config: pass data=imagenet "
                "(and data.root=<ImageNet dir>)"
            )
        data_cfg, train_nesting = cfg.data, None
        default_dir = path.parent / f"{path.stem}-eval"
    else:
        data_cfg = cfg.data if cfg.get("data") else saved.config.data
        train_nesting = list(saved.config.nesting)
        default_dir = saved.run_dir
    datamodule = checked_datamodule(data_cfg)
    head = saved.head
    if datamodule.num_classes != head.num_classes:
        raise ConfigError(
            f"the data has {datamodule.num_classes} classes but the heads predict "
            f"{head.num_classes}: pass the data config the model was trained on"
        )
    return EvalTarget(
        encoder=saved.encoder,
        head=head,
        datamodule=datamodule,
        data_config=OmegaConf.to_container(data_cfg, resolve=True),
        method=head.method,
        out_dir=Path(cfg.out_dir) if cfg.out_dir else default_dir,
        checkpoint=path,
        train_nesting=train_nesting,
    )
