"""Search indexes saved next to the embeddings they index, reused while those are unchanged.

An index is keyed by the embeddings' fingerprint (their `meta.json` and the features file's
size and modification time) and every option that shapes the index; searching options
(`ef_search`, `nprobe`) are not part of the key. A cached index is `<cache_dir>/<name>.faiss`
with its key in `<name>.json`, the key written last, so an interrupted save is never reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from mrl.eval.search import Searcher
from mrl.runs.files import atomic_write_json

# Options of `Searcher` that change the built index (the rest only change how it is searched).
BUILD_OPTIONS = ("dim", "hnsw_m", "ef_construction", "nlist", "coarse_dim", "seed")
SEARCH_OPTIONS = ("ef_search", "nprobe", "use_gpu", "batch_size")


def embeddings_fingerprint(split_dir: str | Path) -> dict[str, Any]:
    """What identifies an encoded split: its recorded meta and its features file's size and
    modification time (re-encoding changes them)."""
    split_dir = Path(split_dir)
    features = split_dir / "features.npy"
    stat = features.stat()
    meta_path = split_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    return {"meta": meta, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def index_key(fingerprint: dict[str, Any], backend: str, options: dict[str, Any]) -> dict:
    """The cache key: the fingerprint, the backend and the index-shaping options."""
    shaping = {k: options[k] for k in BUILD_OPTIONS if options.get(k) is not None}
    return json.loads(json.dumps({"embeddings": fingerprint, "backend": backend, **shaping}))


def cached_searcher(
    database: np.ndarray,
    backend: str,
    cache_dir: str | Path | None,
    fingerprint: dict[str, Any] | None,
    **options: Any,
) -> tuple[Searcher, bool]:
    """`(searcher, reused)`: the index from `cache_dir` when one with the same key is there,
    else a new one, built (with a progress bar) and saved there. Without a cache directory or
    fingerprint, and for the "exact" and "numpy" backends (nothing is learnt: building is
    normalising the rows, which reading a saved copy would not beat), it is always built."""
    if cache_dir is None or fingerprint is None or backend in ("exact", "numpy"):
        return Searcher(database, backend=backend, **options), False
    key = index_key(fingerprint, backend, options)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    dim = options.get("dim") or database.shape[1]
    name = f"{backend}-d{dim}-{digest}"
    cache_dir = Path(cache_dir)
    index_path, key_path = cache_dir / f"{name}.faiss", cache_dir / f"{name}.json"
    search_options = {k: options[k] for k in SEARCH_OPTIONS if k in options}
    if index_path.is_file() and key_path.is_file():
        try:
            stored = json.loads(key_path.read_text())
        except json.JSONDecodeError:
            stored = None
        if stored == key:
            return Searcher.load(index_path, backend, **search_options), True
    searcher = Searcher(database, backend=backend, progress=True, **options)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    searcher.save(index_path)
    atomic_write_json(key_path, key)
    return searcher, False
