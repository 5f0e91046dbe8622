"""What `mrl-eval` evaluates: the target (encoder, heads, data, output folder), its database,
query and robustness splits, and their embeddings, encoded once and reused while current."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset, Subset

from mrl.core.errors import ConfigError
from mrl.core.heads import MRLHead
from mrl.eval.embeddings import checkpoint_fingerprint, encode_to_disk, read_split, split_is_current

log = logging.getLogger("mrl.eval")


@dataclass
class EvalTarget:
    """What is evaluated: the encoder and heads, the data, and where results go."""

    encoder: nn.Module
    head: MRLHead
    datamodule: Any
    data_config: dict
    method: str
    out_dir: Path
    checkpoint: Path
    train_nesting: list[int] | None = None


def init_distributed_from_env() -> bool:
    """Join the process group when started by `torchrun` (WORLD_SIZE > 1); True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return True


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present (this process's GPU under torchrun), else the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def check_embeddings(name: str, features: np.ndarray) -> None:
    """Refuse embeddings that are non-finite or collapsed (every row the same)."""
    sample = np.asarray(features[: min(len(features), 4096)], dtype=np.float32)
    if not np.isfinite(sample).all():
        raise ConfigError(f"the {name} embeddings hold NaN or infinite values: the checkpoint "
                          f"is broken; evaluate an earlier one")  # fmt: skip
    if len(sample) > 1 and float(np.abs(sample - sample[0]).max()) == 0.0:
        raise ConfigError(f"the {name} embeddings are all identical (a collapsed model): its "
                          f"metrics would be chance; evaluate an earlier checkpoint")  # fmt: skip


def encode_split(
    target: EvalTarget, cfg: DictConfig, name: str, dataset: Dataset, extra: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split, encoded once and reused while they are current."""
    split_dir = target.out_dir / "embeddings" / name
    meta = {
        "checkpoint": checkpoint_fingerprint(target.checkpoint),
        "split": name,
        "data": target.data_config,
        "dtype": cfg.dtype,
        **(extra or {}),
    }
    if cfg.reuse_embeddings and split_is_current(split_dir, meta):
        log.info("reusing %s", split_dir)
    else:
        encode_to_disk(
            target.encoder, dataset, split_dir, meta,
            batch_size=target.datamodule.eval_batch_size,
            num_workers=target.datamodule.num_workers, dtype=cfg.dtype,
            device=resolve_device(cfg.device), desc=f"encoding {name}",
        )  # fmt: skip
    return read_split(split_dir)


def database_split(dm, database: DictConfig | dict) -> tuple[Dataset, str]:
    """The retrieval database and the name its embeddings are stored under: the training split,
    or it and `database.augmented_copies` seeded augmented copies (`AugmentedCopies`)."""
    from mrl.data.copies import AugmentedCopies

    base = dm.database_set()
    copies = int(database.get("augmented_copies", 0) or 0)
    if copies == 0:
        return base, "database"
    seed, shift = int(database.get("seed", 0)), int(database.get("shift", 2))
    mean = torch.tensor(getattr(dm, "mean", (0.0,)), dtype=torch.float32)
    std = torch.tensor(getattr(dm, "std", (1.0,)), dtype=torch.float32)
    dataset = AugmentedCopies(
        base, copies, seed=seed, shift=shift, hflip=getattr(dm, "hflip", False),
        fill=(0.0 - mean) / std,
    )  # fmt: skip
    return dataset, f"database-copies{copies}-seed{seed}-shift{shift}"


def robustness_sets(target: EvalTarget, cfg: DictConfig) -> dict[str, tuple[Dataset, Any]]:
    """The extra test sets: built-in corruptions (when the data supports them) and folders."""
    sets: dict[str, tuple[Dataset, Any]] = {}
    if cfg.robustness.corruptions:
        from mrl.eval.corruptions import corrupted_test_sets

        try:
            corrupted = corrupted_test_sets(
                target.datamodule, list(cfg.robustness.corruptions),
                list(cfg.robustness.severities), cfg.seed,
            )  # fmt: skip
        except ConfigError as err:  # e.g. a data set that is not held in memory
            log.warning("skipping the built-in corruptions: %s", err)
            corrupted = {}
        sets.update({name: (ds, None) for name, ds in corrupted.items()})
    for name, spec in (cfg.robustness.image_folders or {}).items():
        from mrl.eval.robust_sets import ImageFolderTestSet, check_subset, class_subset_from_file

        subset = class_subset_from_file(spec.class_subset) if spec.get("class_subset") else None
        if subset is not None:
            check_subset(subset, target.head.num_classes)
        sets[name] = (ImageFolderTestSet(spec.root, class_subset=subset), subset)
    max_queries = cfg.robustness.get("max_queries")
    return {name: (rows_sample(ds, max_queries, cfg.seed), sub) for name, (ds, sub) in sets.items()}


def rows_sample(dataset: Dataset, max_rows: int | None, seed: int) -> Dataset:
    """`dataset`, or a seeded sample of `max_rows` of its rows (in their order) when it has
    more; every set of the same length gets the same rows."""
    if max_rows is None or len(dataset) <= int(max_rows):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), int(max_rows), replace=False))
    return Subset(dataset, keep.tolist())
