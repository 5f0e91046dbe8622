"""The self-contained HTML report: every figure (base64 PNG or inline SVG) with its table.

`render_page` builds one page with no external files: a contents list in words, per figure
one heading, the image (without the title and footer drawn into the figure files), the notes of
what could not be drawn and the table of the numbers drawn (a long one folded away behind its
key rows); then the provenance of the runs, the notes from loading and one footer for the page.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterable
from typing import Any

from mrl.report.figure import LONG_TABLE_ROWS, Drawn, figure_block
from mrl.report.load import Reference, Tables
from mrl.runs.provenance import is_recorded, summarize

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1250px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
figure { margin: 0; } figure img, figure svg { max-width: 100%; height: auto; }
.source, .footer { color: #555; font-size: .9rem; margin: .2rem 0; }
ul.missing { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5rem 1.5rem;
             font-size: .9rem; }
table.data { border-collapse: collapse; font-size: .8rem; margin: .8rem 0; }
table.data th, table.data td { border: 1px solid #ddd; padding: .2rem .45rem; text-align: right; }
table.data th { background: #f4f4f4; }
details { margin: .6rem 0; } pre { font-size: .75rem; overflow-x: auto; }
details > summary { cursor: pointer; color: #1f5fa8; font-size: .9rem; }
nav ol { columns: 2; font-size: .95rem; } nav li { margin: .1rem 0; }
footer { margin-top: 3rem; border-top: 1px solid #ddd; padding-top: .5rem; color: #555;
         font-size: .85rem; }
"""

# The contents list and headings name each figure group in words.
GROUP_TITLES = {
    "classification": "Classification",
    "retrieval": "Retrieval",
    "adaptive_classification": "Adaptive classification",
    "adaptive_retrieval": "Adaptive retrieval",
    "retrieval_time": "Retrieval time",
    "robustness": "Robustness",
    "text_retention": "Text retention",
    "text_sets": "Text evaluation sets",
}
# Provenance columns in the order shown; a column no run knows is left out.
PROVENANCE_COLUMNS = {
    "experiment": "experiment", "seed": "seed", "wall_time_s": "wall time (s)",
    "date": "date", "git_revision": "git", "git_dirty": "uncommitted changes",
    "mrl_version": "mrl", "command": "command", "hardware": "hardware", "python": "python",
    "torch": "torch",
}  # fmt: skip


def _value(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return str(value)


def _known(value: Any) -> bool:
    return value not in (None, "", "unknown") and not (isinstance(value, float) and value != value)


def contents_entry(drawn: Drawn) -> str:
    """A figure's name in words for the contents list: "Classification — fmnist"."""
    group = drawn.group or drawn.name.split("__", 1)[0]
    study = drawn.study or (drawn.name.split("__", 1)[1] if "__" in drawn.name else "")
    words = GROUP_TITLES.get(group, group.replace("_", " ").capitalize())
    return f"{words} — {study}" if study else words


def _run_name(key: str, prov: dict[str, Any]) -> str:
    return str(prov.get("run_dir") or key) if key == "." else key


def provenance_html(runs: dict[str, dict[str, Any]]) -> str:
    """The runs' provenance: a table of the runs that recorded it (only the columns some run
    knows; folded away when long, below one line per study), and one line naming the runs
    that did not record it."""
    if not runs:
        return "<p>No runs.</p>"
    recorded = {k: p for k, p in runs.items() if is_recorded(p)}
    bare = [k for k, p in runs.items() if not is_recorded(p)]
    parts = []
    if recorded:
        columns = [
            c for c in PROVENANCE_COLUMNS if any(_known(p.get(c)) for p in recorded.values())
        ]
        names = ["run", *(PROVENANCE_COLUMNS[c] for c in columns), "config"]
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        rows = []
        for key, prov in recorded.items():
            config = prov.get("config")
            folded = (
                f"<details><summary>config</summary><pre>"
                f"{html.escape(json.dumps(config, indent=1, default=str))}</pre></details>"
                if config
                else "–"
            )
            cells = "".join(f"<td>{html.escape(_value(prov.get(c)))}</td>" for c in columns)
            name = html.escape(_run_name(key, prov))
            rows.append(f"<tr><td>{name}</td>{cells}<td>{folded}</td></tr>")
        table = f'<table class="data"><tr>{head}</tr>{"".join(rows)}</table>'
        if len(rows) > LONG_TABLE_ROWS:
            parts.append(_study_lines(recorded))
            table = (
                f"<details><summary>All {len(rows)} runs with their provenance</summary>"
                f"{table}</details>"
            )
        parts.append(table)
    if bare:
        names = ", ".join(html.escape(_run_name(k, runs[k])) for k in bare)
        noun = "this run" if len(bare) == 1 else f"these {len(bare)} runs"
        parts.append(f'<p class="source">Provenance not recorded for {noun}: {names}.</p>')
    return "\n".join(parts)


def _study_lines(runs: dict[str, dict[str, Any]]) -> str:
    """One line per study: its runs, code revisions and hardware (`summarize`)."""
    studies: dict[str, list[dict[str, Any]]] = {}
    for prov in runs.values():
        studies.setdefault(str(prov.get("experiment") or "–"), []).append(prov)
    items = "".join(
        f"<li><b>{html.escape(study)}</b>: {html.escape(summarize(provs))}</li>"
        for study, provs in studies.items()
    )
    return f"<ul>{items}</ul>"


def render_page(
    drawn: Iterable[Drawn],
    tables: Tables,
    reference: Reference | None = None,
    image: str = "png",
    generated: str | None = None,
) -> str:
    """The whole report page: contents, every figure (drawn or not, with its notes), the runs,
    the load notes and one footer."""
    drawn = list(drawn)
    when = generated or _dt.datetime.now().isoformat(timespec="seconds")
    ref = (
        f"paper reference: {html.escape(str(reference.path))}"
        if reference is not None
        else "no paper reference found: figures are drawn without the overlay"
    )
    toc = "".join(
        f'<li><a href="#{html.escape(d.name)}">{html.escape(contents_entry(d))}</a>'
        f"{'' if d.figure is not None else ' (not drawn)'}</li>"
        for d in drawn
    )
    toc += '<li><a href="#runs">Runs and their provenance</a></li>'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in tables.notes)
    n_runs = len(tables.runs)
    body = [
        f"<h1>MRL report: {html.escape(str(tables.root))}</h1>",
        f'<p class="source">{n_runs} run{"" if n_runs == 1 else "s"} found; '
        f"{sum(d.figure is not None for d in drawn)} of {len(drawn)} figures drawn.</p>",
        f"<nav><ol>{toc}</ol></nav>",
        *(figure_block(d, image=image, footer=False) for d in drawn),
        '<section id="runs"><h2>Runs and their provenance</h2>',
        provenance_html(tables.runs),
        "</section>",
    ]
    if notes:
        body.append(f'<section id="notes"><h2>Notes from loading</h2><ul>{notes}</ul></section>')
    footer = summarize(tables.runs.values()) if tables.runs else "no runs"
    body.append(
        f"<footer>{html.escape(footer)}. Generated {html.escape(when)} by mrl-report; "
        f"{ref}.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>MRL report: {html.escape(tables.root.name)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
