"""The checks of `mrl-eval`'s config: every option that needs neither the model nor the data
(`check_eval_config`, before anything is loaded), then those that do (`check_eval_against`, as
soon as the representation size and the database size are known, before encoding)."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from mrl.checks import (
    check_choice,
    check_device,
    check_nesting,
    check_positive_int,
    check_positive_ints,
    check_seed,
    plain,
)
from mrl.core.errors import ConfigError
from mrl.core.validate import is_non_negative_int

EVAL_BACKENDS = ("exact", "hnsw", "ivf", "binary", "numpy")
EVAL_DTYPES = ("float32", "float16")


def faiss_gpus() -> int:
    """GPUs FAISS can use (0 without FAISS or with its CPU build)."""
    from mrl.extras import import_faiss

    faiss = import_faiss()
    if faiss is None:
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def check_eval_config(cfg: DictConfig) -> None:
    """Every `mrl-eval` option that does not need the model or the data."""
    check_seed(cfg.get("seed"))
    check_device(cfg.get("device", "auto"))
    if cfg.get("dims") is not None:
        check_nesting(cfg.dims, "dims")
    check_choice(cfg.dtype, "dtype", EVAL_DTYPES)
    check_choice(cfg.checkpoint_format, "checkpoint_format", ("auto", "mrl", "official"))
    database = cfg.get("database") or {}
    if database.get("augmented_copies", 0) != 0:
        check_positive_int(database.augmented_copies, "database.augmented_copies", 18)
        check_seed(database.get("seed"))
    shift = database.get("shift", 0)
    if not is_non_negative_int(shift):
        raise ConfigError(f"database.shift={shift!r} must be an integer >= 0 (pixels), e.g. 2")
    retrieval = cfg.retrieval
    check_choice(retrieval.backend, "retrieval.backend", EVAL_BACKENDS)
    check_positive_int(retrieval.batch_size, "retrieval.batch_size", 4096)
    use_gpu = retrieval.get("use_gpu", "auto")
    if use_gpu not in ("auto", True, False):
        raise ConfigError(f"retrieval.use_gpu={use_gpu!r} must be auto, true or false")
    if use_gpu is True and faiss_gpus() == 0:
        raise ConfigError("retrieval.use_gpu=true but FAISS sees no GPU: install faiss-gpu on a "
                          "machine with one, or pass retrieval.use_gpu=auto")  # fmt: skip
    tie_dim = retrieval.get("tie_aware_max_dim", 0)
    if not is_non_negative_int(tie_dim):
        raise ConfigError(
            f"retrieval.tie_aware_max_dim={tie_dim!r} must be an integer >= 0 (0: off), e.g. 8"
        )
    for name, value in (retrieval.get("index") or {}).items():
        if value is not None:
            check_positive_int(value, f"retrieval.index.{name}", "a positive integer or null")
    if retrieval.enabled:
        check_positive_ints(retrieval.ks, "retrieval.ks", "[10,25,50,100]")
        check_positive_ints(retrieval.knn_ks, "retrieval.knn_ks", "[1,5,20]")
    if cfg.probe.enabled:
        check_positive_int(cfg.probe.max_iter, "probe.max_iter", 100)
    if cfg.heads:
        check_positive_int(cfg.heads_batch_size, "heads_batch_size", 8192)
    if cfg.baselines:
        check_positive_int(cfg.baseline_smallest_dim, "baseline_smallest_dim", 8)
        check_positive_ints(cfg.baseline_retrieval.ks, "baseline_retrieval.ks", "[10]")
        check_positive_ints(cfg.baseline_retrieval.knn_ks, "baseline_retrieval.knn_ks", "[1]")
    if cfg.robustness.retrieval:
        check_positive_ints(cfg.robustness.ks, "robustness.ks", "[10]")
        check_positive_ints(cfg.robustness.knn_ks, "robustness.knn_ks", "[1]")
    if cfg.robustness.get("max_queries") is not None:
        check_positive_int(cfg.robustness.max_queries, "robustness.max_queries", 2000)
    tolerance = cfg.adaptive_classification.tolerance
    if cfg.adaptive_classification.enabled and not (
        isinstance(tolerance, int | float)
        and not isinstance(tolerance, bool)
        and 0 <= tolerance < 1
    ):
        raise ConfigError(
            f"adaptive_classification.tolerance={tolerance!r} must be a fraction of top-1 in "
            f"[0, 1), e.g. 0.001 for 0.1 points"
        )
    frac = cfg.adaptive_classification.cal_fraction
    if cfg.adaptive_classification.enabled and not (
        isinstance(frac, int | float) and not isinstance(frac, bool) and 0 < frac < 1
    ):
        raise ConfigError(f"adaptive_classification.cal_fraction={frac!r} must be between 0 and 1")
    adaptive = cfg.adaptive_retrieval
    if adaptive.enabled:
        check_positive_int(adaptive.get("repeats", 3), "adaptive_retrieval.repeats", 1)
        check_choice(adaptive.get("first_stage", "exact"), "adaptive_retrieval.first_stage",
                     EVAL_BACKENDS)  # fmt: skip
        shortlist = adaptive.shortlist_k
        check_positive_int(shortlist, "adaptive_retrieval.shortlist_k", 200)
        largest_k = max(plain(retrieval.ks)) if retrieval.enabled else 10
        if shortlist < largest_k:
            raise ConfigError(
                f"adaptive_retrieval.shortlist_k={shortlist} is below the largest retrieval k "
                f"{largest_k}: raise it to at least {largest_k}"
            )
        dims, shortlists = adaptive.funnel_dims, adaptive.funnel_shortlists
        if (dims is None) != (shortlists is None):
            given = "funnel_dims" if dims is not None else "funnel_shortlists"
            raise ConfigError(
                f"adaptive_retrieval.{given} is set without the other: give both "
                f"funnel_dims=[...] and funnel_shortlists=[...] of the same length, or neither"
            )
        if dims is not None:
            dims = check_nesting(dims, "adaptive_retrieval.funnel_dims")
            shortlists = check_positive_ints(shortlists, "adaptive_retrieval.funnel_shortlists")
            if len(dims) != len(shortlists):
                raise ConfigError(
                    f"adaptive_retrieval.funnel_dims {dims} and funnel_shortlists {shortlists} "
                    f"differ in length: give one shortlist per funnel dim"
                )
            if any(b > a for a, b in zip(shortlists, shortlists[1:])):
                raise ConfigError(
                    f"adaptive_retrieval.funnel_shortlists {shortlists} must not increase"
                )
    if cfg.robustness.corruptions:
        check_positive_ints(cfg.robustness.severities, "robustness.severities", "[1,3,5]")


def check_eval_against(
    cfg: DictConfig, features: int, nesting: Sequence[int], database_size: int
) -> list[int]:
    """The `mrl-eval` options that depend on the model and the data; returns the dims."""
    dims = check_nesting(plain(cfg.dims) if cfg.dims else list(nesting), "dims", features)
    adaptive = cfg.adaptive_retrieval
    if adaptive.enabled and adaptive.funnel_dims is not None:
        check_nesting(adaptive.funnel_dims, "adaptive_retrieval.funnel_dims", features)
    if cfg.retrieval.enabled:
        for name in ("ks", "knn_ks"):
            largest = max(plain(cfg.retrieval[name]))
            if largest > database_size:
                raise ConfigError(
                    f"retrieval.{name} goes up to {largest} but the database has only "
                    f"{database_size} items: use values of at most {database_size}"
                )
    return dims
