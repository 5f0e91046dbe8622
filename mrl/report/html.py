"""The self-contained HTML report: every figure (base64 PNG or inline SVG) with its table.

`render_page` builds one page with no external files: per figure its title, the image, the
provenance footer, the notes of what could not be drawn and the table of the numbers drawn;
then the provenance of every run and the notes from loading.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterable
from typing import Any

from mrl.report.figure import Drawn, figure_block
from mrl.report.load import Reference, Tables

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
"""


def _value(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return str(value)


def provenance_html(runs: dict[str, dict[str, Any]]) -> str:
    """Table of each run's provenance, with its config folded away."""
    if not runs:
        return "<p>No runs.</p>"
    columns = [
        "experiment", "seed", "wall_time_s", "git_revision", "git_dirty", "hardware", "python",
        "torch",
    ]  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in ["run", *columns, "config"])
    rows = []
    for key, prov in runs.items():
        config = prov.get("config")
        folded = (
            f"<details><summary>config</summary><pre>"
            f"{html.escape(json.dumps(config, indent=1, default=str))}</pre></details>"
            if config
            else "–"
        )
        cells = "".join(f"<td>{html.escape(_value(prov.get(c)))}</td>" for c in columns)
        name = str(prov.get("run_dir") or key) if key == "." else key
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}<td>{folded}</td></tr>")
    return f'<table class="data"><tr>{head}</tr>{"".join(rows)}</table>'


def render_page(
    drawn: Iterable[Drawn],
    tables: Tables,
    reference: Reference | None = None,
    image: str = "png",
    generated: str | None = None,
) -> str:
    """The whole report page: every figure (drawn or not, with its notes), runs, load notes."""
    drawn = list(drawn)
    when = generated or _dt.datetime.now().isoformat(timespec="seconds")
    ref = (
        f"paper reference: {html.escape(str(reference.path))}"
        if reference is not None
        else "no paper reference found: figures are drawn without the overlay"
    )
    toc = "".join(
        f'<li><a href="#{html.escape(d.name)}">{html.escape(d.name)}</a>'
        f"{'' if d.figure is not None else ' (not drawn)'}</li>"
        for d in drawn
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in tables.notes)
    body = [
        f"<h1>MRL report: {html.escape(str(tables.root))}</h1>",
        f'<p class="source">Generated {html.escape(when)}; {ref}; '
        f"{len(tables.runs)} run{'' if len(tables.runs) == 1 else 's'} found.</p>",
        f"<ul>{toc}</ul>",
        *(figure_block(d, image=image) for d in drawn),
        '<section id="runs"><h2>Runs and their provenance</h2>',
        provenance_html(tables.runs),
        "</section>",
    ]
    if notes:
        body.append(f'<section id="notes"><h2>Notes from loading</h2><ul>{notes}</ul></section>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>MRL report: {html.escape(tables.root.name)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
