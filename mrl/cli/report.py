"""`mrl-report`: render the paper's figures from a results folder into PNG/SVG and one HTML page.

    mrl-report DIR [--out OUT] [--reference REF] [--formats png,svg]
    mrl-report --claims DIR [DIR ...] [--out OUT] [--reference REF] [--text CSV]

Reads every table under DIR (`mrl.report.load`), draws each figure the data supports
(`mrl.report.plots`), writes `OUT/<figure>.<format>` and `OUT/index.html` (default OUT:
`outputs/report/<DIR's name>`, never inside DIR), all atomically, and prints each figure's
notes of what it could not draw. A folder with nothing recognisable is one line
`mrl-report: error: ...` and exit status 2.

Files are written by a small atomic writer here rather than `mrl.runs.files`, so that this module
needs nothing of the training code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mrl.reference import ReferenceFileError, default_reference_dir
from mrl.report.html import render_page
from mrl.report.load import load_reference, load_results
from mrl.report.plots import render_all
from mrl.runs.files import atomic_write_bytes
from mrl.runs.format import reference_files

PROG = "mrl-report"
# Where the default output folder lies, as for runs (`conf/paths/default.yaml`).
OUTPUT_ROOT_VAR = "MRL_OUTPUT_ROOT"
DEFAULT_OUTPUT_ROOT = "outputs"
FORMATS = ("png", "svg")


class ReportError(Exception):
    """Unusable input: reported as one line and exit status 2."""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` via a temporary file and `os.replace`: never a partial file."""
    atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)


def _formats(text: str) -> list[str]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in FORMATS]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(FORMATS)}, got {text!r}"
        )
    return list(dict.fromkeys(items))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `mrl-report`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Render the paper's figures (top-1 and retrieval against size, adaptive "
        "classification and retrieval, robustness) from the tables under DIR: a run folder, a "
        "sweep of runs, or an mrl-aggregate folder. Writes OUT/<figure>.png/.svg and one "
        "self-contained OUT/index.html with every figure and its table.",
    )
    parser.add_argument(
        "dir",
        type=Path,
        nargs="+",
        help="results folder(s), searched recursively (several only with --claims)",
    )
    parser.add_argument(
        "--claims",
        action="store_true",
        help="instead of figures, write OUT/claims.md and claims.csv: each claim of the paper "
        "measured on the studies under DIR..., with 95%% intervals over paired seeds and a "
        "verdict (default OUT: experiments/results)",
    )
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="with --claims: the text benchmark's reverse_dictionary.csv (default: "
        "experiments/results/text/reverse_dictionary.csv when there)",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="with --claims: a YAML file mapping the start of a claim's text to an explanation "
        "(what the ablations say about it), shown in the table's last column",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $MRL_OUTPUT_ROOT/report/<DIR's name>, "
        "$MRL_OUTPUT_ROOT defaulting to outputs; with --claims: experiments/results)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the paper's numbers: their folder (paper_resnet50_imagenet1k.csv, "
        "paper_adaptive.csv) or one of those files, as for mrl-aggregate; "
        "default: $MRL_REFERENCE_DIR, else the numbers shipped with the package; figures "
        "are drawn without the overlay when none is found",
    )
    parser.add_argument(
        "--formats",
        type=_formats,
        default=list(FORMATS),
        help="comma-separated image formats to write: png, svg (default: png,svg)",
    )
    return parser


def default_out(root: Path) -> Path:
    """`<output root>/report/<name of root>` (output root: `$MRL_OUTPUT_ROOT`, else `outputs`,
    as for runs): never inside the results it reads, so a report never rewrites its input.

    Raises `ReportError` where `root` itself lies in that folder (pass `--out`).
    """
    base = Path(os.environ.get(OUTPUT_ROOT_VAR) or DEFAULT_OUTPUT_ROOT)
    out = base / "report" / (root.resolve().name or "root")
    if root.resolve().is_relative_to(out.resolve()):
        raise ReportError(f"the default output folder {out} holds {root}: pass --out")
    return out


