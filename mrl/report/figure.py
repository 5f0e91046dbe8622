"""One figure of the report: the `Drawn` record (matplotlib figure, the numbers drawn, what
could not be drawn) and its HTML, shared by the page (`mrl.report.html`) and notebooks."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.text import Text

_DPI = 150
# The figure's own title and footer (`gid` of their Text): drawn in the files, left out where
# the page shows the figure under its heading and with one footer for the page.
TITLE_GID = "mrl-report-title"
FOOTER_GID = "mrl-report-footer"
# Tables with more rows than this are folded away in the page, behind their key rows.
LONG_TABLE_ROWS = 15
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
    # The few rows of `table` worth seeing at once; the page shows them above a long table.
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The figure group (`classification`, ...) and the study drawn, for the page's contents.
    group: str = ""
    study: str = ""
    # Rendered PNGs by (dpi, bare): the file and the HTML page reuse their renderings.
    _png: dict[tuple[int, bool], bytes] = field(default_factory=dict, repr=False, compare=False)

    def png(self, dpi: int = _DPI, bare: bool = False) -> bytes:
        """The figure as PNG bytes (white background, nothing clipped); `bare`: without its
        title and footer."""
        if self.figure is None:
            raise ValueError(f"{self.name}: nothing was drawn")
        if (dpi, bare) not in self._png:
            buffer = io.BytesIO()
            with _without_title(self.figure, bare):
                self.figure.savefig(
                    buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white",
                    metadata={"Software": None},
                )  # fmt: skip
            self._png[(dpi, bare)] = buffer.getvalue()
        return self._png[(dpi, bare)]

    def svg(self, bare: bool = False) -> str:
        """The figure as SVG text (no date, so reruns give the same file); `bare`: without its
        title and footer."""
        if self.figure is None:
            raise ValueError(f"{self.name}: nothing was drawn")
        buffer = io.StringIO()
        with _without_title(self.figure, bare):
            self.figure.savefig(
                buffer, format="svg", bbox_inches="tight", facecolor="white",
                metadata={"Date": None},
            )  # fmt: skip
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        """Notebook display: the figure, its footer and the notes (the table is shown apart)."""
        return figure_block(self, include_table=False)


@contextmanager
def _without_title(figure: Figure, bare: bool) -> Iterator[None]:
    """Hide the figure's tagged title and footer (out of the layout too) while `bare`."""
    hidden = (
        figure.findobj(lambda a: isinstance(a, Text) and a.get_gid() in (TITLE_GID, FOOTER_GID))
        if bare
        else []
    )
    states = [(a.get_visible(), a.get_in_layout()) for a in hidden]
    for artist in hidden:
        artist.set_visible(False)
        artist.set_in_layout(False)
    try:
        yield
    finally:
        for artist, (visible, in_layout) in zip(hidden, states):
            artist.set_visible(visible)
            artist.set_in_layout(in_layout)


def _frame_html(table: pd.DataFrame) -> str:
    # A plain row counter (0, 1, 2, ...) says nothing; a named index (method, dim) is a column.
    counter = isinstance(table.index, pd.RangeIndex) and table.index.name is None
    return table.to_html(classes="data", border=0, na_rep="–", index=not counter,
                         float_format=lambda v: f"{v:.4g}")  # fmt: skip


def table_html(table: pd.DataFrame, summary: pd.DataFrame | None = None) -> str:
    """A DataFrame as an HTML table with class `data` (empty string for an empty frame).

    A table of more than `LONG_TABLE_ROWS` rows is folded into `<details>`, with `summary`
    (its key rows) shown above it where given.
    """
    if table is None or table.empty:
        return ""
    if len(table) <= LONG_TABLE_ROWS:
        return _frame_html(table)
    shown = ""
    if summary is not None and not summary.empty:
        shown = f'<p class="source">Key rows:</p>\n{_frame_html(summary)}\n'
    return (
        f"{shown}<details><summary>All {len(table)} rows of the table</summary>\n"
        f"{_frame_html(table)}\n</details>"
    )


def image_html(drawn: Drawn, image: str = "png", bare: bool = False) -> str:
    """The figure as `<img>` with a base64 PNG, or as inline `<svg>` (`image="svg"`); `bare`:
    without the figure's own title and footer."""
    alt = html.escape(drawn.title.splitlines()[0] if drawn.title else drawn.name)
    if image == "svg":
        return _XML_PROLOGUE.sub("", drawn.svg(bare=bare), count=1)
    return f'<img src="{png_data_uri(drawn, bare)}" alt="{alt}">'


def png_data_uri(drawn: Drawn, bare: bool = False) -> str:
    """`data:image/png;base64,...` of a drawn figure, for self-contained HTML; `bare`: without
    its title and footer."""
    return "data:image/png;base64," + base64.b64encode(drawn.png(bare=bare)).decode("ascii")


def figure_block(
    drawn: Drawn, include_table: bool = True, image: str = "png", footer: bool = True
) -> str:
    """One figure's HTML: heading, image (without its own title and footer, which the heading
    and `footer` give once), the footer, the notes of what is missing, its table.

    The page passes `footer=False`: it has one footer for all its figures.
    """
    lines = (drawn.title or drawn.name).splitlines()
    parts = [f'<section id="{html.escape(drawn.name)}">', f"<h2>{html.escape(lines[0])}</h2>"]
    parts += [f'<p class="source">{html.escape(line)}</p>' for line in lines[1:]]
    if drawn.figure is not None:
        parts.append(f"<figure>{image_html(drawn, image, bare=True)}</figure>")
    else:
        parts.append('<p class="source"><em>Not drawn.</em></p>')
    if footer and drawn.footer:
        parts.append(f'<p class="footer">{html.escape(drawn.footer)}</p>')
    if drawn.missing:
        items = "".join(f"<li>{html.escape(note)}</li>" for note in drawn.missing)
        parts.append(f'<ul class="missing">{items}</ul>')
    if include_table:
        parts.append(table_html(drawn.table, drawn.summary))
    parts.append("</section>")
    return "\n".join(parts)
