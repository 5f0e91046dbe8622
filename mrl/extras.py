"""The package's optional parts (pip extras) and the check a command makes before it needs one.

`pip install mrl` brings only the core (PyTorch, NumPy, PyYAML): the heads, the losses and the
retrieval maths. Each command needs one or more extras on top (`pip install 'mrl[train]'`);
`require` turns a missing one into one line naming what to install, and exit status 2.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

# What `import` finds once an extra is installed: the modules that tell whether it is there.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("lightning", "hydra", "omegaconf", "torchvision", "torchmetrics", "PIL", "tqdm"),
    "eval": ("faiss", "tqdm", "pytrec_eval", "scipy"),
    "tracking": ("wandb",),
    "figures": ("matplotlib", "pandas", "hydra", "omegaconf"),
    "text": ("transformers", "sentence_transformers", "datasets"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher",),
    "export": ("onnx", "onnxruntime"),
}

# The extras each console command cannot start without (`mrl-submit` needs none: it only writes
# an sbatch script; `eval` and `tracking` speed up or add to a run but are not needed by one).
COMMANDS: dict[str, tuple[str, ...]] = {
    "mrl-train": ("train",),
    "mrl-eval": ("train",),
    "mrl-train-text": ("train", "text", "eval"),
    "mrl-export": ("train", "export"),
    "mrl-aggregate": ("figures",),
    "mrl-report": ("figures",),
    "mrl-submit": (),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module set to None
        return False


def missing_modules(*extras: str) -> list[str]:
    """The modules of `extras` that cannot be imported, in the order `EXTRAS` names them."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise KeyError(f"unknown extra {unknown[0]!r}; the extras are {', '.join(EXTRAS)}")
    names = dict.fromkeys(m for e in extras for m in EXTRAS[e])
    return [m for m in names if not _installed(m)]


def missing_message(what: str, *extras: str) -> str | None:
    """`<what> needs the 'train' extra (missing: lightning): pip install 'mrl[train]'`, or None
    when every module of `extras` is importable."""
    missing = missing_modules(*extras)
    if not missing:
        return None
    lacking = [e for e in extras if set(EXTRAS[e]) & set(missing)]
    quoted = [f"'{e}'" for e in lacking]
    named = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
    noun = "extra" if len(lacking) == 1 else "extras"
    return (f"{what} needs the {named} {noun} (missing: {', '.join(missing)}): "
            f"pip install 'mrl[{','.join(lacking)}]'")  # fmt: skip


def require(command: str, *extras: str) -> None:
    """Exit with status 2 and one line on stderr unless `extras` are installed; `extras`
    defaults to what `COMMANDS` says `command` needs. Call it before the command's imports."""
    message = missing_message(command, *(extras or COMMANDS[command]))
    if message is not None:
        print(message, file=sys.stderr)
        raise SystemExit(2)


def import_faiss() -> Any:
    """The `faiss` module, or None when it cannot be imported.

    FAISS's loader tries its AVX512 and AVX2 builds first and logs, through the `faiss.loader`
    logger, each one this wheel lacks ("Could not load library with AVX512 support ...") before
    it loads the generic build fine. Those records are held back during the import and replayed
    only if the import fails, where they explain the failure."""
    loader = logging.getLogger("faiss.loader")
    held = _HeldRecords()
    saved = loader.level, loader.propagate
    loader.addHandler(held)
    loader.setLevel(logging.DEBUG)
    loader.propagate = False
    faiss = None
    try:
        import faiss
    except ImportError:
        pass
    finally:
        loader.removeHandler(held)
        loader.level, loader.propagate = saved
        if faiss is None:  # failed, or exiting (the loader calls sys.exit without any build)
            for record in held.records:
                loader.handle(record)
    return faiss


class _HeldRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
