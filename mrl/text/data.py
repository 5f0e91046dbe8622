"""Lightning data modules of the text tasks, and the collate functions that tokenize.

- `WordNetPairsDataModule`: training batches of (definition, lemma) pairs for the contrastive
  loss, anchors and positives tokenized apart (each padded to its own longest text);
  validation/test use two loaders, the reverse-dictionary queries then
  the database of the split (see `mrl.text.wordnet.reverse_dictionary`), `(features, synset)`.
- `WordNetCategoriesDataModule`: `(tokenized definitions, category)` batches; `num_classes` is the
  number of lexicographer categories of the parts of speech (26 for nouns).
- `SyntheticCaptionsDataModule`: tiny seeded image-caption pairs for the dual encoder's smoke
  tests (class-prototype images from `mrl.data.SyntheticDataModule`, captions from a template);
  it makes no claim about accuracy.

Splits are by synset (`split_synsets`: seeded, disjoint, independent of the limits); the
`limit_*` options then keep a seeded subset of each split's synsets for quick runs. Tokenizers
come from the encoder's model path; nothing is fetched from a hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mrl.core.errors import ConfigError
from mrl.core.validate import non_negative_int, positive_int
from mrl.data.base import (
    ResumableSampler,
    ResumableTraining,
    SeededSamples,
    eval_sampler,
    loader_generator,
    train_sampler,
)
from mrl.data.synthetic import SyntheticDataModule
from mrl.text.encoders import load_tokenizer, tokenize
from mrl.text.wordnet import (
    DEFAULT_ROOT,
    Synset,
    categories,
    category_task,
    check_wordnet,
    load_synsets,
    reverse_dictionary,
    seeded_subset,
    split_synsets,
)

# Independent seeded streams of one seed: which synsets each split's limit keeps.
_LIMIT_STREAMS = {"train": 1, "val": 2, "test": 3}
PairMode = Literal["sample", "all"]


class TextCollator:
    """Tokenizes the texts of a batch (padding to the batch's longest, at most `max_length`)."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return tokenize(self.tokenizer, texts, self.max_length)


class PairCollator(TextCollator):
    """`(anchor, positive)` items -> `{"anchors": ..., "positives": ...}`, each side tokenized
    and padded to its own longest text (a definition is much longer than its lemma, so one
    padded batch of both would spend most of the positives' tokens on padding)."""

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:  # type: ignore[override]
        anchors, positives = zip(*pairs)
        return {"anchors": super().__call__(anchors), "positives": super().__call__(positives)}


class LabelledCollator(TextCollator):
    """`(text, label)` items -> `(features, labels)`, the batch layout of `MRLClassifier`."""

    def __call__(self, items: Sequence[tuple[str, int]]) -> tuple[dict, Tensor]:  # type: ignore[override]
        texts, labels = zip(*items)
        return super().__call__(texts), torch.tensor(labels, dtype=torch.long)


class ListDataset(Dataset):
    """A dataset over a list of ready items."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def retrieval_datasets(synsets: list[Synset]) -> tuple[ListDataset, ListDataset]:
    """The reverse-dictionary queries and database of `synsets` as `(text, synset index)` items,
    each sorted by text length (batches of similar lengths waste little compute on padding)."""
    rd = reverse_dictionary(synsets)
    queries = sorted(zip(rd.queries, rd.query_labels.tolist()), key=lambda x: len(x[0]))
    database = sorted(zip(rd.database, rd.database_labels.tolist()), key=lambda x: len(x[0]))
    return ListDataset(queries), ListDataset(database)


class SynsetPairs(Dataset):
    """(definition, lemma) training pairs of some synsets.

    `mode="sample"`: one pair per synset per epoch, its lemma drawn from `(seed, epoch, index)`,
    so no two pairs of a batch share a definition (which would be a false negative). Indexed by
    the `(index, epoch)` tuples of `PairSampler`. `mode="all"`: every (synset, lemma) pair,
    indexed by int.
    """

    def __init__(self, synsets: list[Synset], mode: PairMode = "sample", seed: int = 0) -> None:
        if mode not in ("sample", "all"):
            raise ConfigError(f"data.pairs={mode!r} is not one of ['sample', 'all']")
        self.synsets, self.mode, self.seed = list(synsets), mode, int(seed)
        self.pairs = (
            [(s.definition, lemma) for s in self.synsets for lemma in s.lemmas]
            if mode == "all"
            else None
        )

    def __len__(self) -> int:
        return len(self.synsets) if self.pairs is None else len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[str, str]:
        if self.pairs is not None:
            return self.pairs[key if isinstance(key, int) else key[0]]
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        synset = self.synsets[index]
        choice = np.random.default_rng((self.seed, epoch, index)).integers(len(synset.lemmas))
        return synset.definition, synset.lemmas[int(choice)]


class PairSampler(ResumableSampler):
    """A shuffling `DistributedSampler` that yields `(index, epoch)`, so the dataset can draw a
    new lemma per epoch. Lightning calls `set_epoch`, and leaves a `DistributedSampler` in place;
    a resumed fit skips what it already trained on (`ResumableSampler`)."""

    def __iter__(self):
        indices = list(super().__iter__())  # first: a resumed epoch sets `self.epoch`
        epoch = self.epoch
        return ((int(i), epoch) for i in indices)


def process_group() -> tuple[int, int]:
    """`(world size, rank)` of this process: `(1, 0)` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class WordNetDataModule(ResumableTraining, pl.LightningDataModule):
    """Shared set-up of the WordNet data modules: files, splits, limits, tokenizer, loaders.

    Args:
        root: directory of the WordNet 3.0 `data.*` files.
        pos: parts of speech to read (`n`, `v`, `a`, `r`).
        model_name_or_path: where the tokenizer is stored (`None` = bundled MiniLM).
        max_length: longest token sequence kept.
        batch_size: training batch size per device (pairs, for the contrastive task).
        eval_batch_size: texts per validation/test batch (default: batch_size).
        val_fraction / test_fraction: shares of the synsets held out for validation and test.
        limit_train / limit_val / limit_test: keep a seeded subset of at most this many synsets of
            the split (`None` = all).
        num_workers: DataLoader worker processes.
        seed: seed of the split and the subsets.
        drop_last: drop the last incomplete training batch (needed for equal batches under DDP).
    """

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        pos: Sequence[str] = ("n",),
        model_name_or_path: str | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        self.root = str(root)
        self.pos = tuple(pos)
        self.model_name_or_path = model_name_or_path
        self.max_length = positive_int(max_length, "data.max_length")
        self.batch_size = positive_int(batch_size, "data.batch_size")
        self.eval_batch_size = positive_int(
            eval_batch_size if eval_batch_size is not None else batch_size, "data.eval_batch_size"
        )
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.limits = {
            split: positive_int(value, f"data.limit_{split}", optional=True)
            for split, value in (("train", limit_train), ("val", limit_val), ("test", limit_test))
        }
        non_negative_int(num_workers, "data.num_workers")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"data.seed must be an integer, got {seed!r}")
        self.num_workers, self.seed, self.drop_last = num_workers, seed, bool(drop_last)
        categories(self.pos)  # validates pos before any file is read
        self._splits: dict[str, list[Synset]] | None = None
        self._tokenizer = None

    def check(self) -> None:
        """Raise `DataNotFoundError` (naming `apt-get install wordnet-base`) if files are absent."""
        check_wordnet(self.root, self.pos)

    @property
    def tokenizer(self):
        """The tokenizer of `model_name_or_path`, loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        return self._tokenizer

    def split(self, name: str) -> list[Synset]:
        """The synsets of split `train`, `val` or `test`, after its limit."""
        if self._splits is None:
            synsets = load_synsets(self.root, self.pos)
            full = split_synsets(synsets, self.val_fraction, self.test_fraction, self.seed)
            self._splits = {
                k: seeded_subset(v, self.limits[k], self.seed * 1_000_003 + _LIMIT_STREAMS[k])
                for k, v in full.items()
            }
        if not self._splits[name]:
            raise ConfigError(
                f"the {name} split has no synsets: raise data.{name}_fraction or data.limit_{name}"
                if name != "train"
                else "the train split has no synsets: lower data.val_fraction/test_fraction"
            )
        return self._splits[name]

    def setup(self, stage: str | None = None) -> None:
        """Check the files; splits are built lazily by `split`."""
        self.check()

    def _loader(self, dataset: Dataset, collate, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=collate,
            generator=loader_generator(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def _check_batch(self, n: int) -> None:
        if self.drop_last and n < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} exceeds the {n} training examples, so "
                f"drop_last would leave no batch: lower data.batch_size or raise data.limit_train"
            )


class WordNetPairsDataModule(WordNetDataModule):
    """(definition, lemma) pairs for contrastive training; reverse-dictionary evaluation.

    Args:
        pairs: `sample` (one pair per synset per epoch, lemma re-drawn each epoch) or `all`
            (every pair; a synset with several lemmas then gives several pairs, which may share
            a batch as false negatives).
        Other arguments: see `WordNetDataModule`.
    """

    def __init__(self, pairs: PairMode = "sample", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if pairs not in ("sample", "all"):
            raise ConfigError(f"data.pairs={pairs!r} is not one of ['sample', 'all']")
        self.pairs = pairs

    def train_dataset(self) -> SynsetPairs:
        """The training pairs."""
        return SynsetPairs(self.split("train"), self.pairs, self.seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled pair batches, `{"anchors": tokenized, "positives": tokenized}`."""
        dataset = self.train_dataset()
        self._check_batch(len(dataset))
        world, rank = process_group()
        sampler_cls = PairSampler if self.pairs == "sample" else ResumableSampler
        sampler = sampler_cls(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                              samples_done=self.samples_done_this_epoch)  # fmt: skip
        collate = PairCollator(self.tokenizer, self.max_length)
        return self._loader(
            dataset, collate, self.batch_size, sampler=sampler, drop_last=self.drop_last
        )

    def retrieval_dataloaders(self, split: str) -> list[DataLoader]:
        """Two loaders over `split`: the reverse-dictionary queries, then the database.

        Both are loaded in full on every process (the retrieval metrics need all rows; a
        one-replica `DistributedSampler` makes Lightning leave the loaders alone).
        """
        collate = LabelledCollator(self.tokenizer, self.max_length)
        loaders = []
        for dataset in retrieval_datasets(self.split(split)):
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
            loaders.append(self._loader(dataset, collate, self.eval_batch_size, sampler=sampler))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self.retrieval_dataloaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self.retrieval_dataloaders("test")


