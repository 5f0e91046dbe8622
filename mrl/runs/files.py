"""A run's files: atomic writes, tolerant reads, the status file, and the per-dim table printed
at the end of training."""

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml(path: Path) -> Any:
    """The YAML document in `path` (a Hydra config or overrides list), or None if unreadable."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """`atomic_write_text` of `data` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


STATUS_FILE = "status.json"


def write_status(run_dir: str | Path, state: str, **info: Any) -> None:
    """Record a run's state (`running`, `interrupted`, `failed`, `finished`) in `status.json`."""
    atomic_write_json(
        Path(run_dir) / STATUS_FILE,
        {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **info},
    )


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """A run's `status.json`, or `{}` when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def per_dim_results(
    metrics: dict[str, Any], nesting: tuple[int, ...], stage: str = "test"
) -> list[dict]:
    """Rows `{"dim", "top1", "top5"}` (fractions) from logged metrics like `test/top1@8`."""
    rows = []
    for m in nesting:
        row: dict[str, Any] = {"dim": int(m)}
        for k in (1, 5):
            value = metrics.get(f"{stage}/top{k}@{m}")
            # Accuracies are ratios of counts: 6 decimals keep them exact up to 1e6 examples.
            row[f"top{k}"] = None if value is None else round(float(value), 6)
        rows.append(row)
    return rows


def format_table(rows: list[dict], title: str) -> str:
    """A plain-text table of per-dim accuracies in percent."""
    lines = [title, f"{'dim':>6}  {'top-1 %':>8}  {'top-5 %':>8}"]
    for row in rows:
        cells = [
            f"{100 * row[k]:8.2f}" if row[k] is not None else f"{'-':>8}" for k in ("top1", "top5")
        ]
        lines.append(f"{row['dim']:>6}  {cells[0]}  {cells[1]}")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write dict rows as CSV atomically; columns default to the keys in order of appearance."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
