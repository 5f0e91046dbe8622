"""Extra ImageFolder test sets (ImageNet-V2, -Sketch, -A, -R) and class-subset scoring.

ImageNet-V2 and ImageNet-Sketch cover all 1000 ImageNet classes; ImageNet-A and -R cover
a 200-class SUBSET. ``ImageFolderTestSet`` reads such a folder with the usual evaluation
transforms and labels every image with its ORIGINAL logit index (folder ``i`` in sorted
order maps to ``class_subset[i]``). The paper's protocol for the subset sets scores a
model only among the subset's logits: ``restrict_logits`` keeps those columns,
``subset_targets`` maps labels to positions in the subset, and ``subset_accuracy``
combines both. ``class_subset_from_file`` reads a subset from a ``.txt`` or ``.json``
file, and ``check_subset`` validates it against a model's number of classes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torchvision import transforms as T

from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD


def _read_wnids(all_wnids: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    if isinstance(all_wnids, (str, os.PathLike)):
        return [w for w in Path(all_wnids).read_text().split() if w]
    return [str(w) for w in all_wnids]


def class_subset_from_file(
    path: str | os.PathLike[str],
    all_wnids: str | os.PathLike[str] | Sequence[str] | None = None,
) -> list[int]:
    """Read a class subset: the logit index of each class folder, in sorted folder order.

    Supported files:

    - ``.json``: an object ``{"folder_name": logit_index, ...}``; the result lists the
      indices in sorted folder-name order (the order ImageFolder assigns).
    - any other suffix (``.txt``): one entry per line, blank lines and ``#`` comments
      ignored. Integers are logit indices, listed in sorted folder order. Otherwise the
      lines are WordNet ids (e.g. ``n01498041``) resolved to their position in
      ``all_wnids`` (a list, or a file with one wnid per line, ordered like the model's
      logits, i.e. sorted for ImageNet-1k); they are sorted first, like the folders.

    Raises:
        DataNotFoundError: if the file does not exist.
        ConfigError: for a malformed file, wnids without ``all_wnids``, or a wnid that is
            not in ``all_wnids``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"class-subset file not found: {path}")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in data.values()
        ):
            raise ConfigError(f"{path}: expected a JSON object {{folder_name: logit_index}}")
        return [data[k] for k in sorted(data)]
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    entries = [ln for ln in lines if ln]
    if not entries:
        raise ConfigError(f"{path}: no class entries (one logit index or wnid per line)")
    try:
        return [int(e) for e in entries]
    except ValueError:
        pass
    if all_wnids is None:
        raise ConfigError(
            f"{path} lists class names (e.g. {entries[0]!r}), not logit indices: pass "
            "all_wnids=<the model's classes in logit order> to resolve them"
        )
    position = {w: i for i, w in enumerate(_read_wnids(all_wnids))}
    unknown = [e for e in entries if e not in position]
    if unknown:
        raise ConfigError(f"{path}: {len(unknown)} names not in all_wnids, e.g. {unknown[:3]}")
    return [position[e] for e in sorted(entries)]


def check_subset(class_subset: Sequence[int], num_classes: int) -> list[int]:
    """Validate ``class_subset`` against a model with ``num_classes`` logits; return it as a list.

    Raises:
        ConfigError: naming the first entry that is not an integer in ``[0, num_classes)``,
            or a repeated entry.
    """
    subset = list(class_subset)
    if not subset:
        raise ConfigError("class_subset is empty")
    seen: set[int] = set()
    for pos, idx in enumerate(subset):
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise ConfigError(f"class_subset[{pos}] = {idx!r} is not an integer logit index")
        if not 0 <= idx < num_classes:
            raise ConfigError(
                f"class_subset[{pos}] = {idx} is out of range for a model with {num_classes} "
                f"classes (valid: 0..{num_classes - 1})"
            )
        if idx in seen:
            raise ConfigError(f"class_subset[{pos}] = {idx} appears more than once")
        seen.add(idx)
    return subset


def _class_folders(root: Path) -> list[str]:
    # The rule torchvision's find_classes uses, so positions match ImageFolder's.
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir())


