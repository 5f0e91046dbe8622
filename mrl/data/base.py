"""Shared base class for the image-classification data modules, plus loader helpers.

Holds ``VisionDataModule`` (argument checking, lazy per-stage setup, the train and
evaluation loaders), ``eval_sampler`` (exact, unpadded evaluation under DDP), an
in-memory ``TensorImageDataset`` with cheap tensor augmentation, and small helpers
for seeded splits and one-off resizing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from mrl.core.errors import ConfigError
from mrl.core.validate import non_negative_int, positive_int

# Independent random streams of one seed (see seeded_permutation).
SPLIT_STREAM, TRAIN_STREAM, VAL_STREAM, TEST_STREAM, LOADER_STREAM = 0, 1, 2, 3, 4

# Above this, a resized copy of a whole split would crowd host RAM (e.g. 55k MNIST
# images at 224 px are ~11 GB), so images are resized per sample instead.
RESIZE_ONCE_MAX_BYTES = 2 * 1024**3


def eval_sampler(
    dataset: Dataset,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> Sampler | None:
    """Sampler for a validation/test loader that gives exact metrics under DDP.

    With ``num_replicas``/``rank`` given, or when ``torch.distributed`` is initialised
    with a world size above 1, returns an ``UnrepeatedDistributedSampler`` with
    ``shuffle=False``: every index is seen exactly once across ranks (no padding
    duplicates, ranks may differ by one sample). Lightning leaves loaders that
    already hold a ``DistributedSampler`` subclass alone. Otherwise returns ``None``
    so the loader iterates the dataset sequentially.

    Args:
        dataset: the evaluation dataset (must have ``__len__``).
        num_replicas: number of ranks; defaults to the initialised world size.
        rank: this process's rank; defaults to the initialised rank.
    """
    if num_replicas is None:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
            return None
        num_replicas = dist.get_world_size()
        rank = dist.get_rank() if rank is None else rank
    elif rank is None:
        raise ValueError("eval_sampler: give rank together with num_replicas")
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=False
    )


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` shuffling (order fixed by seed and epoch, split across ranks) that
    can start an epoch part-way and gives every sample its own seed.

    `samples_done()` is asked at the start of every epoch for `(epoch, samples)` when the run
    resumed from a checkpoint and this is its first epoch (else None): the epoch it resumes and
    how many of its samples were already trained on. The epoch is taken from there because
    Lightning may build the first iterator (and loader workers start drawing from it) before it
    restores the epoch counter. With `per_sample_seeds`, it yields `(index, seed)` pairs, the
    seed a function of (sampler seed, epoch, index) only, for a `SeededSamples` dataset:
    augmentation then draws the same numbers whatever the worker count, the prefetching or the
    point a run resumed from.
    """

    def __init__(
        self,
        *args: Any,
        samples_done: Callable[[], tuple[int, int] | None] | None = None,
        per_sample_seeds: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.samples_done = samples_done
        self.per_sample_seeds = per_sample_seeds

    def __iter__(self):
        resumed = self.samples_done() if self.samples_done is not None else None
        skip = 0
        if resumed is not None:
            self.epoch, skip = resumed
        indices = list(super().__iter__())[skip:]
        if not self.per_sample_seeds:
            return iter(indices)
        base = (int(self.seed) * 1_000_003 + int(self.epoch)) * 2_654_435_761
        return iter((i, (base + i) % 2**63) for i in indices)


class SeededSamples(Dataset):
    """Wraps a dataset so that item `(index, seed)` is `dataset[index]` computed under `seed`:
    torch's CPU generator is seeded for that one sample and restored afterwards, Python's
    `random` is seeded; random transforms then depend on the sample's seed alone. A dataset
    whose `is_random` attribute is False is read directly (no cost).

    Cost: about 3 us per sample (torch's full `manual_seed` would be 100 us: it seeds every
    device)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.is_random = bool(getattr(dataset, "is_random", True))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if not self.is_random:
            return self.dataset[index]
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


def train_sampler(
    dataset: Dataset,
    seed: int,
    samples_done: Callable[[], tuple[int, int] | None] | None = None,
    per_sample_seeds: bool = False,
) -> DistributedSampler:
    """Shuffling sampler whose order depends only on (seed, epoch), split across ranks.

    Lightning calls `set_epoch` on it and leaves a `DistributedSampler` in place, so a run
    resumed from a checkpoint sees the same batches as an uninterrupted one; `samples_done`
    lets it skip what a run resumed mid-epoch already trained on; `per_sample_seeds` makes it
    yield `(index, seed)` for `SeededSamples`. Without DDP it is a one-replica sampler.
    """
    distributed = dist.is_available() and dist.is_initialized()
    return ResumableSampler(
        dataset,
        num_replicas=dist.get_world_size() if distributed else 1,
        rank=dist.get_rank() if distributed else 0,
        shuffle=True,
        seed=int(seed),
        samples_done=samples_done,
        per_sample_seeds=per_sample_seeds,
    )


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: with workers, its iterators draw their base seed from it,
    not from torch's global generator, whose state a resumed run restores exactly (see
    `mrl.training.lifecycle`); every loader of a run needs one, evaluation loaders included."""
    return seeded_generator(seed, LOADER_STREAM)


def train_position(trainer: pl.Trainer | None) -> dict[str, Any]:
    """`{"epoch", "batches"}`: the training epoch and how many of its batches have updated the
    model. Read when a checkpoint is written, at any of the points Lightning or
    `mrl.training.lifecycle` writes one (batch start or end, validation end)."""
    if trainer is None:
        return {}
    from lightning.pytorch.trainer.states import TrainerStatus

    epoch = int(trainer.current_epoch)
    batches = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    total = trainer.num_training_batches
    if isinstance(total, int) and batches >= total > 0:
        # The epoch is fully trained: the next one starts from its beginning. Inside the fit
        # (its last validation) the epoch counter has not moved on yet; after it, it has.
        batches = 0
        epoch += trainer.state.status == TrainerStatus.RUNNING
    return {"epoch": epoch, "batches": batches}


def seeded_generator(seed: int, stream: int = 0) -> torch.Generator:
    """CPU generator that depends only on ``seed`` and ``stream``.

    ``stream`` separates independent uses of one seed (val split, subsets, ...).
    """
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(stream))


