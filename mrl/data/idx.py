"""Reader for the IDX file format used by MNIST and Fashion-MNIST (gzipped or plain)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

# IDX type codes -> numpy dtypes; multi-byte values are stored big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    # Sniff the content rather than trusting the suffix: torchvision leaves both
    # compressed and uncompressed copies around, sometimes misnamed.
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, and then one
    big-endian uint32 per dimension; the data follow in C order.

    Args:
        path: file to read; gzip compression is detected from the content.

    Returns:
        An array with the file's shape, in native byte order.

    Raises:
        ValueError: naming the file, if the header is malformed or the data are
            shorter or longer than the header says.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes, need a 4-byte header)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (first two bytes must be zero)"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{type_code:02x}")
    dtype = _IDX_DTYPES[type_code]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX file {kind}: header says shape {shape} of {dtype} "
            f"({expected} bytes) but {actual} data bytes follow"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def idx_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], int, int]:
    """`(shape, expected data bytes + header, stored bytes)` of an IDX file, read cheaply: the
    header only, and for gzip the uncompressed size from the stream's trailer (modulo 2**32,
    exact below 4 GiB). Raises `ValueError` naming the file for a malformed header."""
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    try:
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise ValueError(f"{path}: not an IDX file (bad header 0x{head.hex()})")
            dims = f.read(4 * head[3])
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    if len(dims) < 4 * head[3]:
        raise ValueError(f"{path}: truncated IDX header ({head[3]} dimensions declared)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    expected = 4 + len(dims) + int(np.prod(shape, dtype=np.int64)) * _IDX_DTYPES[head[2]].itemsize
    size = path.stat().st_size
    if gz:
        with open(path, "rb") as f:
            f.seek(max(0, size - 4))
            stored = int.from_bytes(f.read(4), "little")
        return shape, expected % 2**32, stored
    return shape, expected, size
