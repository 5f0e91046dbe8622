"""Reading an `mrl-export` folder back: its card and its tiers, one per (dim, model precision),
with the ONNX file, the output and the tier card of each. The tiers of one export share their
model files (`model.onnx`, `model.int8.onnx`): a tier is a file and the name of its output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.core.errors import ConfigError
from mrl.export.exporter import CARD, tier_dir_name, tree_bytes
from mrl.export.graphs import EMBEDDING
from mrl.runs.files import read_json

# The tier card's `files` entry of each model precision, in the order the tiers are listed.
PRECISIONS = {"float32": "model", "int8": "model_int8"}


@dataclass
class Tier:
    """One ONNX model of an export at one dim: its dim, precision, file, the output that holds
    its embeddings and its tier card."""

    dim: int
    precision: str
    path: Path
    output: str
    card: dict[str, Any]

    @property
    def key(self) -> tuple[int, str]:
        """`(dim, precision)`: what tells the tiers of one export apart."""
        return (self.dim, self.precision)


def load_export(export: str | Path) -> tuple[dict[str, Any], list[Tier]]:
    """The card of the export folder `export` and its tiers, float32 then int8 per dim, dims
    ascending; `ConfigError` when the folder has no card or misses a file its card names."""
    card = read_json(Path(export) / CARD)
    if not card or "tiers" not in card:
        raise ConfigError(f"{export} has no card.json: give a folder written by mrl-export")
    tiers = []
    for dim in card["dims"]:
        entry = card["tiers"][str(dim)]
        folder = Path(export) / tier_dir_name(dim)
        # Tier cards of mrl-export/1 name no output: each tier had a model of its own whose
        # one output was `embedding`.
        output = entry.get("output", EMBEDDING)
        for precision, name in PRECISIONS.items():
            file = entry["files"].get(name)
            if file is not None:
                path = Path(os.path.normpath(folder / file))
                if not path.is_file():
                    raise ConfigError(f"{path} is missing: the export is incomplete")
                tiers.append(Tier(int(dim), precision, path, output, entry))
    return card, tiers


def export_bytes(export: str | Path) -> int:
    """The bytes of every file of the export folder `export`."""
    return tree_bytes(Path(export))
