"""Contrastive training on the researcher's own (anchor, positive[, hard negative...]) rows.

`PairsDataModule` reads one or several training sets (`mrl.text.rowfiles`: JSONL/JSON, CSV,
TSV, Parquet or a `datasets.save_to_disk` folder), draws every batch from one set, with no text
twice in a batch, in `round_robin` or `proportional` order (`mrl.text.multiset`), and tokenizes
the anchors with the query prompt and the positives and negatives with the document prompt, each
side at its own maximum length.

A training batch is `{"anchors": tokenized, "positives": tokenized}`; a set with N >= 1
negative columns adds `"negatives"`, the B*N negatives tokenized in row-major order (row i's at
i*N .. i*N+N-1), and `"num_negatives": N`. `eval_specs` holds the `val` and `test` evaluation
sets of the config (`mrl.text.evaluation`): the `test` sets are evaluated after training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from mrl.core.errors import ConfigError
from mrl.core.validate import non_negative_int, positive_int
from mrl.data.base import ResumableTraining, loader_generator
from mrl.text.data import process_group
from mrl.text.encoders import load_tokenizer, tokenize
from mrl.text.evaluation import check_eval_specs, load_eval_sets
from mrl.text.multiset import SAMPLINGS, MultiSetBatchSampler
from mrl.text.rowfiles import TrainingSet, read_training_set

ROLES = ("query", "document")
ENTRY_KEYS = ("path", "columns", "name")


def _column_names(columns: Any, where: str) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise ConfigError(f"{where} must be a list of column names, got {columns!r}")
    return [str(c) for c in columns]


def train_entries(train: Any, columns: Any = None) -> list[dict[str, Any]]:
    """`train` as a list of `{path, columns, name}`: a path, or a list of paths and mappings;
    an entry without `columns` takes the module's `columns`."""
    items = [train] if isinstance(train, (str, Path, Mapping)) else train
    if not isinstance(items, Sequence) or not items:
        raise ConfigError(f"data.train must be a path or a list of entries, got {train!r}")
    entries = []
    for i, item in enumerate(items):
        where = f"data.train[{i}]"
        entry = {"path": item} if isinstance(item, (str, Path)) else item
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a path or {{path, columns, name}}, got {item!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown} (keys: {', '.join(ENTRY_KEYS)})")
        if not entry.get("path"):
            raise ConfigError(f"{where} needs a path")
        picked = entry.get("columns", columns)
        name = entry.get("name")
        entries.append({"path": str(entry["path"]),
                        "columns": _column_names(picked, f"{where}.columns"),
                        "name": None if name is None else str(name)})  # fmt: skip
    return entries


def by_role(value: Any, where: str, default: Any) -> dict[str, Any]:
    """A `{query, document}` option: a mapping with those keys (missing ones get `default`),
    or one value for both."""
    if value is None:
        return dict.fromkeys(ROLES, default)
    if not isinstance(value, Mapping):
        return dict.fromkeys(ROLES, value)
    unknown = sorted(set(value) - set(ROLES))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (keys: {', '.join(ROLES)})")
    return {role: value.get(role, default) for role in ROLES}


class TrainingRows(Dataset):
    """The rows of several training sets, read a batch at a time: item `(set index, row
    indices)` is the list of those rows, each `(anchor, positive, negative...)`."""

    def __init__(self, sets: Sequence[TrainingSet]) -> None:
        self.sets = list(sets)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    def __getitem__(self, key: tuple[int, Sequence[int]]) -> list[tuple[str, ...]]:
        index, rows = key
        return [self.sets[index].row(int(i)) for i in rows]


class RowsCollator:
    """A batch's rows -> `{"anchors", "positives"[, "negatives", "num_negatives"]}`: anchors
    with the query prompt, positives and negatives with the document prompt, each side padded
    to its own longest text and cut at its role's maximum length."""

    def __init__(self, tokenizer, prompts: Mapping[str, str], max_lengths: Mapping[str, int]):
        self.tokenizer, self.prompts, self.max_lengths = tokenizer, prompts, max_lengths

    def _side(self, texts: Sequence[str], role: str) -> dict[str, Any]:
        prompt = self.prompts[role]
        return tokenize(self.tokenizer, [prompt + t for t in texts], self.max_lengths[role])

    def __call__(self, rows: Sequence[tuple[str, ...]]) -> dict[str, Any]:
        batch = {"anchors": self._side([r[0] for r in rows], "query"),
                 "positives": self._side([r[1] for r in rows], "document")}  # fmt: skip
        num_negatives = len(rows[0]) - 2
        if num_negatives:
            batch["negatives"] = self._side([t for r in rows for t in r[2:]], "document")
            batch["num_negatives"] = num_negatives
        return batch


