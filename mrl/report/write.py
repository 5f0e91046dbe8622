"""What `mrl-report` writes, each atomically and each returning what it wrote for the command to
print: the figures of a results folder with one HTML page (`write_report`), the paper's claims
measured on studies (`write_claims`), and one figure of several study tables
(`write_study_figure`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrl.reference import ReferenceFileError, default_reference_dir
from mrl.report.claims import (
    Claim,
    claims_csv,
    claims_markdown,
    measure_claims,
    robustness_drops,
    robustness_markdown,
)
from mrl.report.errors import InputError
from mrl.report.figure import Drawn
from mrl.report.html import render_page
from mrl.report.load import Reference, Tables, load_reference, load_results
from mrl.report.paths import default_report_dir
from mrl.report.plots import render_all
from mrl.report.plots.study_figure import studies_png
from mrl.report.study_table import read_study_csvs
from mrl.runs.files import atomic_write_bytes, atomic_write_text, write_csv
from mrl.runs.format import reference_files

FORMATS = ("png", "svg")


@dataclass
class Report:
    """A written report: its folder, the tables read, the paper's numbers (None where none was
    found at `reference_dir`), the figures, the image formats and the files written."""

    out: Path
    tables: Tables
    reference_dir: Path
    reference: Reference | None
    drawn: list[Drawn]
    formats: list[str]
    written: list[Path]


def write_report(
    root: Path,
    out: Path | None = None,
    reference: Path | None = None,
    formats: list[str] | tuple[str, ...] = FORMATS,
) -> Report:
    """Draw every figure the tables under `root` support and write `out/<figure>.<format>` and
    `out/index.html` (default `out`: `mrl.report.paths.default_report_dir`).

    Raises `InputError` when `root` is not a folder or holds nothing recognisable.
    """
    formats = list(formats or FORMATS)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory")
    tables = load_results(root)
    if tables.empty:
        raise InputError(
            f"nothing recognisable under {root} (no results.csv of mrl-aggregate, "
            "results.json or eval/*.csv of a run)"
        )
    ref_dir = reference if reference is not None else default_reference_dir()
    ref = load_reference(ref_dir)
    out = out if out is not None else default_report_dir(root)
    drawn = render_all(tables, ref)
    written: list[Path] = []
    for figure in drawn:
        if figure.figure is None:
            continue
        for fmt in formats:
            path = out / f"{figure.name}.{fmt}"
            if fmt == "png":
                atomic_write_bytes(path, figure.png())
            else:
                atomic_write_text(path, figure.svg())
            written.append(path)
    page = render_page(drawn, tables, ref, image="png" if "png" in formats else "svg")
    atomic_write_text(out / "index.html", page)
    written.append(out / "index.html")
    return Report(out, tables, ref_dir, ref, drawn, formats, written)


def read_notes(path: Path) -> dict[str, str]:
    """The `--notes` file: claim text (its start) -> explanation; bad input is an InputError."""
    import yaml

    try:
        notes = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"--notes {path}: cannot read it ({str(err).splitlines()[0]})") from err
    if not isinstance(notes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in notes.items()
    ):
        raise InputError(f"--notes {path}: expected a mapping of claim text to explanation")
    return {k: " ".join(v.split()) for k, v in notes.items()}


def write_claims(
    roots: list[Path],
    out: Path,
    reference: Path | None = None,
    text: Path | None = None,
    notes: Path | None = None,
) -> tuple[list[Claim], list[Path]]:
    """Measure the paper's claims on `roots` and write `out/claims.md` and `out/claims.csv`,
    and, where the studies hold corrupted test sets, `out/robustness.md` and `.csv`; returns
    the claims and the files written."""
    missing = [r for r in roots if not r.is_dir()]
    if missing:
        raise InputError(f"{missing[0]} is not a directory")
    explanations = read_notes(notes) if notes is not None else {}
    # A named reference whose curves file is there must be readable; one without it is none.
    named = reference is not None and reference_files(reference)[0].is_file()
    try:
        paper = load_reference(reference, strict=named)
    except ReferenceFileError as err:
        raise InputError(str(err)) from err
    ref = paper.by_dim("top1") if paper is not None else None
    drops = robustness_drops(roots)
    claims = measure_claims(roots, ref, text, drops)
    for c in claims:
        c.note = next((v for k, v in explanations.items() if c.claim.startswith(k)), "")
    paths = [out / "claims.md", out / "claims.csv"]
    atomic_write_text(paths[0], claims_markdown(claims, roots))
    atomic_write_text(paths[1], claims_csv(claims))
    if drops:
        atomic_write_text(out / "robustness.md", robustness_markdown(drops))
        write_csv(out / "robustness.csv", drops)
        paths += [out / "robustness.md", out / "robustness.csv"]
    return claims, paths


def write_study_figure(tables: list[Path], out: Path, name: str) -> Path:
    """Draw the study tables (CSVs of `mrl-aggregate --by`) as one figure, `out/<name>.png`.

    Raises `InputError` for a file that is not such a table; nothing is written then.
    """
    png = studies_png(read_study_csvs(tables), [p.name for p in tables])
    path = out / f"{name}.png"
    atomic_write_bytes(path, png)
    return path
