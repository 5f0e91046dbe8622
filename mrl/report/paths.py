"""Where `mrl-report` and `mrl-aggregate` write when not told: folders under the output root
(`$MRL_OUTPUT_ROOT`, else `outputs`, as for runs: `conf/paths/default.yaml`), never inside the
results they read."""

from __future__ import annotations

import os
from pathlib import Path

from mrl.report.errors import InputError
from mrl.runs.format import TEXT_BENCHMARK_FILE

OUTPUT_ROOT_VAR = "MRL_OUTPUT_ROOT"
DEFAULT_OUTPUT_ROOT = "outputs"


def output_root() -> Path:
    """`$MRL_OUTPUT_ROOT`, else `outputs`."""
    return Path(os.environ.get(OUTPUT_ROOT_VAR) or DEFAULT_OUTPUT_ROOT)


def default_report_dir(root: Path) -> Path:
    """`<output root>/report/<name of root>`: never inside the results it reads, so a report
    never rewrites its input.

    Raises `InputError` where `root` itself lies in that folder (pass `--out`).
    """
    out = output_root() / "report" / (root.resolve().name or "root")
    if root.resolve().is_relative_to(out.resolve()):
        raise InputError(f"the default output folder {out} holds {root}: pass --out")
    return out


def default_claims_dir() -> Path:
    """`<output root>/claims`: where `mrl-report --claims` writes its tables."""
    return output_root() / "claims"


def default_text_benchmark() -> Path:
    """`<output root>/text/reverse_dictionary.csv`: the text benchmark's table the claims read."""
    return output_root() / "text" / TEXT_BENCHMARK_FILE


def default_studies_dir() -> Path:
    """`<output root>/studies`: where study tables and their figure are written."""
    return output_root() / "studies"
