"""`mrl-eval`: encode a checkpoint's database and query splits once, then evaluate every dim.

Outputs, under the run directory (or `out_dir=`):
- `embeddings/<split>/{features,labels}.npy`: `database` (training split, eval transforms),
  `query` (test split) and `query-<corruption>` sets; every dim is a slice `[:, :m]`;
- `eval/metrics.csv`: one row per (dataset, split, method, dim, metric);
- `eval/adaptive_classification.csv`, `eval/adaptive_retrieval.csv`: the adaptive studies (a
  study switched off or not applicable removes its table left by an earlier run);
- `eval/summary.json`: the headline numbers, also printed.

`map@k` in these tables is the paper's AP@k (divided by k); `map_standard@k` divides by
min(k, relevant items) as IR libraries do (see `mrl.eval.metrics`).
"""

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

import mrl.training.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.commands import hydra_cli, run_command
from mrl.conf import CONFIG_DIR
from mrl.config import saved_config
from mrl.core.errors import ConfigError, NonFiniteError
from mrl.core.heads import MRLHead
from mrl.core.nesting import halving_nesting
from mrl.eval.embeddings import checkpoint_fingerprint, encode_to_disk, read_split, split_is_current
from mrl.eval.index_cache import embeddings_fingerprint
from mrl.runs.checkpoints import check_finite_state, load_checkpoint
from mrl.runs.directory import check_writable
from mrl.runs.files import atomic_write_json, write_csv
from mrl.runs.format import CLEAN_SPLIT, EVAL_METRIC_COLUMNS, metric_label
from mrl.training.builders import checked_datamodule, model_from_saved
from mrl.training.checks import check_eval_against, check_eval_config

log = logging.getLogger("mrl.eval")

METRIC_COLUMNS = EVAL_METRIC_COLUMNS
# The printed per-dim table, most informative first.
SUMMARY_METRICS = [
    "head_top1", "probe_top1", "1nn", "map_standard@10", "map@10", "precision@10", "recall@10",
]  # fmt: skip
# recall@k can reach at most min(k, R) / R (R: same-class database items); below this ceiling the
# column would read as ~0 at every dim, so it is printed after the table beside its ceiling.
RECALL_CEILING_IN_TABLE = 0.5
# The tables of the optional studies, by config section: a study that does not run removes its
# table from an earlier run, so that eval/ holds the current run's results only.
SECTION_TABLES = {
    "adaptive_classification": "adaptive_classification.csv",
    "adaptive_retrieval": "adaptive_retrieval.csv",
}


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


