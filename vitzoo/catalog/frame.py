"""The catalog in memory as plain Python columns, and its fast column file.

Why not pyarrow or pandas for queries: a catalog command is a fresh process, and
importing pyarrow (with numpy) or pandas costs more than the whole query over
52k rows does in plain Python. So the build writes, next to ``catalog.parquet``
(the canonical artifact), a derived ``catalog.cols`` file: each column a
compressed ``marshal``-ed list (dictionary-coded when values repeat),
individually addressable, so a command loads only the columns it touches.
The file records the parquet's sha256; when it is missing or stale the
parquet is read with pyarrow instead, with the same result.
"""

from __future__ import annotations

import array
import hashlib
import marshal
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vitzoo.atomic import atomic_write
from vitzoo.catalog.schema import COLUMN_TYPES

MAGIC = b"VITZOOCOLS1\n"
_LEN = struct.Struct("<Q")


class Frame:
    """Rows of the catalog as named columns (lists); immutable by convention."""

    __slots__ = ("_columns", "num_rows")

    def __init__(self, columns: dict[str, list]) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._columns = columns
        self.num_rows = lengths.pop() if lengths else 0

    @classmethod
    def from_rows(cls, rows: Sequence[dict], names: Sequence[str]) -> Frame:
        return cls({n: [row.get(n) for row in rows] for n in names})

    @classmethod
    def concat(cls, frames: Sequence[Frame]) -> Frame:
        names = frames[0].column_names
        return cls({n: [v for f in frames for v in f.column(n)] for n in names})

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    def type_of(self, name: str) -> str:
        """``str``, ``float``, ``int`` or ``bool`` (derived columns: inferred from values)."""
        if name in COLUMN_TYPES:
            return COLUMN_TYPES[name]
        sample = next((v for v in self._columns[name] if v is not None), None)
        return {bool: "bool", int: "int", float: "float"}.get(type(sample), "str")

    def column(self, name: str) -> list:
        return self._columns[name]

    def to_pylist(self) -> list[dict[str, Any]]:
        names = self.column_names
        return [dict(zip(names, values, strict=True)) for values in zip(*self._columns.values(),
                                                                          strict=True)]

    def to_pydict(self) -> dict[str, list]:
        return dict(self._columns)

    def select(self, names: Iterable[str]) -> Frame:
        return Frame({n: self._columns[n] for n in names})

    def take(self, indices: Sequence[int]) -> Frame:
        return Frame({n: [col[i] for i in indices] for n, col in self._columns.items()})

    def filter(self, mask: Sequence[bool]) -> Frame:
        return self.take([i for i, keep in enumerate(mask) if keep])

    def slice(self, start: int, length: int | None = None) -> Frame:
        stop = None if length is None else start + length
        return Frame({n: col[start:stop] for n, col in self._columns.items()})

    def with_column(self, name: str, values: list) -> Frame:
        return Frame({**self._columns, name: values})


# --- the column file ---------------------------------------------------------------

def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encode(values: list) -> bytes:
    distinct = list(dict.fromkeys(values))
    if len(distinct) <= len(values) // 2:
        position = {value: i for i, value in enumerate(distinct)}
        codes = array.array("I", [position[v] for v in values]).tobytes()
        payload = marshal.dumps(("dict", distinct, codes))
    else:
        payload = marshal.dumps(("plain", values))
    return zlib.compress(payload, 1)  # level 1: a quarter of the time, nearly the same size


def _decode(blob: bytes) -> list:
    kind, *parts = marshal.loads(zlib.decompress(blob))
    if kind == "plain":
        return parts[0]
    distinct, raw = parts
    codes = array.array("I")
    codes.frombytes(raw)
    return [distinct[c] for c in codes]


def write_column_file(path: Path, columns: dict[str, list], parquet_sha256: str) -> None:
    """Write ``catalog.cols`` atomically (temp file in the same folder, then rename)."""
    blobs = {name: _encode(values) for name, values in columns.items()}
    offsets, position = {}, 0
    for name, blob in blobs.items():
        offsets[name] = (position, len(blob))
        position += len(blob)
    rows = len(next(iter(columns.values()))) if columns else 0
    header = marshal.dumps({"rows": rows, "offsets": offsets, "parquet_sha256": parquet_sha256})
    with atomic_write(path) as handle:
        handle.write(MAGIC + _LEN.pack(len(header)) + header)
        for blob in blobs.values():
            handle.write(blob)


def read_column_file(path: Path, parquet: Path, names: Sequence[str] | None) -> Frame | None:
    """The requested columns, or None when the file is absent, foreign or stale."""
    try:
        with path.open("rb") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                return None
            (header_len,) = _LEN.unpack(handle.read(_LEN.size))
            header = marshal.loads(handle.read(header_len))
            if header.get("parquet_sha256") != sha256_file(parquet):
                return None
            base = len(MAGIC) + _LEN.size + header_len
            offsets = header["offsets"]
            wanted = list(offsets) if names is None else list(names)
            if any(n not in offsets for n in wanted):
                return None
            columns = {}
            for name in wanted:
                start, length = offsets[name]
                handle.seek(base + start)
                columns[name] = _decode(handle.read(length))
            return Frame(columns)
    except (OSError, EOFError, ValueError, TypeError, KeyError, struct.error, zlib.error):
        return None