def report(
    root: Path, out: Path | None = None, reference: Path | None = None, formats: list[str] = None
) -> list[Path]:
    """Draw and write every figure and the HTML page; returns the files written.

    Raises `ReportError` when `root` is not a folder or holds nothing recognisable.
    """
    formats = list(formats or FORMATS)
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory")
    tables = load_results(root)
    if tables.empty:
        raise ReportError(
            f"nothing recognisable under {root} (no results.csv of mrl-aggregate, "
            "results.json or eval/*.csv of a run)"
        )
    ref_dir = reference if reference is not None else default_reference_dir()
    ref = load_reference(ref_dir)
    if ref is None:
        print(f"no paper reference at {ref_dir}: figures are drawn without the overlay")
    out = out if out is not None else default_out(root)
    drawn = render_all(tables, ref)
    written: list[Path] = []
    for figure in drawn:
        if figure.figure is None:
            print(f"{figure.name}: not drawn")
        else:
            for fmt in formats:
                path = out / f"{figure.name}.{fmt}"
                write_atomic(path, figure.png() if fmt == "png" else figure.svg())
                written.append(path)
            print(f"{figure.name}: " + ", ".join(f"{figure.name}.{f}" for f in formats))
        for note in figure.missing:
            print(f"  missing: {note}")
    for note in tables.notes:
        print(f"note: {note}")
    page = render_page(drawn, tables, ref, image="png" if "png" in formats else "svg")
    index = out / "index.html"
    write_atomic(index, page)
    written.append(index)
    n_drawn = sum(d.figure is not None for d in drawn)
    runs = f"{len(tables.runs)} run{'s' if len(tables.runs) != 1 else ''}"
    print(f"{n_drawn} figures from {runs}; wrote {len(written)} files to {out}")
    return written


def read_notes(path: Path) -> dict[str, str]:
    """The `--notes` file: claim text (its start) -> explanation; bad input is a ReportError."""
    import yaml

    try:
        notes = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"--notes {path}: cannot read it ({str(err).splitlines()[0]})") from err
    if not isinstance(notes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in notes.items()
    ):
        raise ReportError(f"--notes {path}: expected a mapping of claim text to explanation")
    return {k: " ".join(v.split()) for k, v in notes.items()}


def write_claims(
    roots: list[Path],
    out: Path,
    reference: Path | None = None,
    text: Path | None = None,
    notes: Path | None = None,
) -> list[Path]:
    """Measure the paper's claims on `roots` and write `out/claims.md` and `out/claims.csv`,
    and, where the studies hold corrupted test sets, `out/robustness.md` and `.csv`."""
    from mrl.report.claims import (
        claims_csv,
        claims_markdown,
        measure_claims,
        robustness_drops,
        robustness_markdown,
    )
    from mrl.runs.files import write_csv

    missing = [r for r in roots if not r.is_dir()]
    if missing:
        raise ReportError(f"{missing[0]} is not a directory")
    explanations = read_notes(notes) if notes is not None else {}
    # A named reference whose curves file is there must be readable; one without it is none.
    named = reference is not None and reference_files(reference)[0].is_file()
    try:
        paper = load_reference(reference, strict=named)
    except ReferenceFileError as err:
        raise ReportError(str(err)) from err
    ref = paper.by_dim("top1") if paper is not None else None
    drops = robustness_drops(roots)
    claims = measure_claims(roots, ref, text, drops)
    for c in claims:
        c.note = next((v for k, v in explanations.items() if c.claim.startswith(k)), "")
    paths = [out / "claims.md", out / "claims.csv"]
    write_atomic(paths[0], claims_markdown(claims, roots))
    write_atomic(paths[1], claims_csv(claims))
    if drops:
        write_atomic(out / "robustness.md", robustness_markdown(drops))
        write_csv(out / "robustness.csv", drops)
        paths += [out / "robustness.md", out / "robustness.csv"]
    for c in claims:
        print(f"{c.verdict:>14}  {c.claim}: {c.measured}")
    print(f"wrote {paths[0]} and {paths[1].name}")
    return paths


def main(argv: list[str] | None = None) -> None:
    """Console entry point; unusable input ends with one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.claims:
            text = args.text or Path("experiments/results/text/reverse_dictionary.csv")
            out = args.out or Path("experiments/results")
            write_claims(args.dir, out, args.reference, text, args.notes)
            return
        if len(args.dir) > 1:
            raise ReportError("give one results folder (several only with --claims)")
        report(args.dir[0], args.out, args.reference, args.formats)
    except ReportError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