def seeded_permutation(n: int, seed: int, stream: int = 0) -> Tensor:
    """Random permutation of ``range(n)`` that depends only on ``seed`` and ``stream``."""
    return torch.randperm(n, generator=seeded_generator(seed, stream))


def resize_images(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Bilinearly resize a float ``[N, C, H, W]`` tensor to ``[N, C, size, size]``."""
    if images.shape[-2:] == (size, size):
        return images
    out = [
        F.interpolate(
            images[i : i + chunk],
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        for i in range(0, images.shape[0], chunk)
    ]
    return torch.cat(out) if out else images.new_empty((0, images.shape[1], size, size))


def _random_crop(x: Tensor, pad: int, fill: Tensor) -> Tensor:
    """Random crop of ``x`` [C, H, W] padded by ``pad`` on each side with ``fill`` [C, 1, 1].

    Implemented as a random shift into a filled canvas, which equals cropping the
    padded image but avoids materialising it.
    """
    _, h, w = x.shape
    dy, dx = torch.randint(-pad, pad + 1, (2,)).tolist()
    out = fill.expand_as(x).clone()
    out[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        :, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


class TensorImageDataset(Dataset):
    """Images and labels held in memory as tensors, with optional tensor augmentation.

    Args:
        images: float32 ``[N, C, H, W]``, already normalised.
        labels: int64 ``[N]``.
        crop_pad: if > 0, random crop with this much padding (in stored pixels).
        hflip: random horizontal flip with probability 0.5.
        fill: per-channel padding value ``[C]`` in normalised units (black pixels).
        out_size: if set and different from the stored size, resize each sample
            (after augmentation) to ``out_size`` x ``out_size``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        crop_pad: int = 0,
        hflip: bool = False,
        fill: Tensor | None = None,
        out_size: int | None = None,
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"TensorImageDataset: need images [N,C,H,W] and labels [N], got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images = images.float()
        self.labels = labels.long()
        self.crop_pad = int(crop_pad)
        self.hflip = bool(hflip)
        c = images.shape[1]
        self.fill = (fill if fill is not None else torch.zeros(c)).float().reshape(c, 1, 1)
        self.out_size = out_size if out_size != images.shape[-1] else None
        self.is_random = self.crop_pad > 0 or self.hflip  # see SeededSamples

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.images[index]
        if self.crop_pad > 0:
            x = _random_crop(x, self.crop_pad, self.fill)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.out_size is not None:
            x = F.interpolate(
                x[None],
                size=(self.out_size, self.out_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
        return x, self.labels[index]


def make_tensor_dataset(
    images: Tensor,
    labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    crop_pad: int = 0,
    hflip: bool = False,
) -> TensorImageDataset:
    """Normalise ``images`` (float in [0, 1], ``[N, C, H, W]``) and wrap them in a dataset.

    Resizes the whole tensor once when the result is small enough
    (``RESIZE_ONCE_MAX_BYTES``), otherwise per sample. ``crop_pad`` is given in native
    pixels and is scaled with the stored image size.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    native = images.shape[-1]
    n, c = images.shape[:2]
    out_size: int | None = None
    if image_size != native:
        if n * c * image_size * image_size * 4 <= RESIZE_ONCE_MAX_BYTES:
            images = resize_images(images, image_size)
        else:
            out_size = image_size
    images = (images - mean_t) / std_t
    stored = images.shape[-1]
    pad = max(1, round(crop_pad * stored / native)) if crop_pad > 0 else 0
    fill = (0.0 - mean_t.flatten()) / std_t.flatten()
    return TensorImageDataset(
        images.contiguous(), labels, crop_pad=pad, hflip=hflip, fill=fill, out_size=out_size
    )


class ResumableTraining:
    """Mixin for a `LightningDataModule` whose training sampler is a `ResumableSampler` given
    `samples_done=self.samples_done_this_epoch`: the position in the epoch travels in every
    checkpoint (the data module's state), and a fit resumed mid-epoch skips what it trained."""

    _resume_position: dict[str, Any] | None = None
    trainer: pl.Trainer | None

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its epoch (saved in every checkpoint by Lightning)."""
        return train_position(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember the saved position, for the first training epoch after a resume."""
        self._resume_position = dict(state_dict)

    def samples_done_this_epoch(self) -> tuple[int, int] | None:
        """`(epoch, samples per process already trained)` of the checkpoint a fit resumed
        from, once (None otherwise). Lightning restores its progress counters but does not
        fast-forward a plain DataLoader."""
        position, self._resume_position = self._resume_position, None
        if not position:
            return None
        return int(position["epoch"]), int(position["batches"]) * int(self.batch_size)


class VisionDataModule(ResumableTraining, pl.LightningDataModule):
    """Base for image-classification data modules yielding ``(images, labels)`` batches.

    Batches are ``(float32 [B, C, H, W], int64 [B])``. ``batch_size`` is PER DEVICE:
    under DDP the global batch is ``batch_size x devices x num_nodes``.
    ``num_classes``, ``in_channels`` and ``image_size`` are set by the constructor,
    before any data is read. ``check()`` cheaply verifies the files exist (raising
    ``DataNotFoundError`` with a one-line fix) and ``setup()`` calls it first.
    Validation/test loaders use ``eval_sampler`` so metrics are exact under DDP.

    Subclasses set ``num_classes``/``in_channels``, and implement ``check``,
    ``_make_train_val`` and ``_make_test``.

    Args:
        root: directory holding the data set's files.
        batch_size: training batch size per device.
        eval_batch_size: validation/test batch size per device (default: batch_size).
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seed for the validation split and subsets (0 is valid).
        image_size: side length of the square images produced.
        drop_last: drop the last incomplete training batch.
        pin_memory: pin host memory for faster GPU transfer (default: CUDA available).
        limit_train / limit_val / limit_test: keep a seeded random subset of at most
            this many samples of the split (``None`` = all), for quick runs.
        name: the data set's short name (``data.name``), which names the runs trained on it.
    """

    num_classes: int
    in_channels: int

    def __init__(
        self,
        root: str = "",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        image_size: int = 32,
        drop_last: bool = True,
        pin_memory: bool | None = None,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("image_size", image_size)):
            positive_int(value, f"data.{name}")
        positive_int(eval_batch_size, "data.eval_batch_size", optional=True)
        non_negative_int(num_workers, "data.num_workers")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"data.seed must be an integer, got {seed!r}")
        self.root = str(root) if root is not None else ""
        self.name = None if name is None else str(name)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.image_size = image_size
        self.drop_last = bool(drop_last)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.limit_train = positive_int(limit_train, "data.limit_train", optional=True)
        self.limit_val = positive_int(limit_val, "data.limit_val", optional=True)
        self.limit_test = positive_int(limit_test, "data.limit_test", optional=True)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- to implement -----------------------------------------------------------
    def check(self) -> None:
        """Raise ``DataNotFoundError`` (one line: missing path and fix) if files are absent."""
        raise NotImplementedError

    def _make_train_val(self, train_augment: bool = True) -> tuple[Dataset, Dataset]:
        """(train, val) datasets; `train_augment=False` gives the train split eval transforms."""
        raise NotImplementedError

    def _make_test(self) -> Dataset:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------
    def subset_indices(self, n: int, limit: int | None, stream: int) -> Tensor:
        """Indices of a seeded random subset of ``range(n)`` of size ``min(n, limit)``.

        Returns ``arange(n)`` when ``limit`` is ``None`` or not smaller than ``n``.
        """
        if limit is None or limit >= n:
            return torch.arange(n)
        return seeded_permutation(n, self.seed, stream)[:limit].sort().values

    def held_out_split(self, n: int, val_size: int) -> tuple[Tensor, Tensor]:
        """Seeded split of ``range(n)`` into sorted (train, val) indices, ``val_size`` held out.

        ``limit_train``/``limit_val`` are then applied as seeded subsets. The split
        depends only on ``seed``, ``n`` and ``val_size``, never on the limits.
        """
        if val_size >= n:
            raise ConfigError(
                f"data.val_size={val_size} must be smaller than the {n} training images"
            )
        perm = seeded_permutation(n, self.seed, SPLIT_STREAM)
        val_idx = perm[:val_size].sort().values
        train_idx = perm[val_size:].sort().values
        train_idx = train_idx[self.subset_indices(len(train_idx), self.limit_train, TRAIN_STREAM)]
        val_idx = val_idx[self.subset_indices(len(val_idx), self.limit_val, VAL_STREAM)]
        return train_idx, val_idx

    def database_set(self) -> Dataset:
        """The training split with evaluation transforms: the retrieval database of `mrl-eval`."""
        self.check()
        return self._make_train_val(train_augment=False)[0]

    def setup(self, stage: str | None = None) -> None:
        """Check the files, then build the splits ``stage`` needs (all if ``None``)."""
        self.check()
        if stage in (None, "fit", "validate") and (self.train_set is None or self.val_set is None):
            self.train_set, self.val_set = self._make_train_val()
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._make_test()

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled training loader (``drop_last`` as configured)."""
        if self.train_set is None:
            self.setup("fit")
        if self.drop_last and len(self.train_set) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} exceeds the {len(self.train_set)} training "
                "samples, so drop_last would leave no batch: lower data.batch_size"
            )
        return DataLoader(
            SeededSamples(self.train_set),
            batch_size=self.batch_size,
            sampler=train_sampler(
                self.train_set, self.seed, self.samples_done_this_epoch, per_sample_seeds=True
            ),
            drop_last=self.drop_last,
            generator=loader_generator(self.seed),
            **self._loader_kwargs(),
        )

    def eval_dataloader(self, dataset: Dataset) -> DataLoader:
        """Sequential loader over ``dataset``; unpadded DistributedSampler under DDP."""
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            drop_last=False,
            sampler=eval_sampler(dataset),
            generator=loader_generator(self.seed),
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation loader (exact under DDP)."""
        if self.val_set is None:
            self.setup("validate")
        return self.eval_dataloader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        """Test loader (exact under DDP)."""
        if self.test_set is None:
            self.setup("test")
        return self.eval_dataloader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self.test_dataloader()


class InMemoryDataModule(VisionDataModule):
    """Data sets decoded once into memory: a seeded validation split held out of the training
    images, tensor augmentation (random crop with `crop_pad` px padding, optional flip).

    Subclasses set `mean`/`std` (per channel), `crop_pad`, `hflip`, `num_classes`,
    `in_channels`, and implement `check` and `_load(train) -> (images in [0, 1] [N,C,H,W],
    labels [N])`.

    Args:
        val_size: training images held out for validation (seeded).
        augment: augment the training split.
        Other arguments: see `VisionDataModule`.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop_pad: int = 0
    hflip: bool = False

    def __init__(self, val_size: int = 5000, augment: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.val_size = positive_int(val_size, "data.val_size")
        self.augment = bool(augment)
        # Indices into the training file, set by setup().
        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _dataset(self, x: Tensor, y: Tensor, train: bool) -> Dataset:
        aug = train and self.augment
        return make_tensor_dataset(
            x,
            y,
            mean=self.mean,
            std=self.std,
            image_size=self.image_size,
            crop_pad=self.crop_pad if aug else 0,
            hflip=aug and self.hflip,
        )

    def _make_train_val(self, train_augment: bool = True) -> tuple[Dataset, Dataset]:
        x, y = self._load(train=True)
        train_idx, val_idx = self.held_out_split(x.shape[0], self.val_size)
        self.train_indices, self.val_indices = train_idx, val_idx
        return (
            self._dataset(x[train_idx], y[train_idx], train=train_augment),
            self._dataset(x[val_idx], y[val_idx], train=False),
        )

    def _make_test(self) -> Dataset:
        x, y = self._load(train=False)
        idx = self.subset_indices(x.shape[0], self.limit_test, TEST_STREAM)
        return self._dataset(x[idx], y[idx], train=False)
