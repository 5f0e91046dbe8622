"""`load`: a trained Matryoshka model behind `encode` and `classify`, for any checkpoint.

`load(path)` takes a run folder or checkpoint of `mrl-train` (images) or `mrl-train-text` (the
contrastive and classification tasks), rebuilt by `mrl.saved.load_saved` (which also converts the
authors' released ResNet-50 checkpoints, by `mrl.saved.official`). `encode` returns the
first `dim` coordinates of the representation, unit-normalised after the truncation (what
sentence-transformers' `truncate_dim` would give if it normalised last); `classify` reads the
nested head of that dim. Inputs whose prefix is all zero (a zero vector, whatever
`normalize`) are counted in a `ZeroPrefixWarning`. Images go through the run's evaluation
transform; the authors' checkpoints use the ImageNet one of `conf/data/imagenet.yaml`. Bad input
is a `ConfigError` whose one line names the problem and the fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrl.core.errors import ConfigError
from mrl.core.heads import MRLHead
from mrl.core.nesting import zero_prefix_counts
from mrl.export.graphs import truncate_and_normalise
from mrl.saved import SavedModel, check_dims, load_saved
from mrl.saved.text_eval import text_eval_options

# Inputs longer than one batch show a progress bar unless told otherwise.
DEFAULT_BATCH_SIZE = 32
# Text is encoded in chunks of this many batches, each sorted by length inside.
TEXT_CHUNK_BATCHES = 8


class ZeroPrefixWarning(UserWarning):
    """Some inputs' prefix at the requested dim is all zero: their embeddings are zero vectors."""


def zero_prefix_message(count: int, total: int, dim: int) -> str:
    """The one line that says how many of `total` inputs have an all-zero prefix at `dim`."""
    return (
        f"{count} of {total} inputs ({100 * count / total:.3g}%) have an all-zero prefix at "
        f"dim {dim}: their embeddings are zero vectors"
    )


def warn_zero_prefixes(prefixes: Tensor, dim: int) -> None:
    """Warn (`ZeroPrefixWarning`, pointing at the caller of `encode`) when any row of
    `prefixes` `(N, dim)` is all zero."""
    count = zero_prefix_counts(prefixes.detach().cpu().numpy(), [dim])[dim]
    if count:
        warnings.warn(
            zero_prefix_message(count, len(prefixes), dim), ZeroPrefixWarning, stacklevel=3
        )


