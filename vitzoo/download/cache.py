"""The local checkpoint cache: layout, sidecar records and verification.

Why a module of its own: ``vitzoo download``, ``vitzoo cache list|clear|verify`` and
the fine-tuning runner all have to agree on where a file lives and when it can be
trusted. A file is trusted only if it passes :func:`check`; a partial or corrupt file
is never handed out.

Layout (mirrors the buckets, so a cache folder can itself serve as a mirror)::

    <VITZOO_HOME>/checkpoints/<object path in its bucket>          e.g. augreg/B_16-....npz
    <VITZOO_HOME>/checkpoints/<object path>.json                   sidecar written at download
    <VITZOO_HOME>/checkpoints/<object path>.part (+ .part.json)    an unfinished download
    <VITZOO_HOME>/checkpoints/urls/<sha256(url)[:16]>/<basename>   files fetched by plain URL

The sidecar records what the file was checked against when it was written (size,
md5 hex, crc32c base64, the source and remote metadata) and the file's
``(size, mtime_ns)`` then. A later :func:`check` with ``full=False`` trusts a file
whose size, mtime and zip signature are unchanged; ``full=True`` (``cache verify``,
or any change of the file) re-hashes it. Files with no recorded hash at all are
checked with the zip archive's own per-member CRC32s.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vitzoo import config
from vitzoo.atomic import atomic_write
from vitzoo.errors import VitzooError
from vitzoo.fileformats import ZIP_MAGIC
from vitzoo.names import validate_path_component
from vitzoo.storage import crc32c_b64, crc32c_of, md5_hex, scheme_of

SIDECAR_SUFFIX = ".json"
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
_READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class Expected:
    """What a file must match; ``None`` means unknown. md5 is hex, crc32c GCS base64."""

    size: int | None = None
    md5: str | None = None
    crc32c: str | None = None

    @classmethod
    def of(cls, size: Any = None, md5: Any = None, crc32c: Any = None) -> Expected:
        return cls(int(size) if size not in (None, "") else None, md5_hex(md5), crc32c_b64(crc32c))

    def merged(self, other: Expected) -> Expected:
        """Fill unknown fields of ``self`` from ``other``."""
        return Expected(self.size if self.size is not None else other.size,
                        self.md5 or other.md5, self.crc32c or other.crc32c)

    @property
    def has_hash(self) -> bool:
        return bool(self.md5 or self.crc32c)


def safe_relpath(parts: list[str]) -> PurePosixPath:
    """Join validated components; catalog data never escapes the cache folder."""
    if not parts:
        raise VitzooError("empty cache path", "this is a bug; please report it")
    for part in parts:
        validate_path_component(part, "path component")
    return PurePosixPath(*parts)


def relpath_for_url(url: str) -> PurePosixPath:
    """Cache path of a remote file: the object path for gs://, a hashed folder otherwise."""
    if scheme_of(url) == "gs":
        object_path = url.split("://", 1)[1].split("/", 1)
        if len(object_path) != 2 or not object_path[1]:
            raise VitzooError(f"{url} names a bucket, not a file", "give the full object URL")
        return safe_relpath(object_path[1].split("/"))
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    base = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "download.npz"
    if not base.endswith(".npz"):
        base += ".npz"
    return safe_relpath(["urls", digest, base])


