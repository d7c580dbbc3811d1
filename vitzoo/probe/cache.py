"""The feature cache: chunked, atomic, resumable, keyed by everything that decides a feature.

An entry lives in ``VITZOO_HOME/features/<key>/`` where ``key`` is the sha256 of a spec:
the checkpoint's content hash (sha256 of the file), the split's fingerprint (content hashes
of in-memory images, or path + size + mtime + inode + ctime of files read from disk, or the TFDS
name/version/split of a streamed split), the resolution, the preprocessing recipe, the
representation and the compute dtype. Change any of them and the key changes: stale
features are never served, they are simply not found.

Features are written ``chunk_rows`` rows at a time, each chunk an ``.npz`` written
atomically (temporary file + rename). A killed extraction leaves only whole chunks, and the
next run computes just the missing ones. ``meta.json`` repeats the spec so an entry can be
checked against what the caller asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo import atomic
from vitzoo.atomic import atomic_write, read_json_state, update_json
from vitzoo.errors import VitzooError

#: Bump when the layout of an entry or the meaning of a spec field changes.
FORMAT = 1


def features_root() -> Path:
    """``VITZOO_HOME/features``: feature entries, checkpoint hashes and probe scores."""
    from vitzoo.config import vitzoo_home

    return vitzoo_home() / "features"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """The cache's JSON files: keys sorted, so equal records are equal files."""
    atomic.write_json(path, data, indent=1, sort_keys=True)


