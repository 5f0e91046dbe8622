"""`mrl-aggregate`: gather every run under a folder into one tidy CSV and per-study tables
(`mrl.report.aggregate`), or, with `--by`, one study's table of settings with paired differences
to a baseline (`mrl.report.study_table`).

    mrl-aggregate DIR [--out OUT] [--metrics M,...] [--split S,...] [--reference REF]
    mrl-aggregate DIR [DIR ...] --by KEY[,KEY...] [--where KEY=VALUE[|VALUE...] ...]
        [--baseline VALUE[,VALUE...]] [--dims 2,4,8,256] [--metric top1] [--out OUT] [--name NAME]

Unusable input is one line `mrl-aggregate: error: ...` and exit status 2.
"""

import argparse
from pathlib import Path

import mrl.training.resolvers  # noqa: F401  (registers the resolvers the run configs name)
from mrl.commands import run_command
from mrl.report.aggregate import DEFAULT_METRICS, aggregate, file_part
from mrl.report.errors import InputError
from mrl.report.paths import default_studies_dir
from mrl.report.study_table import DEFAULT_DIMS, read_study
from mrl.runs.format import CLEAN_SPLIT

PROG = "mrl-aggregate"


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `mrl-aggregate`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Gather every mrl-train / mrl-eval run under DIR (a Hydra multirun sweep or "
        "any folder of runs) into one tidy CSV and per-study Markdown tables of methods x dims. "
        "Failed runs (no results.json) are listed and marked FAILED, never dropped. With --by: "
        "instead, one table of the settings of the runs under DIR... (test top-1 per setting "
        "and dim, mean ± std over seeds) and each setting's difference to --baseline, paired "
        "by seed, with its 95%% interval.",
        epilog="Writes OUT/results.csv (study,run,status,seed,method,dim,source,metric,value), "
        "OUT/<study>__<metric>.md and OUT/<study>__relative_top1.{md,csv}. The top1 table uses "
        "eval head_top1, else the train-time top1 (the same quantity), and probe_top1 for "
        "baselines. With --by: OUT/NAME.csv (the keys, dim, seed, the metric in percent) and "
        "OUT/NAME.md. Example: mrl-aggregate outputs/multirun/fmnist_table1/2026-01-01_00-00-00",
    )
    parser.add_argument(
        "dir", type=Path, nargs="+", help="folder to search for runs, recursively (several "
        "only with --by)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: DIR/aggregate; with "
        "--by: $MRL_OUTPUT_ROOT/studies, $MRL_OUTPUT_ROOT defaulting to outputs)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics",
        type=_comma_list,
        default=",".join(DEFAULT_METRICS),
        help="comma-separated metrics to tabulate: top1, top5, or any metric of "
        "eval/metrics.csv such as 1nn, knn@5, map@10 (default: %(default)s)",
    )
    parser.add_argument(
        "--split",
        type=_comma_list,
        default=CLEAN_SPLIT,
        help="comma-separated eval splits to gather: query (the clean test set) or "
        "query-<corruption> (default: query)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the paper's numbers, as for mrl-report: their folder (with "
        "paper_resnet50_imagenet1k.csv) or that CSV (columns metric,method,8,...,2048); its "
        "top1 rows are added to the relative table as paper:<method> (default: "
        "$MRL_REFERENCE_DIR, else the numbers shipped with the package)",
    )
    study = parser.add_argument_group("a study's table of settings (--by)")
    study.add_argument(
        "--by", help="comma-separated setting keys: a dotted config key (loss.label_smoothing), "
        "method, seed, or a config group (optimizer: its class name); a key a run's config "
        "lacks reads 'default'",
    )  # fmt: skip
    study.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE[|VALUE...]",
        help="keep only runs with one of these values (repeat for several keys)",
    )  # fmt: skip
    study.add_argument(
        "--baseline", help="the baseline setting's values, comma-separated in --by order (a "
        "list value: quote it and separate keys with ';')",
    )  # fmt: skip
    study.add_argument("--dims", default=DEFAULT_DIMS, help="default: %(default)s")
    study.add_argument(
        "--metric", default="top1", help="top1 (trained heads; default), probe_top1 (linear "
        "probes: any dim, nested or not), 1nn, map@10, ...",
    )  # fmt: skip
    study.add_argument("--name", help="the table's file name (default: the --by keys)")
    return parser


def _study(args: argparse.Namespace) -> None:
    table = read_study(args.dir, args.by, args.where, args.baseline, args.dims, args.metric)
    out = args.out if args.out is not None else default_studies_dir()
    table.write(out, args.name or file_part(args.by))
    print(table.markdown())


def _aggregate(args: argparse.Namespace) -> None:
    if len(args.dir) > 1:
        raise InputError("give one folder of runs (several only with --by)")
    done = aggregate(args.dir[0], args.out, args.metrics, args.split, args.reference)
    for text in done.texts:
        print(text)
    failed = [r for r in done.runs if r.status == "failed"]
    no_eval = sum(r.status == "no-eval" for r in done.runs)
    for run in failed:
        print(f"failed: {run.name} ({run.note})")
    ok = len(done.runs) - len(failed)
    print(
        f"{len(done.runs)} runs: {ok} ok ({no_eval} not evaluated), {len(failed)} failed; "
        f"wrote {len(done.written)} files to {done.written[0].parent}"
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: unusable input is one line and exit status 2 (see `run_command`)."""
    args = build_parser().parse_args(argv)
    run_command(PROG, lambda: _study(args) if args.by is not None else _aggregate(args))


if __name__ == "__main__":
    main()
