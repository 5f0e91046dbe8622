"""Loading the paper authors' released ImageNet ResNet-50 checkpoints (RAIVNLab/MRL).

Those checkpoints are torchvision ``resnet50`` state dicts, usually saved under DDP (a
``module.`` prefix), whose ``fc`` is one of:

- MRL (``MRL_Linear_Layer(efficient=False)``): ``fc.nesting_classifier_{i}.weight``
  ``(C, m_i)`` and ``.bias`` for each nesting dim ``m_i``; logits ``i`` read ``z[:, :m_i]``;
- MRL-E (``efficient=True``): only ``fc.nesting_classifier_0`` ``(C, m_K)``, whose first
  ``m`` columns serve dim ``m``. The repository's older MRL-E files store the same layer
  as a plain ``fc.weight``/``fc.bias`` (``SingleHeadNestedLinear``); that key set is the
  FF one, so pass ``method="mrl_e"`` for them;
- FF-m (``FixedFeatureLayer``): ``fc.weight`` ``(C, m)`` and ``fc.bias`` reading
  ``z[:, :m]`` of the 2048 features.

The released models were trained with FFCV's BlurPool: every strided convolution with at
least 16 input channels is wrapped so that it blurs its input first (keys
``<conv>.conv.weight`` and ``<conv>.blur_filter``). ``convert_official_state_dict`` detects
this and ``load_official_checkpoint`` applies the same wrapping to the encoder, so that
``head(encoder(x))`` computes exactly what the official model does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import models

from mrl.core.errors import ConfigError
from mrl.core.heads import METHODS, MRLHead
from mrl.core.nesting import validate_nesting
from mrl.encoders.blurpool import apply_blurpool, blur_filter
from mrl.encoders.resnet import ResNetEncoder, resnet

PAPER_NESTING: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
NUM_FEATURES = 2048

_NESTED_KEY = re.compile(r"^fc\.nesting_classifier_(\d+)\.(weight|bias)$")
_PLAIN_FC = {"fc.weight", "fc.bias"}
_LAYOUTS = (
    "expected a torchvision resnet50 state dict whose fc is either "
    "fc.nesting_classifier_{i}.weight/bias (MRL, MRL-E) or fc.weight/bias (FF)"
)


def _backbone_reference(blurpool: bool) -> dict[str, torch.Size]:
    # Built on the meta device: only key names and shapes are needed, not 25M initialised weights.
    with torch.device("meta"):
        net = models.resnet50(weights=None)
        if blurpool:
            apply_blurpool(net)
    return {k: v.shape for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    # DDP saves every key under "module."; the official loader drops the first 7 characters.
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _first(keys: Sequence[str] | set[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _fc_layout(fc_keys: set[str]) -> str:
    if not fc_keys:
        raise ConfigError(f"no fc.* keys in the state dict: {_LAYOUTS}")
    if fc_keys <= _PLAIN_FC:
        if "fc.weight" not in fc_keys:
            raise ConfigError(f"missing key fc.weight: {_LAYOUTS}")
        return "ff"
    nested = {k: _NESTED_KEY.match(k) for k in fc_keys}
    unexpected = {k for k, m in nested.items() if m is None}
    if unexpected:
        raise ConfigError(f"unexpected key(s) {_first(unexpected)}: {_LAYOUTS}")
    indices = sorted({int(m.group(1)) for m in nested.values()})
    if indices != list(range(len(indices))):
        raise ConfigError(
            f"fc.nesting_classifier_* indices are {indices}, expected 0..{len(indices) - 1}"
        )
    weights = {f"fc.nesting_classifier_{i}.weight" for i in indices}
    missing = weights - fc_keys
    if missing:
        raise ConfigError(f"missing key(s) {_first(missing)}: {_LAYOUTS}")
    biases = {k for k in fc_keys if k.endswith(".bias")}
    if biases and len(biases) != len(indices):
        missing = {k[: -len("weight")] + "bias" for k in weights} - biases
        raise ConfigError(f"missing key(s) {_first(missing)}: some classifiers have a bias")
    return "mrl_e" if len(indices) == 1 else "mrl"


def detect_official_layout(state_dict: Mapping[str, Any]) -> str:
    """The classifier layout of an official checkpoint: ``"mrl"``, ``"mrl_e"`` or ``"ff"``.

    A single ``fc.nesting_classifier_0`` is MRL-E; a plain ``fc.weight`` is FF (or an
    older MRL-E file, which only the caller can tell apart). A ``module.`` prefix is
    ignored.

    Raises:
        ConfigError: naming unexpected or missing ``fc`` keys.
    """
    keys = _strip_prefix(state_dict)
    return _fc_layout({k for k in keys if k.startswith("fc.")})


def _convert_backbone(backbone: dict[str, Any]) -> tuple[dict[str, Tensor], bool]:
    blurpool = any(k.endswith(".blur_filter") or k.endswith(".conv.weight") for k in backbone)
    reference = _backbone_reference(blurpool)
    unexpected = set(backbone) - set(reference)
    if unexpected:
        raise ConfigError(
            f"unexpected key(s) {_first(unexpected)}: {_LAYOUTS}"
            + (" with BlurPool-wrapped strided convolutions" if blurpool else "")
        )
    out: dict[str, Tensor] = {}
    missing = []
    for key, shape in reference.items():
        if key in backbone:
            value = backbone[key]
            if not isinstance(value, Tensor) or value.shape != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ConfigError(
                    f"{key} has shape {got}, a ResNet-50 needs {tuple(shape)}: not a ResNet-50 "
                    "checkpoint"
                )
            out["backbone." + key] = value
        elif key.endswith("num_batches_tracked"):
            # Unused in eval mode, and absent from checkpoints of older PyTorch versions.
            out["backbone." + key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith(".blur_filter"):
            # A constant that depends only on the channel count; recreate it.
            out["backbone." + key] = blur_filter(shape[0])
        else:
            missing.append(key)
    if missing:
        raise ConfigError(f"missing key(s) {_first(missing)}: {_LAYOUTS}")
    return out, blurpool


def convert_official_state_dict(
    state_dict: Mapping[str, Any],
    nesting: Sequence[int] | None = None,
    method: str | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """Split an official checkpoint into ``ResNetEncoder`` and ``MRLHead`` state dicts.

    Args:
        state_dict: the checkpoint's model state dict (``module.`` prefix allowed).
        nesting: the nesting dims. MRL: inferred from the classifiers' widths (must match
            if given). MRL-E: defaults to the paper's ``[8, 16, ..., 2048]`` (halving down to 8
            from the classifier width); any dims up to that width may be given. FF: ``[m]``
            with m the classifier width (must match if given).
        method: ``"mrl"``, ``"mrl_e"`` or ``"ff"`` to insist on a layout; needed only for
            older MRL-E files stored as a plain ``fc.weight`` (``method="mrl_e"``).

    Returns:
        ``(encoder_state, head_state, info)``: encoder keys start with ``backbone.``; head
        keys are ``linears.{i}.weight/bias`` (MRL, FF) or ``linear.weight/bias`` (MRL-E,
        zero-padded to 2048 columns if the classifier is narrower, which leaves every
        prefix's logits unchanged); ``info`` holds ``method``, ``nesting``, ``num_classes``,
        ``blurpool`` and ``bias``.

    Raises:
        ConfigError: naming unexpected or missing keys, wrong shapes, or a ``nesting`` /
            ``method`` that contradicts the checkpoint.
    """
    if method is not None and method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    flat = _strip_prefix(state_dict)
    fc = {k: v for k, v in flat.items() if k.startswith("fc.")}
    layout = _fc_layout(set(fc))
    if method is not None and method != layout and not (method == "mrl_e" and layout == "ff"):
        raise ConfigError(
            f"method={method!r} but the checkpoint's fc keys ({_first(fc)}) are the "
            f"{layout!r} layout"
        )
    encoder_state, blurpool = _convert_backbone(
        {k: v for k, v in flat.items() if not k.startswith("fc.")}
    )
    method = method or layout

    if layout == "mrl":
        n = len(fc) // (2 if "fc.nesting_classifier_0.bias" in fc else 1)
        weights = [fc[f"fc.nesting_classifier_{i}.weight"] for i in range(n)]
        biases = [fc.get(f"fc.nesting_classifier_{i}.bias") for i in range(n)]
    else:
        prefix = "fc.nesting_classifier_0." if layout == "mrl_e" else "fc."
        weights, biases = [fc[prefix + "weight"]], [fc.get(prefix + "bias")]
    num_classes = weights[0].shape[0]
    for w, b in zip(weights, biases):
        if w.ndim != 2 or w.shape[0] != num_classes or (b is not None and b.shape != w.shape[:1]):
            raise ConfigError(
                f"classifier shapes {[tuple(w.shape) for w in weights]} do not form a "
                f"{num_classes}-class {method} head"
            )
    widths = [int(w.shape[1]) for w in weights]
    has_bias = biases[0] is not None

    if max(widths) > NUM_FEATURES:
        raise ConfigError(
            f"classifier widths {widths} exceed the {NUM_FEATURES} ResNet-50 features"
        )
    try:
        if method == "mrl_e":
            width = widths[0]
            dims = validate_nesting(nesting if nesting is not None else _halving(width), width)
        else:
            dims = validate_nesting(widths, NUM_FEATURES)
    except ValueError as err:
        raise ConfigError(f"{method} checkpoint: {err}") from err
    if method != "mrl_e" and nesting is not None and tuple(nesting) != dims:
        raise ConfigError(
            f"nesting={list(nesting)} but the checkpoint's {method} classifiers read "
            f"{list(dims)} features"
        )

    head_state: dict[str, Tensor] = {}
    if method == "mrl_e":
        weight = weights[0]
        if weight.shape[1] < NUM_FEATURES:
            weight = torch.cat([weight, weight.new_zeros(num_classes, NUM_FEATURES - width)], 1)
        head_state["linear.weight"] = weight
        if has_bias:
            head_state["linear.bias"] = biases[0]
    else:
        for i, (w, b) in enumerate(zip(weights, biases)):
            head_state[f"linears.{i}.weight"] = w
            if b is not None:
                head_state[f"linears.{i}.bias"] = b
    info = {
        "method": method,
        "nesting": list(dims),
        "num_classes": int(num_classes),
        "blurpool": blurpool,
        "bias": has_bias,
    }
    return encoder_state, head_state, info


def to_official_state_dict(encoder: ResNetEncoder, head: MRLHead) -> dict[str, Tensor]:
    """The inverse of `convert_official_state_dict`: a framework ResNet-50 and its head as the
    authors' layout (torchvision keys, BlurPool keys kept; `fc.nesting_classifier_{i}` for MRL
    and MRL-E, `fc` for a single full-size or FF head), loadable by their code and by
    `load_official_checkpoint`."""
    state = {
        k.removeprefix("backbone."): v.detach().clone() for k, v in encoder.state_dict().items()
    }
    head_state = head.state_dict()
    if head.method == "mrl_e":
        state["fc.nesting_classifier_0.weight"] = head_state["linear.weight"].clone()
        if "linear.bias" in head_state:
            state["fc.nesting_classifier_0.bias"] = head_state["linear.bias"].clone()
    elif len(head.nesting) == 1:
        state["fc.weight"] = head_state["linears.0.weight"].clone()
        if "linears.0.bias" in head_state:
            state["fc.bias"] = head_state["linears.0.bias"].clone()
    else:
        for i in range(len(head.nesting)):
            state[f"fc.nesting_classifier_{i}.weight"] = head_state[f"linears.{i}.weight"].clone()
            if f"linears.{i}.bias" in head_state:
                state[f"fc.nesting_classifier_{i}.bias"] = head_state[f"linears.{i}.bias"].clone()
    return state


def _halving(width: int) -> list[int]:
    dims = [width]
    while dims[-1] % 2 == 0 and dims[-1] // 2 >= PAPER_NESTING[0]:
        dims.append(dims[-1] // 2)
    return dims[::-1]


def _load_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # any unpickling failure: not a plain weights file
        raise ConfigError(
            f"{path}: cannot be loaded with torch.load(weights_only=True) ({err}); load it "
            "yourself and pass the state dict"
        ) from err
    return state


def _unwrap(obj: Any) -> Mapping[str, Any]:
    for _ in range(2):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            for key in ("state_dict", "model"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
    if not isinstance(obj, Mapping):
        raise ConfigError(f"expected a state dict, got a {type(obj).__name__}")
    return obj


def load_official_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    nesting: Sequence[int] | None = None,
    method: str | None = None,
) -> tuple[ResNetEncoder, MRLHead, dict[str, Any]]:
    """Build an encoder and head holding an official ResNet-50 checkpoint, in eval mode.

    Args:
        path_or_state_dict: a file (loaded on CPU with ``weights_only=True``) or a state
            dict; ``{"state_dict": ...}`` and ``{"model": ...}`` wrappers are unwrapped.
        nesting, method: see ``convert_official_state_dict``.

    Returns:
        ``(encoder, head, info)`` with ``head(encoder(x))`` equal to the official model's
        logits stacked as ``(K, B, C)``; ``encoder`` is ``mrl.encoders.resnet(50)``, with
        BlurPool applied when the checkpoint has it.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        state = _unwrap(_load_file(path_or_state_dict))
    else:
        state = _unwrap(path_or_state_dict)
    encoder_state, head_state, info = convert_official_state_dict(state, nesting, method)
    encoder = resnet(depth=50, blurpool=info["blurpool"])
    encoder.load_state_dict(encoder_state, strict=True)
    head = MRLHead(
        NUM_FEATURES,
        info["num_classes"],
        info["nesting"],
        tied=info["method"] == "mrl_e",
        bias=info["bias"],
    )
    head.load_state_dict(head_state, strict=True)
    return encoder.eval(), head.eval(), info