def spec_key(spec: dict[str, Any]) -> str:
    """A stable hex key for a JSON-able spec."""
    text = json.dumps({"format": FORMAT, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- fingerprints ------------------------------------------------------------------------


#: File status fields that must all match a memo entry before its hash is reused. A rewrite in
#: place can keep size and mtime (``os.utime``, coarse clocks, copies that preserve times) but
#: always sets the change time; a replaced file (rename over it) has another inode.
MEMO_FIELDS = ("size", "mtime_ns", "ino", "ctime_ns")


def _file_status(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
            "ctime_ns": st.st_ctime_ns}


def checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint file's bytes: the identity the feature cache is keyed on.

    ``checkpoint_sha256.json`` remembers the hash per path so reruns skip re-reading a large
    file, but only while path, size, mtime, inode and ctime all match (:data:`MEMO_FIELDS`);
    anything else is hashed again. The memo is updated under a file lock
    (:func:`vitzoo.atomic.update_json`), so processes finishing together keep every entry.
    """
    path = Path(path).resolve()
    memo_path = features_root() / "checkpoint_sha256.json"
    status = _file_status(path.stat())
    seen = read_json_state(memo_path).get(str(path))
    if isinstance(seen, dict) and all(seen.get(k) == status[k] for k in MEMO_FIELDS):
        return str(seen["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    after = _file_status(path.stat())
    if after == status:  # not changed while it was read; otherwise hash again next time
        update_json(memo_path, lambda memo: memo.__setitem__(str(path), {**status, "sha256": value}))
    return value


def split_fingerprint(source: Any) -> dict[str, Any]:
    """What identifies a split's images and labels, in order.

    In-memory examples are hashed by content; examples read from files by path, size,
    modification time, inode and change time (:data:`MEMO_FIELDS`: reading every file again
    would cost as much as extracting, and a rewrite in place changes the change time even when
    size and mtime are kept); a streamed TFDS split by its builder's full name
    (name/config/version) and split.
    """
    from vitzoo.data.pipeline import Examples

    if isinstance(source, Examples):
        digest = hashlib.sha256()
        for item in source.payload:
            if isinstance(item, (bytes, bytearray)):
                digest.update(hashlib.sha256(item).digest())
            else:
                status = _file_status(os.stat(item))
                digest.update("\0".join([str(item), *(str(status[k]) for k in MEMO_FIELDS)])
                              .encode() + b"\n")
        labels = np.asarray(source.labels, np.int64)
        digest.update(labels.tobytes())
        if labels.ndim > 1:  # multi-hot rows: their shape too (single-label keys unchanged)
            digest.update(str(labels.shape).encode())
        return {"kind": "files" if source.from_files else "bytes", "examples": len(source),
                "sha256": digest.hexdigest()}
    builder = source.builder
    return {"kind": "tfds-stream", "dataset": str(builder.info.full_name), "split": source.split,
            "examples": int(source.num_examples)}


# --- entries -----------------------------------------------------------------------------


class FeatureEntry:
    """One split's features for one checkpoint: ``chunk-NNNNN.npz`` files and ``meta.json``."""

    def __init__(self, spec: dict[str, Any], num_rows: int, chunk_rows: int,
                 root: Path | None = None) -> None:
        self.spec = spec
        self.key = spec_key(spec)
        self.dir = (root or features_root()) / self.key
        meta = _read_json(self.dir / "meta.json")
        if meta is not None and meta.get("spec") == json.loads(json.dumps(spec, default=str)) \
                and meta.get("num_rows") == num_rows:
            chunk_rows = int(meta["chunk_rows"])  # the entry's own layout wins
        elif meta is not None:  # same key, different content: a foreign or damaged entry
            self._clear()
        self.num_rows = num_rows
        self.chunk_rows = chunk_rows
        self.num_chunks = max(1, -(-num_rows // chunk_rows))
        self.meta = meta or {}

    def _clear(self) -> None:
        for path in self.dir.glob("chunk-*.npz"):
            path.unlink(missing_ok=True)
        (self.dir / "meta.json").unlink(missing_ok=True)

    def start(self, extra: dict[str, Any]) -> None:
        """Create the folder and meta.json (idempotent), and drop temporary files of a killed run."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".chunk-*.tmp"):
            stale.unlink(missing_ok=True)
        if not (self.dir / "meta.json").is_file():
            self.meta = {"spec": self.spec, "num_rows": self.num_rows,
                         "chunk_rows": self.chunk_rows, **extra}
            write_json(self.dir / "meta.json", self.meta)

    def chunk_path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:05d}.npz"

    def rows_of(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_rows
        return start, min(self.num_rows, start + self.chunk_rows)

    def _load_chunk(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.chunk_path(index)
        if not path.is_file():
            return None
        start, stop = self.rows_of(index)
        try:
            with np.load(path, allow_pickle=False) as data:
                features, labels = data["features"], data["labels"]
        except (OSError, ValueError, KeyError, EOFError):
            path.unlink(missing_ok=True)  # damaged outside our atomic writes: recompute it
            return None
        if features.shape[0] != stop - start or labels.ndim not in (1, 2) \
                or labels.shape[0] != stop - start:  # [N] class indices or [N, K] multi-hot
            path.unlink(missing_ok=True)
            return None
        return features, labels

    def missing(self) -> list[int]:
        """Chunks still to compute (a damaged chunk counts as missing and is removed)."""
        return [i for i in range(self.num_chunks) if self._load_chunk(i) is None]

    def write_chunk(self, index: int, features: np.ndarray, labels: np.ndarray) -> None:
        start, stop = self.rows_of(index)
        if features.shape[0] != stop - start:
            raise ValueError(f"chunk {index} needs {stop - start} rows, got {features.shape[0]}")
        with atomic_write(self.chunk_path(index)) as handle:
            np.savez(handle, features=np.asarray(features, np.float32),
                     labels=np.asarray(labels, np.int32))

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """All features ``[N, D]`` float32 and labels ``[N]`` (``[N, K]`` multi-hot); fails if a
        chunk is missing."""
        parts = []
        for i in range(self.num_chunks):
            chunk = self._load_chunk(i)
            if chunk is None:
                raise VitzooError(f"feature cache entry {self.dir} is incomplete (chunk {i})",
                                  "rerun the probe to finish the extraction")
            parts.append(chunk)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def chunk_layout(num_rows: int, global_batch: int, target_rows: int = 512) -> int:
    """Rows per chunk: a multiple of the batch near ``target_rows`` (only the last chunk pads)."""
    return max(global_batch, -(-min(target_rows, max(num_rows, 1)) // global_batch) * global_batch)