def compose_eval_config(overrides: list[str]) -> DictConfig:
    """`conf/eval.yaml` with `overrides`, from inside another Hydra app or from plain Python."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. mrl-train's app, same config dir
        return compose("eval", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides)


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


def load_target(cfg: DictConfig) -> EvalTarget:
    """Load the checkpoint (ours or the official ResNet-50 layout) and its data module."""
    path = Path(cfg.ckpt_path)
    raw = load_checkpoint(path, lightning=False)  # the official release is a bare state dict
    fmt = cfg.checkpoint_format
    if fmt == "auto":
        fmt = "mrl" if isinstance(raw, dict) and "hyper_parameters" in raw else "official"
    if fmt == "mrl":
        if "state_dict" not in raw:
            raise ConfigError(f"ckpt_path={path} holds no state_dict: was it written by mrl-train?")
        try:
            check_finite_state(raw["state_dict"], f"ckpt_path={path}")
        except NonFiniteError as err:
            raise ConfigError(f"{err}: the run diverged; evaluate an earlier checkpoint") from err
        train_cfg = saved_config(raw, path)
        data_cfg = cfg.data if cfg.get("data") else train_cfg.data
        train_nesting = list(train_cfg.nesting)
        model = model_from_saved(raw, path)
        encoder, head = model.encoder, model.head
        default_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    elif fmt == "official":
        from mrl.eval.official import load_official_checkpoint

        if not cfg.get("data"):
            raise ConfigError(
                "an official checkpoint carries no data config: pass data=imagenet "
                "(and data.root=<ImageNet dir>)"
            )
        data_cfg = cfg.data
        nesting = list(cfg.official_nesting) if cfg.official_nesting else None
        encoder, head, _ = load_official_checkpoint(raw, nesting=nesting)
        train_nesting = None
        default_dir = path.parent / f"{path.stem}-eval"
    else:
        raise ConfigError(f"checkpoint_format={fmt} is not one of auto, mrl, official")
    datamodule = checked_datamodule(data_cfg)
    if datamodule.num_classes != head.num_classes:
        raise ConfigError(
            f"the data has {datamodule.num_classes} classes but the heads predict "
            f"{head.num_classes}: pass the data config the model was trained on"
        )
    return EvalTarget(
        encoder=encoder,
        head=head,
        datamodule=datamodule,
        data_config=OmegaConf.to_container(data_cfg, resolve=True),
        method=head.method,
        out_dir=Path(cfg.out_dir) if cfg.out_dir else default_dir,
        checkpoint=path,
        train_nesting=train_nesting,
    )


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


@torch.no_grad()
def head_probabilities(head: MRLHead, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax outputs `(K, N, C)` of the nested heads on stored features (no re-encoding)."""
    head = head.cpu().eval()
    out = [
        torch.softmax(
            head(torch.from_numpy(np.array(features[i : i + batch_size], np.float32))), -1
        )
        for i in range(0, len(features), batch_size)
    ]
    return torch.cat(out, dim=1).numpy()


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k most probable classes (`probs` is N x C)."""
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def head_rows(head: MRLHead, probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """`head_top1` / `head_top5` rows for every trained head."""
    rows = []
    for m, p in zip(head.nesting, probs, strict=True):
        rows.append({"dim": m, "metric": "head_top1", "value": topk_accuracy(p, labels, 1)})
        if head.num_classes >= 5:
            rows.append({"dim": m, "metric": "head_top5", "value": topk_accuracy(p, labels, 5)})
    return rows


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run every enabled evaluation and write the tables; returns the summary dict."""
    from mrl.eval.cascade import adaptive_classification
    from mrl.eval.funnel import evaluate_adaptive_retrieval
    from mrl.eval.metrics import recall_ceiling
    from mrl.eval.probe import probe_per_dim
    from mrl.eval.retrieval import evaluate_retrieval

    started = time.time()
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("no checkpoint given: pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    check_eval_config(cfg)
    target = load_target(cfg)
    check_writable(target.out_dir, "choose another with out_dir=<dir>")
    dm, head = target.datamodule, target.head
    features_dim = int(target.encoder.num_features)
    database_set, database_name = database_split(dm, cfg.get("database") or {})
    dims = check_eval_against(cfg, features_dim, head.nesting, len(database_set))
    dataset = type(dm).__name__.removesuffix("DataModule")

    # Encode everything first: under torchrun every process takes part in this step only.
    distributed = init_distributed_from_env()
    db, db_y = encode_split(target, cfg, database_name, database_set)
    check_embeddings("database", db)
    dm.setup("test")
    query, query_y = encode_split(target, cfg, CLEAN_SPLIT, dm.test_set)
    robust = {
        name: (*encode_split(target, cfg, f"{CLEAN_SPLIT}-{name}", ds, {"set": name}), subset)
        for name, (ds, subset) in robustness_sets(target, cfg).items()
    }
    if distributed and torch.distributed.get_rank() != 0:
        return {}
    log.info("database %s, query %s", db.shape, query.shape)

    rows: list[dict] = []

    def add(split: str, new_rows: list[dict], method: str | None = None) -> None:
        base = {"dataset": dataset, "split": split, "method": method or target.method}
        rows.extend({**base, **r} for r in new_rows)

    summary: dict[str, Any] = {
        "checkpoint": str(target.checkpoint),
        "method": target.method,
        "nesting": list(head.nesting),
        "dims": list(dims),
        "database_size": int(len(db)),
        "query_size": int(len(query)),
    }
    probs = head_probabilities(head, query, cfg.heads_batch_size) if cfg.heads else None
    if probs is not None:
        add(CLEAN_SPLIT, head_rows(head, probs, query_y))
    if cfg.probe.enabled:
        add(
            CLEAN_SPLIT,
            probe_per_dim(
                db, db_y, query, query_y, dims, dm.num_classes,
                max_iter=cfg.probe.max_iter, weight_decay=cfg.probe.weight_decay,
                max_samples=cfg.probe.max_samples, seed=cfg.seed,
            ),
        )  # fmt: skip
    if cfg.retrieval.enabled:
        add(
            CLEAN_SPLIT,
            evaluate_retrieval(
                db, db_y, query, query_y, dims, ks=tuple(cfg.retrieval.ks),
                knn_ks=tuple(cfg.retrieval.knn_ks), backend=cfg.retrieval.backend,
                batch_size=cfg.retrieval.batch_size,
                tie_aware_max_dim=cfg.retrieval.get("tie_aware_max_dim", 0),
                **index_options(cfg, cfg.retrieval.backend),
            ),
        )  # fmt: skip
        summary["recall_ceiling"] = {
            f"recall@{k}": recall_ceiling(query_y, db_y, k) for k in cfg.retrieval.ks
        }

    if cfg.baselines and is_full_size_single_head(head, features_dim):
        baseline_dims = (
            cfg.baseline_dims
            or target.train_nesting
            or halving_nesting(features_dim, cfg.baseline_smallest_dim)
        )
        add_baselines(cfg, target, db, db_y, query, query_y, list(baseline_dims), add)

    eval_dir = target.out_dir / "eval"
    written: set[str] = set()
    if cfg.adaptive_classification.enabled and probs is not None and len(head.nesting) > 1:
        study = adaptive_classification(
            probs, query_y, head.nesting, cal_fraction=cfg.adaptive_classification.cal_fraction,
            seed=cfg.seed, tolerance=cfg.adaptive_classification.tolerance,
        )  # fmt: skip
        write_csv(eval_dir / SECTION_TABLES["adaptive_classification"], study["sweep"])
        written.add("adaptive_classification")
        summary["adaptive_classification"] = {k: v for k, v in study.items() if k != "sweep"}
    if cfg.adaptive_retrieval.enabled and len(dims) > 1:
        funnel = None
        if cfg.adaptive_retrieval.funnel_dims:
            funnel = (
                list(cfg.adaptive_retrieval.funnel_dims),
                list(cfg.adaptive_retrieval.funnel_shortlists),
            )
        first_stage = cfg.adaptive_retrieval.get("first_stage", "exact")
        db_dir = target.out_dir / "embeddings" / database_name
        study_rows = evaluate_adaptive_retrieval(
            db, db_y, query, query_y, dims, shortlist_k=cfg.adaptive_retrieval.shortlist_k,
            funnel=funnel, backend=cfg.retrieval.backend, first_stage=first_stage,
            index_cache_dir=db_dir / "indexes", fingerprint=embeddings_fingerprint(db_dir),
            **index_options(cfg, first_stage),
        )  # fmt: skip
        write_csv(eval_dir / SECTION_TABLES["adaptive_retrieval"], study_rows)
        written.add("adaptive_retrieval")
        summary["adaptive_retrieval"] = study_rows

    for name, (r_features, r_labels, subset) in robust.items():
        split = f"{CLEAN_SPLIT}-{name}"
        if cfg.heads:
            r_probs = head_probabilities(head, r_features, cfg.heads_batch_size)
            if subset is not None:
                r_probs, r_labels_heads = restrict_to_subset(r_probs, r_labels, subset)
            else:
                r_labels_heads = r_labels
            add(split, head_rows(head, r_probs, r_labels_heads))
        if cfg.robustness.retrieval:
            add(
                split,
                evaluate_retrieval(
                    db, db_y, r_features, r_labels, dims, ks=tuple(cfg.robustness.ks),
                    knn_ks=tuple(cfg.robustness.knn_ks),
                    backend=cfg.retrieval.backend, batch_size=cfg.retrieval.batch_size,
                ),
            )  # fmt: skip

    write_csv(eval_dir / "metrics.csv", rows, columns=METRIC_COLUMNS)
    remove_stale_tables(eval_dir, written)
    summary["per_dim"] = per_dim_summary(rows, CLEAN_SPLIT)
    summary["wall_time_s"] = round(time.time() - started, 1)
    atomic_write_json(eval_dir / "summary.json", summary)
    print(format_summary(summary, rows, eval_dir))
    return summary


def remove_stale_tables(eval_dir: Path, written: set[str]) -> list[Path]:
    """Delete the table of every `SECTION_TABLES` study not in `written` (this run did not run
    it), only those files; returns the paths removed."""
    removed = []
    for section, name in SECTION_TABLES.items():
        path = eval_dir / name
        if section not in written and path.is_file():
            path.unlink()
            removed.append(path)
            log.info("removed %s: %s did not run this time", path, section)
    return removed


def index_options(cfg: DictConfig, backend: str) -> dict[str, Any]:
    """The `retrieval.index` options that `backend` reads (unset ones left to its defaults)."""
    wanted = {"hnsw": ("hnsw_m", "ef_construction", "ef_search"),
              "ivf": ("nlist", "nprobe", "coarse_dim")}.get(backend, ())  # fmt: skip
    options = cfg.retrieval.get("index") or {}
    chosen = {k: options[k] for k in wanted if options.get(k) is not None}
    if backend in ("exact", "ivf"):
        chosen["use_gpu"] = cfg.retrieval.get("use_gpu", "auto")
    return chosen


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


def is_full_size_single_head(head: MRLHead, num_features: int) -> bool:
    """A plain (non-Matryoshka) model: one head on the whole representation."""
    return len(head.nesting) == 1 and head.nesting[0] == num_features


def add_baselines(cfg, target, db, db_y, query, query_y, dims: list[int], add) -> None:
    """SVD, random-feature and low-rank-classifier baselines from a full-size model's features."""
    from mrl.eval.baselines import (
        iter_baseline_features,
        svd_classifier_rows,
        torch_head_weight,
    )
    from mrl.eval.probe import probe_per_dim
    from mrl.eval.retrieval import evaluate_retrieval

    for name in cfg.baselines:
        if name == "svd_classifier":
            weight, bias = torch_head_weight(target.head)
            add(CLEAN_SPLIT, svd_classifier_rows(weight, bias, query, query_y, dims), method=name)
            continue
        for m, db_m, query_m in iter_baseline_features(name, db, query, dims, seed=cfg.seed):
            add(
                CLEAN_SPLIT,
                probe_per_dim(
                    db_m, db_y, query_m, query_y, [m], target.datamodule.num_classes,
                    max_iter=cfg.probe.max_iter, weight_decay=cfg.probe.weight_decay,
                    max_samples=cfg.probe.max_samples, seed=cfg.seed, progress=False,
                ),
                method=name,
            )  # fmt: skip
            if cfg.retrieval.enabled:
                add(
                    CLEAN_SPLIT,
                    evaluate_retrieval(
                        db_m, db_y, query_m, query_y, [m],
                        ks=tuple(cfg.baseline_retrieval.ks),
                        knn_ks=tuple(cfg.baseline_retrieval.knn_ks),
                        backend=cfg.retrieval.backend, batch_size=cfg.retrieval.batch_size,
                    ),
                    method=name,
                )  # fmt: skip


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
    return sets


def restrict_to_subset(
    probs: np.ndarray, labels: np.ndarray, subset: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the subset's logits' probabilities and relabel targets as positions in the subset."""
    position = {c: i for i, c in enumerate(subset)}
    return probs[..., subset], np.array([position[int(y)] for y in labels])


def per_dim_summary(rows: list[dict], split: str) -> dict[str, dict[str, float]]:
    """`{dim: {metric: value}}` of one split."""
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["split"] == split:
            table.setdefault(str(r["dim"]), {})[r["metric"]] = float(r["value"])
    return table


def format_speedup(speedup: float) -> str:
    """`1.75x`; below 1, said in words, since it means the method lost to exact search."""
    text = f"{speedup:.2f}x"
    return f"{text} — slower than exact search at this size" if speedup < 1 else text


def format_adaptive_classification(ac: dict, full_accuracy: float | None, n_queries: int) -> str:
    """The cascade's line: which queries its numbers are measured on, and what it achieves."""
    n_cal, n_report = ac.get("n_calibration"), ac.get("n_report")
    if n_cal is not None and n_report is not None:
        where = f"thresholds fitted on {n_cal} queries, measured on the other {n_report}"
        on = f" on those {n_report}"
    else:
        where, on = "measured on the held-out queries", ""
    # The per-dim table's head top-1 is over every query; the cascade's reference is the same
    # head on its report half only, so the two differ by that half's sampling.
    full = (
        f" ({100 * full_accuracy:.2f}% on all {n_queries} queries, as in the table)"
        if full_accuracy is not None
        else ""
    )
    smallest = ac.get("smallest_expected_dim")
    return (
        f"adaptive classification ({where}): largest head {100 * ac['largest_dim_accuracy']:.2f}%"
        f"{on}{full}; "
        + (
            f"the cascade matches it (within {100 * ac['tolerance']:g} pt) at expected dim "
            f"{smallest:.1f} ({ac['dim_reduction']:.1f}x smaller)"
            if smallest
            else "no threshold setting matches it"
        )
        + (
            f"; the smallest single head as accurate: dim {ac['smallest_fixed_dim']}"
            if ac.get("smallest_fixed_dim")
            else ""
        )
        + f"; oracle {100 * ac['oracle']['accuracy']:.2f}% at "
        f"expected dim {ac['oracle']['expected_dim']:.1f}"
    )


def format_summary(summary: dict, rows: list[dict], eval_dir: Path) -> str:
    """A per-dim table of the headline metrics, then the adaptive studies, as text.

    A recall@k whose ceiling (`summary["recall_ceiling"]`) is below `RECALL_CEILING_IN_TABLE`
    is printed after the table with that ceiling instead of as a column."""
    table = summary["per_dim"]
    ceilings = summary.get("recall_ceiling") or {}
    low = {m for m, c in ceilings.items() if c == c and c < RECALL_CEILING_IN_TABLE}
    present = [m for m in SUMMARY_METRICS if any(m in v for v in table.values())]
    shown = [m for m in present if m not in low]
    labels = {m: metric_label(m) for m in shown}
    widths = {m: max(8, len(labels[m])) for m in shown}
    by_dim = sorted(table.items(), key=lambda kv: int(kv[0]))
    lines = [f"{summary['method']} on {summary['checkpoint']}: per-dim metrics (%)"]
    lines.append("  ".join([f"{'dim':>6}", *(f"{labels[m]:>{widths[m]}}" for m in shown)]))
    for dim, values in by_dim:
        cells = [
            f"{100 * values[m]:{widths[m]}.2f}" if m in values else f"{'-':>{widths[m]}}"
            for m in shown
        ]
        lines.append("  ".join([f"{dim:>6}", *cells]))
    for m in present:
        if m in low:
            per_dim = ", ".join(f"{100 * v[m]:.2f}% at dim {d}" for d, v in by_dim if m in v)
            lines.append(
                f"{m} (ceiling {100 * ceilings[m]:.2f}% here: k / same-class database items): "
                f"{per_dim}"
            )
    ac = summary.get("adaptive_classification")
    if ac:
        largest = str(max(summary.get("nesting") or [0]))
        full = table.get(largest, {}).get("head_top1")
        lines.append(format_adaptive_classification(ac, full, summary.get("query_size", 0)))
    for r in summary.get("adaptive_retrieval", []):
        standard = r.get("map_standard@10")
        lines.append(
            f"{r['method']:>8} {r['dims']:>18} shortlists {r['shortlists']:>14}: "
            f"{metric_label('map@10')} {100 * r['map@10']:6.2f}  "
            + (
                f"{metric_label('map_standard@10')} {100 * standard:6.2f}  "
                if standard is not None
                else ""
            )
            + f"MFLOPs/query {r['mflops_per_query']:9.3f}  "
            f"speed-up {format_speedup(r['speedup_vs_exact'])}"
        )
    lines.append(f"tables in {eval_dir}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point: bad input is one line and exit status 2 (see `run_command`)."""
    run_command("mrl-eval", lambda: evaluate(cfg))


cli = hydra_cli(main, "mrl-eval")

if __name__ == "__main__":
    cli()
