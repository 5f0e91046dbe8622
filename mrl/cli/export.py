"""`mrl-export`: a trained model's Matryoshka dims as servable tiers (`mrl.export.export_run`).

    mrl-export RUN_OR_CKPT --dims 64 256 --out DIR [--head] [--int8]

RUN_OR_CKPT is a run directory of `mrl-train` or `mrl-train-text` (its `checkpoints/last.ckpt`)
or a checkpoint file. The encoder is stored once for every dim: `DIR/model.onnx` has an output
`embedding_<m>` per dim m (unit embeddings of size m, truncation and re-normalisation inside the
graph), `DIR/model.int8.onnx` with `--int8` likewise, and for text models `DIR/st/` is one
sentence-transformers folder (dim m: `truncate_dim=m`, `normalize_embeddings=True`). Each dim's
`DIR/dim_<m>/` receives its `card.json` and, with `--head`, its `head.onnx`; `DIR/card.json`
gathers them. Bad input (a dim outside the run's nesting or larger
than its representation, a missing checkpoint, a non-empty DIR) is one line and exit status 2,
before anything is exported or written; an export that fails its checks against PyTorch is one
line and exit status 1, and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from mrl.commands import run_command
from mrl.export import INT8_MIN_COSINE, PARITY_ATOL, ExportError, export_run
from mrl.export.folder import export_bytes

PROG = "mrl-export"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line `mrl-export: error: ...`, exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `mrl-export`."""
    parser = OneLineParser(
        prog=PROG,
        allow_abbrev=False,
        description="Export dims of a trained Matryoshka model as ONNX tiers (one model, an "
        "output per dim: input -> unit embedding of that dim, truncation and re-normalisation "
        "inside the graph), checked with ONNX Runtime against PyTorch; text models also as a "
        "sentence-transformers folder.",
        epilog="Example: mrl-export outputs/fmnist/main --dims 16 256 --out exports/fmnist --int8",
    )
    parser.add_argument(
        "source",
        type=Path,
        metavar="RUN_OR_CKPT",
        help="a run directory (its checkpoints/last.ckpt) or a checkpoint file",
    )
    parser.add_argument(
        "--dims",
        type=int,
        nargs="+",
        required=True,
        help="dims to export, each one of the run's nesting",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder: must not exist or be empty"
    )
    parser.add_argument(
        "--head",
        action="store_true",
        help="also export each dim's nested classification head (dim_<m>/head.onnx, on "
        "the prefix_<m> output model.onnx then also has)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (dynamic int8 quantisation) with its size "
        f"and cosine to the float model at every dim (at least {INT8_MIN_COSINE})",
    )
    return parser


def _shared_line(card: dict[str, Any], out: Path) -> str:
    """What the tiers share, with the sizes, and the bytes of the whole export."""
    files = card.get("files") or {}
    parts = [
        f"{entry['path']}{'/' if key == 'sentence_transformers' else ''} "
        f"{entry['size_bytes'] / 1e6:.1f} MB"
        for key, entry in files.items()
    ]
    total = export_bytes(out) / 1e6
    return f"shared by every dim: {', '.join(parts)}; {total:.1f} MB on disk in all"


def format_card(card: dict[str, Any], out: Path) -> str:
    """A table of the exported tiers (output, parity and int8 figures per dim) after a line
    with the shared files' sizes."""
    lines = [
        f"{PROG}: dims {card['dims']} of {card['source']['checkpoint']} in {out}",
        _shared_line(card, out),
        f"{'dim':>6}  {'output':<16}  {'max |diff|':>10}  {'min cos':>10}  {'int8 cos':>8}",
    ]
    for dim in card["dims"]:
        tier = card["tiers"][str(dim)]
        q = tier.get("int8")
        int8 = f"{q['min_cosine']:8.4f}" if q else f"{'-':>8}"
        lines.append(
            f"{dim:>6}  {tier['output']:<16}  {tier['parity']['max_abs_diff']:10.2e}  "
            f"{tier['parity']['min_cosine']:10.6f}  {int8}"
        )
    lines.append(f"parity tolerance: max |diff| <= {PARITY_ATOL:g} against PyTorch")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export as `args` say and print the table; a failed check ends with status 1."""
    try:
        card = export_run(args.source, args.dims, args.out, head=args.head, int8=args.int8)
    except ExportError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(format_card(card, args.out))
    return card


def main(argv: list[str] | None = None) -> None:
    """Console entry point: bad input is one line and exit status 2 (see `run_command`)."""
    args = build_parser().parse_args(argv)
    run_command(PROG, lambda: run(args))


if __name__ == "__main__":
    main()
