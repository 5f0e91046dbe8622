"""Reading an `mrl-export` folder back: its card and its tiers, one per (dim, model precision),
with the ONNX file and the tier card of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.core.errors import ConfigError
from mrl.export.exporter import CARD, tier_dir_name
from mrl.runs.files import read_json

# The tier card's `files` entry of each model precision, in the order the tiers are listed.
PRECISIONS = {"float32": "model", "int8": "model_int8"}


@dataclass
class Tier:
    """One ONNX model of an export: its dim, precision, file and tier card."""

    dim: int
    precision: str
    path: Path
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
        for precision, name in PRECISIONS.items():
            file = entry["files"].get(name)
            if file is not None:
                if not (folder / file).is_file():
                    raise ConfigError(f"{folder / file} is missing: the export is incomplete")
                tiers.append(Tier(int(dim), precision, folder / file, entry))
    return card, tiers
