"""The paper's numbers, shipped with the package, and their one reader.

`REFERENCE_DIR` holds `paper_resnet50_imagenet1k.csv` (per-dim curves: columns
`metric,method,<dim>,...`, empty cells allowed) and `paper_adaptive.csv` (`study, setting,
value_name, value, cost_name, cost`); README.md names their source. `load_reference` reads
such a folder (or one of its files) into a `Reference`, for `mrl-aggregate`, `mrl-report` and
the notebooks alike; `default_reference_dir` is `$MRL_REFERENCE_DIR` if set, else
`REFERENCE_DIR`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mrl.runs.format import reference_files

REFERENCE_DIR = Path(__file__).resolve().parent
# Overrides the shipped folder (e.g. a user's own copy of the paper's numbers).
ENV_VAR = "MRL_REFERENCE_DIR"
# The paper's method names in the curves CSV, mapped to this package's.
PAPER_METHODS = {
    "MRL": "mrl",
    "MRL-E": "mrl_e",
    "FF": "ff",
    "SVD": "svd",
    "Slimmable": "slimmable",
    "Rand-LP": "random",
}
CURVE_COLUMNS = ["metric", "method", "paper_method", "dim", "value", "percent"]
ADAPTIVE_COLUMNS = ["study", "setting", "value_name", "value", "cost_name", "cost"]


class ReferenceFileError(ValueError):
    """Reference numbers that cannot be read: the message names the file and the problem."""


@dataclass
class Reference:
    """The paper's numbers read from `path`.

    `curves`: `metric` (top1, 1nn, map@10), `method` (this package's name), `paper_method` (the
    CSV's), `dim`, `value` (a fraction) and `percent` (the CSV's number);
    `adaptive`: the rows of `paper_adaptive.csv`, `value` as a fraction.
    """

    path: Path
    curves: pd.DataFrame
    adaptive: pd.DataFrame

    def by_dim(self, metric: str = "top1") -> dict[str, dict[int, float]]:
        """`paper method -> {dim: value in percent}` of one metric's rows, dims ascending."""
        rows = self.curves[self.curves["metric"] == metric].sort_values("dim", kind="stable")
        out: dict[str, dict[int, float]] = {}
        for method, dim, percent in zip(rows["paper_method"], rows["dim"], rows["percent"]):
            out.setdefault(str(method), {})[int(dim)] = float(percent)
        return out


def default_reference_dir() -> Path:
    """`$MRL_REFERENCE_DIR` if set, else the numbers shipped with the package."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REFERENCE_DIR


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _read_curves(path: Path) -> pd.DataFrame:
    wide = pd.read_csv(path)
    if list(wide.columns[:2]) != ["metric", "method"]:
        raise ValueError("expected columns metric,method,<dims>...")
    dims = [str(c) for c in wide.columns[2:]]
    bad = [c for c in dims if not c.isdigit()]
    if bad:
        raise ValueError(f"dim columns must be integers, got {bad[0]!r}")
    wide.columns = ["metric", "method", *dims]
    curves = wide.melt(id_vars=["metric", "method"], value_vars=dims, var_name="dim")
    curves = curves.dropna(subset=["value"]).rename(columns={"value": "percent"})
    curves["percent"] = curves["percent"].astype(float)
    curves["dim"] = curves["dim"].astype(int)
    curves["paper_method"] = curves["method"].astype(str)
    curves["method"] = curves["paper_method"].map(lambda m: PAPER_METHODS.get(m, m.lower()))
    curves["value"] = curves["percent"] / 100.0
    return curves[CURVE_COLUMNS].reset_index(drop=True)


def _read_adaptive(path: Path) -> pd.DataFrame:
    adaptive = pd.read_csv(path)
    adaptive["value"] = adaptive["value"].astype(float) / 100.0
    adaptive["cost"] = adaptive["cost"].astype(float)
    return adaptive.reset_index(drop=True)


def load_reference(path: str | Path | None = None, strict: bool = False) -> Reference | None:
    """The paper's numbers from `path` (the reference folder or one of its files, see
    `mrl.runs.format.reference_files`; default `default_reference_dir()`).

    Lenient by default: None where nothing readable is there, so that figures are drawn without
    the overlay. With `strict`, a `ReferenceFileError` instead: when `path` is missing, or its
    curves file is missing or not in the curves format.
    """
    folder = Path(path) if path is not None else default_reference_dir()
    if not folder.exists():
        if strict:
            raise ReferenceFileError(f"reference {folder} does not exist")
        return None
    curves_file, adaptive_file = reference_files(folder)
    curves, adaptive = _empty(CURVE_COLUMNS), _empty(ADAPTIVE_COLUMNS)
    try:
        curves = _read_curves(curves_file)
    except FileNotFoundError as err:
        if strict:
            raise ReferenceFileError(f"reference {curves_file} does not exist") from err
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as err:
        if strict:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ReferenceFileError(f"{curves_file}: not a reference CSV ({first})") from err
    try:
        adaptive = _read_adaptive(adaptive_file)
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        pass  # the adaptive overlay is optional, even in strict mode
    if curves.empty and adaptive.empty:
        return None
    return Reference(folder, curves, adaptive)