class PairsDataModule(ResumableTraining, pl.LightningDataModule):
    """Training batches from files of (anchor, positive[, hard negative...]) text rows.

    `check()` reads and checks every file (one-line `ConfigError`s naming the file); the rows
    stay in memory. Under DDP every process takes one batch of each step of the epoch (see
    `mrl.text.multiset`); a resumed epoch continues with the batches it had not trained on.

    Args:
        train: a path, or a list of entries, each a path or `{path, columns, name}`; every batch
            is drawn from one entry's rows (entries may have different numbers of negatives).
        columns: `[anchor, positive, negative...]` column names for entries that name none;
            `None`: the first column is the anchor, the second the positive, the rest negatives.
        sampling: `proportional` (every batch of every set, the sets in proportion to their
            sizes) or `round_robin` (the sets in turn until the smallest is used up).
        prompts: `{query, document}` texts put before the anchors (query) and before the
            positives and negatives (document), e.g. `"query: "` and `"passage: "` for E5.
        max_length: the longest token sequence kept, `{query, document}` or one number for both.
        model_name_or_path: where the tokenizer is stored (`None` = bundled MiniLM).
        batch_size: rows per batch per device.
        eval_batch_size: texts per batch when the evaluation sets are encoded.
        num_workers: DataLoader worker processes.
        seed: seed of the batches (with the epoch).
        val / test: evaluation sets, each `{path, kind: beir|sts, split, name}`
            (`mrl.text.evaluation`); the `test` sets are evaluated per dim after training.
    """

    def __init__(
        self,
        train: Any,
        columns: Sequence[str] | None = None,
        sampling: str = "proportional",
        prompts: Mapping[str, str] | None = None,
        max_length: int | Mapping[str, int] = 128,
        model_name_or_path: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        val: Sequence[Mapping[str, Any]] | None = None,
        test: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.entries = train_entries(train, _column_names(columns, "data.columns"))
        if sampling not in SAMPLINGS:
            raise ConfigError(f"data.sampling={sampling!r} is not one of {list(SAMPLINGS)}")
        self.sampling = sampling
        prompts = by_role(prompts, "data.prompts", "")
        self.prompts = {role: "" if text is None else str(text) for role, text in prompts.items()}
        lengths = by_role(max_length, "data.max_length", 128)
        self.max_lengths = {r: positive_int(n, f"data.max_length.{r}") for r, n in lengths.items()}
        self.model_name_or_path = model_name_or_path
        self.batch_size = positive_int(batch_size, "data.batch_size")
        self.num_workers = non_negative_int(num_workers, "data.num_workers")
        self.seed = non_negative_int(seed, "data.seed")
        self.eval_batch_size = positive_int(eval_batch_size, "data.eval_batch_size")
        self.eval_specs = {
            split: check_eval_specs(entries, f"data.{split}")
            for split, entries in (("val", val), ("test", test))
        }
        self._sets: list[TrainingSet] | None = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The tokenizer of `model_name_or_path`, loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        return self._tokenizer

    def training_sets(self) -> list[TrainingSet]:
        """The checked rows of every training entry (read once)."""
        if self._sets is None:
            sets = [read_training_set(**entry) for entry in self.entries]
            for training_set in sets:
                self._check_batch_size(training_set)
            self._sets = sets
        return self._sets

    def _check_batch_size(self, training_set: TrainingSet) -> None:
        if self.batch_size > len(training_set):
            raise ConfigError(
                f"{training_set.path}: data.batch_size={self.batch_size} exceeds its "
                f"{len(training_set)} rows: lower data.batch_size"
            )
        if self.batch_size == 1 and training_set.num_negatives == 0:
            raise ConfigError(
                f"{training_set.path}: data.batch_size=1 leaves a row without hard negatives "
                f"nothing to contrast with: raise data.batch_size or add negative columns"
            )

    def check(self) -> None:
        """Read and check every training file and evaluation set (one-line `ConfigError`s);
        no model is needed."""
        self.training_sets()
        for specs in self.eval_specs.values():
            load_eval_sets(specs)

    def setup(self, stage: str | None = None) -> None:
        """Read and check the training files."""
        self.check()

    def train_sampler(
        self, num_replicas: int | None = None, rank: int | None = None
    ) -> MultiSetBatchSampler:
        """The batch plan of one process (by default this one; see `MultiSetBatchSampler`)."""
        world, this_rank = process_group()
        world = world if num_replicas is None else num_replicas
        rank = this_rank if rank is None else rank
        sets = self.training_sets()
        sampler = MultiSetBatchSampler(
            TrainingRows(sets), [s.columns for s in sets], self.batch_size, self.sampling,
            self.seed, num_replicas=world, rank=rank, samples_done=self.samples_done_this_epoch,
        )  # fmt: skip
        if len(sampler) == 0:
            raise ConfigError(
                f"data.batch_size={self.batch_size} leaves no batch for each of {world} "
                f"processes: lower data.batch_size or add rows"
            )
        return sampler

    def train_dataloader(self) -> DataLoader:
        """This process's batches of the epoch (see the module's docstring for their layout)."""
        sampler = self.train_sampler()
        return DataLoader(
            sampler.dataset,
            batch_size=None,  # the sampler's keys are whole batches
            sampler=sampler,
            collate_fn=RowsCollator(self.tokenizer, self.prompts, self.max_lengths),
            generator=loader_generator(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