class MatryoshkaModel:
    """A trained encoder (and nested head, if any) in eval mode.

    `dims` are the trained nesting dims, ascending; `width` is the representation's size;
    `kind` is `image` or `text`; `head` is the `MRLHead` or None.
    """

    def __init__(self, source: SavedModel) -> None:
        self.source = source
        self.kind = source.kind
        self.dims: tuple[int, ...] = tuple(int(m) for m in source.nesting)
        self.width = int(source.width)
        self.encoder = source.encoder.eval()
        self.head: MRLHead | None = source.head.eval() if source.head is not None else None
        self.tokenizer = source.tokenizer
        self.device = torch.device("cpu")

    def __repr__(self) -> str:
        head = "no head" if self.head is None else f"{self.head.method} head"
        return (
            f"MatryoshkaModel({self.kind}, dims={list(self.dims)}, width={self.width}, {head}, "
            f"checkpoint={self.source.checkpoint})"
        )

    def to(self, device: str | torch.device) -> MatryoshkaModel:
        """Move the encoder and head to `device`; returns self."""
        self.device = torch.device(device)
        self.encoder.to(self.device)
        if self.head is not None:
            self.head.to(self.device)
        return self

    def _dim(self, dim: int | None) -> int:
        return self.dims[-1] if dim is None else check_dims(self.source, [dim])[0]

    def encode(
        self,
        inputs: Any,
        dim: int | None = None,
        normalize: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device | None = None,
        progress: bool | None = None,
        role: str | None = None,
    ) -> Tensor:
        """Embeddings `(N, dim)` (float32, on the CPU) of `inputs`: the first `dim` coordinates
        of the representation (default: the largest trained dim), unit L2 norm when
        `normalize`.

        Images: a tensor or numpy array `(N, C, H, W)` (uint8, or float in the data's value
        range), or a list of PIL images or image paths. Texts: a list of strings; `role`
        ("query" or "document") puts the run's prompt for that side before each text and cuts
        it at that side's length, as training did (`prompts`; None: the texts as given).
        `progress=None` shows a bar when the inputs span more than one batch. Inputs whose
        first `dim` coordinates are all zero are returned as zero vectors, and counted in a
        `ZeroPrefixWarning`.
        """
        dim = self._dim(dim)
        z = self._represent(inputs, batch_size, device, progress, role)[:, :dim]
        warn_zero_prefixes(z, dim)
        return truncate_and_normalise(z, dim) if normalize else z

    def classify(
        self,
        inputs: Any,
        dim: int | None = None,
        logits: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device | None = None,
        progress: bool | None = None,
    ) -> Tensor:
        """Predicted classes `(N,)`, or with `logits` the logits `(N, C)`, of the nested head
        at `dim` (default: its largest dim); `inputs` as for `encode`."""
        if self.head is None:
            raise ConfigError(
                f"the model has no classification head (a {self.source.task} run): use "
                f"encode, or load a classification run"
            )
        heads = list(self.head.nesting)
        dim = heads[-1] if dim is None else self._dim(dim)
        if dim not in heads:
            raise ConfigError(
                f"dim {dim} has no classifier: the head's dims are {heads}; choose one of them"
            )
        z = self._represent(inputs, batch_size, device, progress)
        with torch.inference_mode():
            out = self.head(z.to(self.device))[heads.index(dim)].float().cpu()
        return out if logits else out.argmax(dim=-1)

    @property
    def prompts(self) -> dict[str, str]:
        """The text run's prompt by role (`query`, `document`); empty for other runs."""
        return text_eval_options(self.source.config)[0] if self.kind == "text" else {}

    def _represent(
        self,
        inputs: Any,
        batch_size: int,
        device: str | torch.device | None,
        progress: bool | None,
        role: str | None = None,
    ) -> Tensor:
        """The full representations `(N, width)` of `inputs`, on the CPU."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        if role is not None and (self.kind != "text" or role not in ("query", "document")):
            raise ConfigError(
                f"role={role!r}: a text model's role is 'query' or 'document' (None for images)"
            )
        if device is not None:
            self.to(device)
        self.encoder.eval()
        if self.kind == "text":
            return self._represent_texts(inputs, batch_size, progress, role)
        return self._represent_images(inputs, batch_size, progress)

    def _represent_texts(
        self, texts: Any, batch_size: int, progress: bool | None, role: str | None
    ) -> Tensor:
        from mrl.text.encoders import encode_texts

        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ConfigError(
                f"a text model encodes a list of strings, got {type(texts).__name__}: pass "
                f"[text, ...]"
            )
        if not all(isinstance(t, str) for t in texts):
            raise ConfigError("a text model encodes a list of strings: every item must be a str")
        prompts, lengths = text_eval_options(self.source.config)
        prompt = prompts.get(role) or "" if role else ""
        max_length = lengths.get(role) if role else None
        chunk = batch_size * TEXT_CHUNK_BATCHES
        out = []
        with torch.inference_mode(), _bar(len(texts), batch_size, progress) as bar:
            for start in range(0, len(texts), chunk):
                part = [prompt + t for t in texts[start : start + chunk]]
                out.append(torch.from_numpy(encode_texts(
                    self.encoder, self.tokenizer, part, batch_size=batch_size,
                    max_length=max_length, device=self.device,
                )))  # fmt: skip
                bar.update(len(part))
        return torch.cat(out) if out else torch.empty(0, self.width)

    def _represent_images(self, images: Any, batch_size: int, progress: bool | None) -> Tensor:
        preprocess = ImagePreprocess(self.source)
        batches = preprocess.batches(images, batch_size)
        out = []
        with torch.inference_mode(), _bar(preprocess.count(images), batch_size, progress) as bar:
            for x in batches:
                out.append(self.encoder(x.to(self.device)).float().cpu())
                bar.update(len(x))
        return torch.cat(out) if out else torch.empty(0, self.width)


class _NoBar:
    def update(self, n: int) -> None:
        pass


class _bar:
    """A tqdm bar over `total` inputs when `progress` (None: when they span several batches)."""

    def __init__(self, total: int, batch_size: int, progress: bool | None) -> None:
        self.show = total > batch_size if progress is None else bool(progress)
        self.total = total

    def __enter__(self) -> Any:
        if not self.show:
            return _NoBar()
        from tqdm.auto import tqdm

        self._tqdm = tqdm(total=self.total, desc="encoding", unit="input")
        return self._tqdm

    def __exit__(self, *exc: Any) -> None:
        if self.show:
            self._tqdm.close()


class ImagePreprocess:
    """The evaluation transform of an image model's data: PIL images and paths as its eval
    transform reads them; tensors `(N, C, H, W)` in the data's value range (uint8 = /255)
    resized and normalised the same way."""

    def __init__(self, source: SavedModel) -> None:
        from mrl.data.imagefolder import ImageFolderDataModule

        self.image = source.image
        self.datamodule = source.datamodule
        self.folder = isinstance(self.datamodule, ImageFolderDataModule)

    def count(self, images: Any) -> int:
        return len(images) if hasattr(images, "__len__") else 0

    def batches(self, images: Any, batch_size: int) -> Iterator[Tensor]:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if isinstance(images, Tensor):
            self._check_tensor(images)
            return (
                self.tensor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
            )
        if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
            raise ConfigError(
                f"an image model encodes a tensor or array (N, C, H, W) or a list of PIL images "
                f"or paths, got {type(images).__name__}: wrap a single image in a list"
            )
        return (self.pil(images[i : i + batch_size]) for i in range(0, len(images), batch_size))

    def _check_tensor(self, x: Tensor) -> None:
        channels = self.image.channels
        if x.ndim != 4 or x.shape[1] != channels:
            raise ConfigError(
                f"images of shape {tuple(x.shape)}: the model takes (N, {channels}, H, W); add the "
                f"batch axis or convert to {channels} channel(s)"
            )

    def tensor(self, x: Tensor) -> Tensor:
        """A batch `(N, C, H, W)` in the data's range, resized and normalised for the model."""
        import torchvision.transforms.functional as TF

        from mrl.data.base import resize_images

        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if self.folder:
            dm = self.datamodule
            x = TF.center_crop(TF.resize(x, [dm.eval_resize], antialias=True), [dm.eval_crop] * 2)
        else:
            x = resize_images(x, self.image.side)
        if self.image.mean is None:
            return x
        mean = torch.tensor(self.image.mean).view(1, -1, 1, 1)
        return (x - mean) / torch.tensor(self.image.std).view(1, -1, 1, 1)

    def pil(self, items: Sequence[Any]) -> Tensor:
        """A batch of PIL images or paths through the data's evaluation transform."""
        import torchvision.transforms.functional as TF
        from PIL import Image

        mode = "L" if self.image.channels == 1 else "RGB"
        pictures = []
        for item in items:
            if isinstance(item, (str, Path)):
                try:
                    with Image.open(item) as opened:
                        item = opened.convert(mode)
                except OSError as err:
                    raise ConfigError(f"cannot read image {item}: {err}; give image files") from err
            if not isinstance(item, Image.Image):
                raise ConfigError(
                    f"a list of images holds a {type(item).__name__}: give PIL images or paths"
                )
            pictures.append(item.convert(mode))
        if self.folder:
            transform = self.datamodule.eval_transform()
            return torch.stack([transform(p) for p in pictures])
        return self.tensor(torch.stack([TF.to_tensor(p) for p in pictures]))


def load(
    path: str | Path, nesting: Sequence[int] | None = None, method: str | None = None
) -> MatryoshkaModel:
    """The model of a run folder or checkpoint (`mrl-train`, `mrl-train-text`, or the authors'
    released ResNet-50), on the CPU in eval mode.

    `nesting` and `method` apply to the authors' checkpoints only (see
    `mrl.saved.official.convert_official_state_dict`; `method="mrl_e"` for their older MRL-E
    files).
    """
    return MatryoshkaModel(load_saved(path, nesting=nesting, method=method, purpose="load"))