class WordNetCategoriesDataModule(WordNetDataModule):
    """Definition -> lexicographer category classification (`num_classes` categories).

    Batches are `(features, labels)`; the evaluation loaders are exact under DDP.
    Arguments: see `WordNetDataModule`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.categories = categories(self.pos)
        self.num_classes = len(self.categories)

    def dataset(self, split: str) -> ListDataset:
        """`(definition, category index)` items of a split."""
        texts, labels = category_task(self.split(split), self.pos)
        return ListDataset(list(zip(texts, labels.tolist())))

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        self._check_batch(len(dataset))
        world, rank = process_group()
        sampler = ResumableSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
            samples_done=self.samples_done_this_epoch,
        )  # fmt: skip
        collate = LabelledCollator(self.tokenizer, self.max_length)
        return self._loader(
            dataset, collate, self.batch_size, sampler=sampler, drop_last=self.drop_last
        )

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        collate = LabelledCollator(self.tokenizer, self.max_length)
        return self._loader(dataset, collate, self.eval_batch_size, sampler=eval_sampler(dataset))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class CaptionedImages(Dataset):
    """`(image, caption, label)` items: an image dataset's items with their class caption."""

    def __init__(self, images: Dataset, captions: Sequence[str]) -> None:
        self.images, self.captions = images, list(captions)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, str, int]:
        image, label = self.images[index]
        return image, self.captions[int(label)], int(label)


