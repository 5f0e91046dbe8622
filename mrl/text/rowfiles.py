"""Text rows of a training file, read through the `datasets` library and checked.

A file is JSONL or JSON (`.jsonl`, `.json`), CSV (`.csv`), TSV (`.tsv`, no quoting), Parquet
(`.parquet`), or a folder written by `datasets.Dataset.save_to_disk` (a `DatasetDict` folder
gives its `train` split). CSV and TSV cells are read as text as they stand (`01` stays `01`, `NA`
stays `NA`). The columns are, by sentence-transformers' convention, the anchor, the positive,
then any number of hard negatives; `columns` picks and orders them by name instead.

Every problem is one line naming the file: a `ConfigError` for a path or a column name to fix in
the config, a `DataError` for a file that is there but unusable. Rows are numbered from 1, a
header line not counted. Nothing is fetched, and the `datasets` cache lives in a temporary folder
removed after reading.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.core.errors import ConfigError, DataError, one_line

# The `datasets` loader of each file suffix.
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
SAVED_FOLDER = "a datasets.save_to_disk folder"


@dataclass
class TrainingSet:
    """One training set's rows as text columns: anchors, positives, then hard negatives."""

    name: str
    path: str
    column_names: list[str]
    columns: list[list[str]]

    def __len__(self) -> int:
        return len(self.columns[0])

    @property
    def num_negatives(self) -> int:
        """Hard negatives per row (the columns after the anchor and the positive)."""
        return len(self.columns) - 2

    def row(self, index: int) -> tuple[str, ...]:
        """Row `index`: `(anchor, positive, negative...)`."""
        return tuple(column[index] for column in self.columns)


def datasets_library() -> Any:
    """The `datasets` module, or a one-line `ConfigError` saying how to install it."""
    try:
        import datasets
    except ImportError as err:
        raise ConfigError(
            "reading training rows needs the `datasets` library: pip install 'datasets>=2.19'"
        ) from err
    return datasets


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars from `datasets` while reading (restored afterwards)."""
    utils = datasets_library().utils
    was_disabled = utils.are_progress_bars_disabled()
    utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            utils.enable_progress_bars()


def _csv_header(path: Path, delimiter: str) -> list[str]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, delimiter=delimiter, quoting=quoting), [])


def _loader_arguments(path: Path, kind: str) -> tuple[str, dict[str, Any]]:
    """The `load_dataset` builder and options reading `path` as `kind`."""
    if kind not in ("csv", "tsv"):
        return kind, {}
    datasets = datasets_library()
    delimiter = "\t" if kind == "tsv" else ","
    header = _csv_header(path, delimiter)
    # Every cell as the text it is: no number parsing, no NA guessing.
    features = datasets.Features({name: datasets.Value("string") for name in header})
    options = {"features": features,
               "delimiter": delimiter, "na_filter": False}  # fmt: skip
    if kind == "tsv":
        options["quoting"] = csv.QUOTE_NONE
    return "csv", options


def _load_file(path: Path) -> Any:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"{path}: unknown format {path.suffix!r}: give a {', '.join(FORMATS)} file or "
            f"{SAVED_FOLDER}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    builder, options = _loader_arguments(path, kind)
    load_dataset = datasets_library().load_dataset
    with tempfile.TemporaryDirectory(prefix="mrl-datasets-") as cache:
        return load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True,
                            cache_dir=cache, **options)  # fmt: skip


def _load_folder(path: Path) -> Any:
    datasets = datasets_library()
    loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(
                f"{path}: the saved DatasetDict has no 'train' split (splits: "
                f"{', '.join(loaded)}): give the folder of one split"
            )
        loaded = loaded["train"]
    return loaded


def load_table(path: str | Path) -> Any:
    """The rows of a training file or saved folder as a `datasets.Dataset`, held in memory."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    try:
        with _quiet_datasets():
            return _load_folder(path) if path.is_dir() else _load_file(path)
    except ConfigError:
        raise
    except Exception as err:  # the loaders raise many kinds; the user needs the file and cause
        cause = err.__cause__ or err
        if "corresponds to no data" in str(err):
            raise DataError(f"{path}: the file has no rows") from err
        what = SAVED_FOLDER if path.is_dir() else FORMATS.get(path.suffix.lower(), "?")
        raise DataError(f"{path}: cannot read it as {what}: {one_line(cause)}") from err


def pick_columns(
    path: str | Path, found: Sequence[str], columns: Sequence[str] | None
) -> list[str]:
    """The names of the anchor, positive and negative columns among `found`: `columns` when
    given, else all of them in file order."""
    listed = ", ".join(found) or "none"
    if columns is None:
        if len(found) < 2:
            raise DataError(
                f"{path}: needs at least 2 columns (anchor, positive); columns found: {listed}"
            )
        return list(found)
    columns = [str(c) for c in columns]
    if len(columns) < 2 or len(set(columns)) != len(columns):
        raise ConfigError(
            f"{path}: columns={columns} must name at least 2 distinct columns "
            f"[anchor, positive, negative...]; columns found: {listed}"
        )
    missing = [c for c in columns if c not in found]
    if missing:
        raise ConfigError(f"{path}: no column {missing[0]!r}; columns found: {listed}")
    return columns


def check_cells(path: str | Path, name: str, values: Sequence[Any], hint: str = "") -> None:
    """Raise `DataError` naming the column and the row of the first cell that is not a
    non-blank string."""
    for row, value in enumerate(values, start=1):
        if not isinstance(value, str):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise DataError(
                f"{path}: column {name!r} row {row} holds {type(value).__name__} {shown}, "
                f"not text{hint}"
            )
        if not value.strip():
            raise DataError(f"{path}: column {name!r} row {row} is empty")


def read_training_set(
    path: str | Path, columns: Sequence[str] | None = None, name: str | None = None
) -> TrainingSet:
    """A checked training set from a file: at least one row, the columns there, every cell a
    non-blank string."""
    table = load_table(path)
    names = pick_columns(path, list(table.column_names), columns)
    if len(table) == 0:
        raise DataError(f"{path}: the file has no rows")
    values = table.select_columns(names).to_dict()
    hint = " (data.columns picks the text columns)" if columns is None else ""
    for column in names:
        check_cells(path, column, values[column], hint)
    label = name if name is not None else Path(path).name.split(".")[0]
    return TrainingSet(str(label), str(path), names, [values[c] for c in names])