def path_for(relpath: PurePosixPath) -> Path:
    return config.cache_dir().joinpath(*relpath.parts)


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def part_of(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def lock_of(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temporary file in the same folder, then rename)."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Record:
    """The sidecar: what a cached file was verified against when it was written."""

    size: int
    md5: str
    crc32c: str
    source: str  # "gcs", "mirror", "hf", "url", "cache", "local" (a converted timm folder)
    url: str | None = None
    converted_from: str | None = None  # e.g. "hf:timm/vit_base_patch16_224.augreg_in21k"
    #: a conversion's preprocessing (vitzoo.data.preprocess.Preprocessing.as_dict): the
    #: timm config.json it was read from is not beside the converted file
    preprocessing: dict[str, Any] | None = None
    remote: dict[str, Any] | None = None
    mtime_ns: int = 0
    downloaded_at: str = ""

    def save(self, path: Path) -> None:
        atomic_write_text(sidecar_of(path), json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Record | None:
        data = read_json(sidecar_of(path))
        if data is None:
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


def hash_file(path: Path, *, limit: int | None = None) -> tuple[int, str, str]:
    """(bytes read, md5 hex, crc32c base64) of the first ``limit`` bytes (all by default)."""
    md5 = hashlib.md5()
    crc = 0
    count = 0
    with path.open("rb") as fh:
        while limit is None or count < limit:
            want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit - count)
            chunk = fh.read(want)
            if not chunk:
                break
            md5.update(chunk)
            crc = crc32c_of(chunk, crc)
            count += len(chunk)
    return count, md5.hexdigest(), crc32c_b64(crc) or ""


def has_zip_signature(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) in ZIP_MAGIC
    except OSError:
        return False


def zip_members_ok(path: Path) -> str | None:
    """Check every member's CRC32 inside the npz; the reason if the archive is damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a valid npz archive ({exc})"
    return f"archive member {bad!r} is corrupt" if bad else None


def check(path: Path, expected: Expected | None = None, *, full: bool = False) -> str | None:
    """Why ``path`` cannot be trusted, or ``None`` when it can.

    ``expected`` (catalog values) wins over the sidecar for files that are the
    release's own bytes; converted files (from Hugging Face) are checked against
    their sidecar only, since their bytes differ from the release by design.
    """
    expected = expected or Expected()
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder of the path should be
        return "missing"
    if stat.st_size == 0:
        return "empty file"
    if not has_zip_signature(path):
        return "not an npz file (no zip signature)"
    record = Record.load(path)
    if record is not None and record.converted_from:
        expected = Expected()  # the catalog describes the release file, not a conversion
    recorded = Expected(record.size, record.md5, record.crc32c) if record else Expected()
    want = expected.merged(recorded)
    if want.size is not None and stat.st_size != want.size:
        return f"size {stat.st_size} bytes, expected {want.size}"
    unchanged = record is not None and record.mtime_ns == stat.st_mtime_ns and (
        record.size == stat.st_size)
    consistent = (expected.md5 in (None, recorded.md5)) and (
        expected.crc32c in (None, recorded.crc32c))
    if not full and unchanged and consistent:
        return None
    if want.has_hash:
        _, md5, crc = hash_file(path)
        if want.md5 and md5 != want.md5:
            return f"md5 {md5}, expected {want.md5}"
        if want.crc32c and crc != want.crc32c:
            return f"crc32c {crc}, expected {want.crc32c}"
        return None
    return zip_members_ok(path)


@dataclass
class Entry:
    """One cached file as ``vitzoo cache list`` shows it."""

    name: str  # path relative to the cache folder
    path: Path
    size: int
    state: str  # recorded, modified, unrecorded, partial
    source: str | None


def entries(root: Path | None = None) -> list[Entry]:
    """Every checkpoint (and unfinished download) in the cache, without hashing."""
    root = root or config.cache_dir()
    if not root.is_dir():
        return []
    found: list[Entry] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(root).as_posix()
        if path.name.endswith(".npz"):
            record = Record.load(path)
            stat = path.stat()
            if record is None:
                state = "unrecorded"
            elif record.mtime_ns == stat.st_mtime_ns and record.size == stat.st_size:
                state = "recorded"
            else:
                state = "modified"
            found.append(Entry(name, path, stat.st_size, state,
                               record.source if record else None))
        elif path.name.endswith(".npz" + PART_SUFFIX):
            found.append(Entry(name, path, path.stat().st_size, "partial", None))
    return found


def remove(path: Path) -> list[Path]:
    """Delete a cached file with its sidecar, partial download and lock; returns what went."""
    gone = []
    for candidate in (path, sidecar_of(path), part_of(path), sidecar_of(part_of(path)),
                      lock_of(path)):
        try:
            candidate.unlink()
            gone.append(candidate)
        except FileNotFoundError:
            pass
    return gone