def eval_transform(resize: int = 256, crop: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Resize(resize) + CenterCrop(crop) + ToTensor + Normalize(mean, std), as in the paper."""
    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)])


class ImageFolderTestSet(torchvision.datasets.ImageFolder):
    """An evaluation ImageFolder whose labels are the model's logit indices.

    Labels (also in ``targets`` and ``class_to_idx``) are:

    - with ``class_subset`` a sequence: ``class_subset[i]`` for the ``i``-th class folder in
      sorted order (ImageNet-A/R: 200 folders, indices into the 1000 ImageNet logits);
    - with ``class_subset`` a mapping ``{folder_name: logit_index}``: looked up by name, and
      every folder must be in it (stored as a sequence in sorted folder order);
    - with ``class_subset=None``: the folder's position in sorted order, except that when
      every folder name is a non-negative integer (ImageNet-V2's ``0``..``999``) the label
      is that integer, since sorting the names as strings would scramble them.

    ``self.class_subset`` holds the label of each folder in sorted order.

    Args:
        root: directory with one sub-folder per class.
        class_subset: see above.
        resize, crop, mean, std: the evaluation transform (``eval_transform``).
        num_classes: the model's number of logits; when given, every label is checked to
            lie below it, and with ``class_subset=None`` the folder count must equal it.

    Raises:
        DataNotFoundError: if ``root`` or its class folders / images are missing.
        ConfigError: if the number of class folders differs from ``len(class_subset)``,
            a mapping misses a folder, or a label is out of range for ``num_classes``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        class_subset: Sequence[int] | Mapping[str, int] | None = None,
        resize: int = 256,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_classes: int | None = None,
    ) -> None:
        path = Path(root)
        if not path.is_dir():
            raise DataNotFoundError(f"test-set folder not found: {path}")
        folders = _class_folders(path)
        if not folders:
            raise DataNotFoundError(
                f"no class folders in {path}: need one sub-folder per class, e.g. "
                f"{path}/n01498041/*.jpg"
            )
        self.class_subset = self._labels(path, folders, class_subset)
        if num_classes is not None:
            check_subset(self.class_subset, num_classes)
            if class_subset is None and len(folders) != num_classes:
                raise ConfigError(
                    f"{path} has {len(folders)} class folders but the model has {num_classes} "
                    "classes: pass class_subset=<logit index of each folder> for a subset"
                )
        self._class_to_idx = dict(zip(folders, self.class_subset))
        try:
            super().__init__(str(path), transform=eval_transform(resize, crop, mean, std))
        except FileNotFoundError as err:
            raise DataNotFoundError(f"{path}: {err}") from err

    @staticmethod
    def _labels(
        path: Path, folders: list[str], class_subset: Sequence[int] | Mapping[str, int] | None
    ) -> list[int]:
        if class_subset is None:
            if all(f.isdecimal() for f in folders):
                return [int(f) for f in folders]
            return list(range(len(folders)))
        if isinstance(class_subset, Mapping):
            missing = [f for f in folders if f not in class_subset]
            if missing:
                raise ConfigError(
                    f"{path}: {len(missing)} class folders have no logit index in class_subset, "
                    f"e.g. {missing[:3]}"
                )
            return [int(class_subset[f]) for f in folders]
        subset = list(class_subset)
        if len(subset) != len(folders):
            raise ConfigError(
                f"{path} has {len(folders)} class folders but class_subset has {len(subset)} "
                "entries: give one logit index per class folder (in sorted folder order)"
            )
        return subset

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Class folders in sorted order, mapped to their logit indices (not 0..n-1)."""
        return list(self._class_to_idx), dict(self._class_to_idx)


def restrict_logits(logits: Tensor, class_subset: Sequence[int]) -> Tensor:
    """The columns ``class_subset`` of ``logits`` ``(..., C)``, in that order: ``(..., len)``."""
    index = torch.as_tensor(list(class_subset), dtype=torch.long, device=logits.device)
    if index.numel() and (index.min() < 0 or index.max() >= logits.shape[-1]):
        check_subset(index.tolist(), logits.shape[-1])  # raises, naming the bad entry
    return logits.index_select(-1, index)


def subset_targets(targets: Tensor, class_subset: Sequence[int]) -> Tensor:
    """Map labels given as logit indices to their positions in ``class_subset``.

    Raises:
        ValueError: if a label is not in ``class_subset``.
    """
    subset = torch.as_tensor(list(class_subset), dtype=torch.long, device=targets.device)
    match = targets.reshape(-1, 1) == subset.reshape(1, -1)
    found = match.any(dim=1)
    if not bool(found.all()):
        bad = targets.reshape(-1)[~found].unique()[:5].tolist()
        raise ValueError(f"labels {bad} are not in class_subset (of {len(subset)} classes)")
    return match.float().argmax(dim=1).reshape(targets.shape)


def subset_accuracy(
    logits: Tensor,
    targets: Tensor,
    class_subset: Sequence[int] | None,
    topk: Sequence[int] = (1, 5),
) -> dict[int, Tensor]:
    """Top-k accuracy among the logits of ``class_subset`` only (the ImageNet-A/R protocol).

    Args:
        logits: ``(..., B, C)``, e.g. ``MRLHead``'s ``(K, B, C)`` for K nesting dims.
        targets: ``(B,)`` labels as logit indices (what ``ImageFolderTestSet`` yields).
        class_subset: logit indices to compete; ``None`` scores among all ``C`` logits.
        topk: the k values; each must not exceed the number of competing classes.

    Returns:
        ``{k: accuracy}`` with accuracy a float tensor of shape ``logits.shape[:-2]``.
    """
    if class_subset is not None:
        logits = restrict_logits(logits, class_subset)
        targets = subset_targets(targets, class_subset)
    out: dict[int, Tensor] = {}
    for k in topk:
        if not 1 <= k <= logits.shape[-1]:
            raise ValueError(f"top-{k} accuracy needs 1 <= k <= {logits.shape[-1]} classes")
        top = logits.topk(k, dim=-1).indices
        hit = (top == targets.to(top.device).unsqueeze(-1)).any(dim=-1)
        out[k] = hit.float().mean(dim=-1)
    return out
