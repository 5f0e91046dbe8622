"""Training batches drawn from several sets of text rows, one set per batch, no text twice in one.

`distinct_text_batches` fills batches as sentence-transformers' `NoDuplicatesBatchSampler` does:
rows are taken in a shuffled order, and a row sharing any text (anchor, positive or negative)
with a row already in the batch is deferred, keeping its place, to a later batch; only full
batches are kept. `set_batches` asks one set for `rows // batch_size` such batches; when a
shuffled pass fills fewer, up to `EXTRA_PASSES` more shuffled passes fill the rest (their rows
repeat earlier ones of the epoch), and a set with too few distinct texts gives fewer batches.

`epoch_steps` orders the sets' batches as sentence-transformers' multi-dataset samplers do:

- `round_robin` (`RoundRobinBatchSampler`): a step from each set in turn, in the order the sets
  are given, until the set with the fewest batches has none left; the other sets' remaining
  rows are not used that epoch, and every set is drawn equally often.
- `proportional` (`ProportionalBatchSampler`): every batch of every set, the sets' steps in a
  seeded random order, so each set is drawn in proportion to its size.

A step is `world` batches of one set, one per process, so under DDP the processes of one step
encode rows of the same set (the same number of hard negatives, which a loss gathering every
process's embeddings needs); each set's batches beyond a multiple of `world` are dropped. The
plan is a pure function of (seed, epoch, world size): a resumed epoch skips the batches already
trained on and continues with the identical ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mrl.data.base import ResumableSampler

SAMPLINGS = ("round_robin", "proportional")
# Shuffled passes over a set after the first, to reach its batch count (as sentence-transformers).
EXTRA_PASSES = 2
# Streams of one (seed, epoch): the rows of each set, the order of the sets' steps.
_ROWS_STREAM, _ORDER_STREAM = 0, 1

# A set's rows as columns of texts: `columns[j][i]` is column j of row i.
Columns = Sequence[Sequence[str]]


def distinct_text_batches(
    columns: Columns, order: Sequence[int], batch_size: int
) -> Iterator[list[int]]:
    """Full batches of row indices, taken in `order`, with no text twice within a batch; a row
    whose texts clash with the batch stays in place for the next one. Every row is visited;
    rows left over in batches that cannot be filled are dropped."""
    following = list(range(1, len(order) + 1))
    if following:
        following[-1] = -1
    head = 0 if following else -1
    while head != -1:
        batch: list[int] = []
        seen: set[str] = set()
        previous, position = -1, head
        while position != -1 and len(batch) < batch_size:
            after = following[position]
            texts = {column[order[position]] for column in columns}
            if seen.isdisjoint(texts):
                batch.append(order[position])
                seen |= texts
                if previous == -1:
                    head = after
                else:
                    following[previous] = after
            else:
                previous = position
            position = after
        if len(batch) == batch_size:
            yield batch


def set_batches(
    columns: Columns, batch_size: int, wanted: int, rng: np.random.Generator
) -> list[list[int]]:
    """Up to `wanted` batches of one set's rows (see `distinct_text_batches`): a shuffled pass,
    then at most `EXTRA_PASSES` more while batches are missing."""
    rows = len(columns[0])
    batches: list[list[int]] = []
    for _ in range(1 + EXTRA_PASSES):
        if len(batches) >= wanted:
            break
        order = rng.permutation(rows).tolist()
        for batch in distinct_text_batches(columns, order, batch_size):
            batches.append(batch)
            if len(batches) == wanted:
                break
        if not batches:
            break
    if len(batches) < wanted:
        warnings.warn(
            f"a training set of {rows} rows gave {len(batches)} of its {wanted} batches without "
            f"repeated texts: it has too few distinct texts for batch_size={batch_size}",
            stacklevel=2,
        )
    return batches


def _rng(seed: int, epoch: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng((int(seed), int(epoch), stream, index))


def epoch_steps(
    sets: Sequence[Columns],
    batch_size: int,
    sampling: str,
    seed: int,
    epoch: int,
    world: int = 1,
) -> list[tuple[int, list[list[int]]]]:
    """The steps of an epoch, in order: `(set index, [one batch of that set per process])`.

    Each set's batches come from its own seeded stream of (seed, epoch); `sampling` orders the
    steps (`round_robin` or `proportional`, see the module's docstring).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling={sampling!r} is not one of {list(SAMPLINGS)}")
    wanted = [len(columns[0]) // batch_size for columns in sets]
    if sampling == "round_robin":
        wanted = [min(wanted)] * len(sets)
    steps = []
    for index, (columns, count) in enumerate(zip(sets, wanted)):
        batches = set_batches(columns, batch_size, count, _rng(seed, epoch, _ROWS_STREAM, index))
        steps.append([batches[i : i + world] for i in range(0, len(batches) - world + 1, world)])
    if sampling == "round_robin":
        rounds = min(len(s) for s in steps)
        order = [index for _ in range(rounds) for index in range(len(sets))]
    else:
        order = [index for index, s in enumerate(steps) for _ in s]
        order = [order[i] for i in _rng(seed, epoch, _ORDER_STREAM).permutation(len(order))]
    cursors = [iter(s) for s in steps]
    return [(index, next(cursors[index])) for index in order]


class MultiSetBatchSampler(ResumableSampler):
    """Yields this process's batches of the epoch as `(set index, row indices)` keys, for a
    `DataLoader` with `batch_size=None` whose dataset returns a batch's rows for such a key.

    A `DistributedSampler`: Lightning calls `set_epoch` on it and leaves it in place under DDP
    (a custom `batch_sampler` it would replace). The epoch's plan is `epoch_steps` of
    (seed, epoch, num_replicas), of which process `rank` takes its batch of every step, so every
    process has as many batches. `samples_done` (see `ResumableSampler`) makes a resumed epoch
    start after the batches it already trained on. `len()` is the number of batches of the
    current epoch, computed once per epoch.
    """

    def __init__(
        self,
        dataset: Any,
        sets: Sequence[Columns],
        batch_size: int,
        sampling: str = "proportional",
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        samples_done: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True, samples_done=samples_done)  # fmt: skip
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling={sampling!r} is not one of {list(SAMPLINGS)}")
        self.sets, self.batch_size, self.sampling = list(sets), int(batch_size), sampling
        self._plan: tuple[int, list[tuple[int, list[int]]]] | None = None

    def batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        """This process's batches of `epoch`, in order, as `(set index, row indices)`."""
        if self._plan is None or self._plan[0] != epoch:
            steps = epoch_steps(self.sets, self.batch_size, self.sampling, self.seed, epoch,
                                self.num_replicas)  # fmt: skip
            self._plan = (epoch, [(index, batches[self.rank]) for index, batches in steps])
        return self._plan[1]

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        resumed = self.samples_done() if self.samples_done is not None else None
        skip = 0
        if resumed is not None:
            self.epoch, samples = resumed
            skip = samples // self.batch_size
        return iter(self.batches(self.epoch)[skip:])

    def __len__(self) -> int:
        return len(self.batches(self.epoch))
