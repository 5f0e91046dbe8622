"""One figure of the report: the `Drawn` record (matplotlib figure, the numbers drawn, what
could not be drawn) and its HTML, shared by the page (`mrl.report.html`) and notebooks."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

_DPI = 150
_XML_PROLOGUE = re.compile(r"^\s*<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


@dataclass
class Drawn:
    """One figure: the matplotlib Figure, the numbers drawn, and what could not be drawn."""

    name: str
    title: str
    figure: Figure | None
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing: list[str] = field(default_factory=list)
    footer: str = ""
    # Rendered PNGs by dpi: the file and the HTML page share one rendering.
    _png: dict[int, bytes] = field(default_factory=dict, repr=False, compare=False)

    def png(self, dpi: int = _DPI) -> bytes:
        """The figure as PNG bytes (white background, nothing clipped)."""
        if self.figure is None:
            raise ValueError(f"{self.name}: nothing was drawn")
        if dpi not in self._png:
            buffer = io.BytesIO()
            self.figure.savefig(
                buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white",
                metadata={"Software": None},
            )  # fmt: skip
            self._png[dpi] = buffer.getvalue()
        return self._png[dpi]

    def svg(self) -> str:
        """The figure as SVG text (no date, so reruns give the same file)."""
        if self.figure is None:
            raise ValueError(f"{self.name}: nothing was drawn")
        buffer = io.StringIO()
        self.figure.savefig(
            buffer, format="svg", bbox_inches="tight", facecolor="white", metadata={"Date": None}
        )
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        """Notebook display: the figure, its footer and the notes (the table is shown apart)."""
        return figure_block(self, include_table=False)


def table_html(table: pd.DataFrame) -> str:
    """A DataFrame as an HTML table with class `data` (empty string for an empty frame)."""
    if table is None or table.empty:
        return ""
    return table.to_html(classes="data", border=0, na_rep="–", float_format=lambda v: f"{v:.4g}")


def image_html(drawn: Drawn, image: str = "png") -> str:
    """The figure as `<img>` with a base64 PNG, or as inline `<svg>` (`image="svg"`)."""
    alt = html.escape(drawn.title.splitlines()[0] if drawn.title else drawn.name)
    if image == "svg":
        return _XML_PROLOGUE.sub("", drawn.svg(), count=1)
    data = base64.b64encode(drawn.png()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{alt}">'


def figure_block(drawn: Drawn, include_table: bool = True, image: str = "png") -> str:
    """One figure's HTML: heading, image, footer, the notes of what is missing, its table."""
    lines = (drawn.title or drawn.name).splitlines()
    parts = [f'<section id="{html.escape(drawn.name)}">', f"<h2>{html.escape(lines[0])}</h2>"]
    parts += [f'<p class="source">{html.escape(line)}</p>' for line in lines[1:]]
    if drawn.figure is not None:
        parts.append(f"<figure>{image_html(drawn, image)}</figure>")
    else:
        parts.append('<p class="source"><em>Not drawn.</em></p>')
    if drawn.footer:
        parts.append(f'<p class="footer">{html.escape(drawn.footer)}</p>')
    if drawn.missing:
        items = "".join(f"<li>{html.escape(note)}</li>" for note in drawn.missing)
        parts.append(f'<ul class="missing">{items}</ul>')
    if include_table:
        parts.append(table_html(drawn.table))
    parts.append("</section>")
    return "\n".join(parts)
