"""Markdown tables, as lines: a header row, its alignment rule, then a row per entry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(
    header: Sequence[object], rows: Iterable[Sequence[object]], align: str = ""
) -> list[str]:
    """The lines of a Markdown table: `header`, its rule, then a line per row (cells shown with
    `str`). `align` has a letter per column, `l` (left) or `r` (right); the columns past its end
    are right-aligned."""
    rule = "".join("---|" if a == "l" else "---:|" for a in align.ljust(len(header), "r"))
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + rule]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return lines
