"""`mrl-report`: render the paper's figures from a results folder into PNG/SVG and one HTML page.

    mrl-report DIR [--out OUT] [--reference REF] [--formats png,svg]
    mrl-report --claims DIR [DIR ...] [--out OUT] [--reference REF] [--text CSV] [--notes YAML]
    mrl-report --studies CSV [CSV ...] [--out OUT] [--name NAME]

Reads every table under DIR (`mrl.report.load`), draws each figure the data supports
(`mrl.report.plots`), writes `OUT/<figure>.<format>` and `OUT/index.html` (default OUT:
`outputs/report/<DIR's name>`, never inside DIR), all atomically (`mrl.report.write`), and
prints each figure's notes of what it could not draw. A folder with nothing recognisable is one
line `mrl-report: error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrl.commands import run_command
from mrl.report.errors import InputError
from mrl.report.paths import default_claims_dir, default_studies_dir, default_text_benchmark
from mrl.report.write import FORMATS, Report, write_claims, write_report, write_study_figure

PROG = "mrl-report"


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
        help="results folder(s), searched recursively (several only with --claims); with "
        "--studies: the study tables' CSVs",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--claims",
        action="store_true",
        help="instead of figures, write OUT/claims.md and claims.csv: each claim of the paper "
        "measured on the studies under DIR..., with 95%% intervals over paired seeds and a "
        "verdict (default OUT: $MRL_OUTPUT_ROOT/claims)",
    )
    mode.add_argument(
        "--studies",
        action="store_true",
        help="instead, draw the study tables given as DIR... (the CSVs of mrl-aggregate --by) "
        "as one PNG, OUT/NAME.png: accuracy against dim, one panel per table and one line per "
        "setting (default OUT: $MRL_OUTPUT_ROOT/studies)",
    )
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="with --claims: the text benchmark's reverse_dictionary.csv (default: "
        "$MRL_OUTPUT_ROOT/text/reverse_dictionary.csv when there)",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="with --claims: a YAML file mapping the start of a claim's text to an explanation "
        "(what the ablations say about it), shown in the table's last column",
    )
    parser.add_argument(
        "--name", default="studies", help="with --studies: the figure's file name (default: "
        "%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $MRL_OUTPUT_ROOT/report/<DIR's name>, "
        "$MRL_OUTPUT_ROOT defaulting to outputs)",
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


def _print_report(report: Report) -> None:
    if report.reference is None:
        print(f"no paper reference at {report.reference_dir}: figures are drawn without the "
              "overlay")  # fmt: skip
    for figure in report.drawn:
        if figure.figure is None:
            print(f"{figure.name}: not drawn")
        else:
            print(f"{figure.name}: " + ", ".join(f"{figure.name}.{f}" for f in report.formats))
        for note in figure.missing:
            print(f"  missing: {note}")
    for note in report.tables.notes:
        print(f"note: {note}")
    n_drawn = sum(d.figure is not None for d in report.drawn)
    n_runs = len(report.tables.runs)
    runs = f"{n_runs} run{'s' if n_runs != 1 else ''}"
    print(f"{n_drawn} figures from {runs}; wrote {len(report.written)} files to {report.out}")


def _run(args: argparse.Namespace) -> None:
    if args.claims:
        out = args.out or default_claims_dir()
        claims, paths = write_claims(
            args.dir, out, args.reference, args.text or default_text_benchmark(), args.notes
        )
        for c in claims:
            print(f"{c.verdict:>14}  {c.claim}: {c.measured}")
        print(f"wrote {paths[0]} and {paths[1].name}")
    elif args.studies:
        print(f"wrote {write_study_figure(args.dir, args.out or default_studies_dir(), args.name)}")
    elif len(args.dir) > 1:
        raise InputError("give one results folder (several only with --claims or --studies)")
    else:
        _print_report(write_report(args.dir[0], args.out, args.reference, args.formats))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: unusable input is one line and exit status 2 (see `run_command`)."""
    args = build_parser().parse_args(argv)
    run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    main()