class CaptionCollator:
    """Stacks images, tokenizes captions: `{"images", "features", "labels"}`."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: Sequence[tuple[Tensor, str, int]]) -> dict[str, Any]:
        images, captions, labels = zip(*items)
        return {
            "images": torch.stack(images),
            "features": tokenize(self.tokenizer, captions, self.max_length),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


class SyntheticCaptionsDataModule(ResumableTraining, pl.LightningDataModule):
    """Seeded synthetic images (see `SyntheticDataModule`) paired with `template.format(label=k)`.

    Args:
        template: caption of class k, e.g. `"a photo of class {label}"`.
        model_name_or_path: where the tokenizer is stored (`None` = bundled MiniLM).
        max_length: longest caption in tokens.
        batch_size / eval_batch_size / num_workers / seed: as for the image data modules.
        Other arguments: passed to `SyntheticDataModule` (num_classes, in_channels, image_size,
        num_train, num_val, num_test, noise).
    """

    def __init__(
        self,
        template: str = "a photo of class {label}",
        model_name_or_path: str | None = None,
        max_length: int = 32,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        **image_kwargs: Any,
    ) -> None:
        super().__init__()
        if "{label}" not in template:
            raise ConfigError(f"data.template={template!r} must contain {{label}}")
        self.images = SyntheticDataModule(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            **image_kwargs,
        )
        self.num_classes, self.in_channels = self.images.num_classes, self.images.in_channels
        self.captions = [template.format(label=k) for k in range(self.num_classes)]
        self.model_name_or_path, self.max_length = model_name_or_path, max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self._tokenizer = None

    def check(self) -> None:
        """Nothing to check: the data are generated."""

    @property
    def tokenizer(self):
        """The caption tokenizer, loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        return self._tokenizer

    def class_caption_features(self) -> dict[str, Tensor]:
        """The tokenized caption of every class, row k = class k."""
        return tokenize(self.tokenizer, self.captions, self.max_length)

    def setup(self, stage: str | None = None) -> None:
        self.images.setup(stage)

    def _loader(self, images: Dataset, train: bool) -> DataLoader:
        dataset = CaptionedImages(images, self.captions)
        sampler = (
            train_sampler(dataset, self.seed, self.samples_done_this_epoch, per_sample_seeds=True)
            if train
            else eval_sampler(dataset)
        )
        return DataLoader(
            SeededSamples(dataset) if train else dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=loader_generator(self.seed),
            drop_last=train,
            collate_fn=CaptionCollator(self.tokenizer, self.max_length),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        self.images.setup("fit")
        return self._loader(self.images.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.images.setup("validate")
        return self._loader(self.images.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.images.setup("test")
        return self._loader(self.images.test_set, train=False)
