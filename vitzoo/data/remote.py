"""Image folders in cloud storage: ``--dataset gs://bucket/photos`` (also ``gcs://``, ``s3://``).

The folder logic (layouts, validation, bad-file skipping, conversions, splits) lives in
:mod:`vitzoo.data.folder` and walks a tree with a handful of ``pathlib`` calls. A
:class:`RemotePath` answers exactly those calls for a bucket prefix, so remote folders
behave like local ones by construction instead of by a second copy of the rules:

* **one listing, taken up front**: ``is_dir``, ``iterdir``, ``rglob`` and ``stat`` are
  answered from a single recursive listing (:class:`Listing`), never from more requests.
  Object stores have no directories; a "folder" is a prefix some object name has.
* **the listing is the dataset**: it records each object's generation (GCS) or etag/size
  (other stores). A read asks GCS for that generation and checks the bytes against the
  listed size and MD5/CRC32C (S3 listings carry no checksum: there only a changed size is
  noticed), so an object overwritten or deleted after the listing is
  *skipped with its reason* (``changed during the run: generation A listed, B now``),
  like an unreadable local file, and never read in a version the listing did not see.
  Skipping, not failing, because one replaced photo should not end a long run; the
  reason lands in ``run.json``'s ``skipped_files`` and the listing fingerprint in its notes.
* **credentials as for downloads** (:func:`vitzoo.storage.filesystem`): anonymous unless
  ``--gcs-auth``. A refused (403) or unreachable read is a :class:`VitzooError` that ends
  the scan, because then every file would fail the same way.
* **bounded memory**: the folder code keeps encoded bytes in memory only when the listed
  sizes fit the memory budget, as for local folders; otherwise each object is copied once
  to ``VITZOO_HOME/remote/`` (named by URL and generation, so a resumed run reads its
  copies instead of the network) and the pipeline reads those files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from vitzoo import storage
from vitzoo.atomic import atomic_write
from vitzoo.errors import VitzooError

#: Threads reading objects at once: network reads wait on latency, not on the CPU.
READ_WORKERS = 32
#: Schemes with a listing that :func:`vitzoo.storage.filesystem` opens with our credentials.
LISTED_SCHEMES = ("gs", "s3")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ObjectChanged(OSError):
    """An object was overwritten or deleted between the listing and the read."""


def is_url(value: str) -> bool:
    """True for ``scheme://...`` values (a TFDS ``name:version`` is not a URL)."""
    return bool(_URL.match(value))


def dataset_folder(dataset: str, *, gcs_auth: bool = False) -> Path | RemotePath:
    """The folder a ``--dataset`` value names: a local :class:`Path` or a listed bucket prefix.

    ``file://`` URLs become local paths (read in place, as any local folder); ``gs://``,
    ``gcs://`` and ``s3://`` prefixes are listed once now. Values without a scheme are
    returned as paths, whether or not they exist (the caller decides what else they may be).
    """
    if not is_url(dataset):
        return Path(dataset).expanduser()
    scheme = storage.scheme_of(dataset)
    if scheme == "file":
        return Path(dataset[len("file://"):]).expanduser()
    if scheme not in LISTED_SCHEMES:
        raise VitzooError(f"cannot read an image folder from {dataset}: {scheme}:// has no "
                          "listing vitzoo can use",
                          "use gs://BUCKET/PREFIX, s3://BUCKET/PREFIX, file:// or a local folder")
    return RemotePath(Listing.take(dataset, gcs_auth=gcs_auth))


def _dataset_error(error: VitzooError, url: str, gcs_auth: bool, action: str) -> VitzooError:
    """Reword a refusal for a user's own bucket (the storage message is about the model zoo)."""
    if not error.message.startswith("access denied"):
        return error
    status = error.message.rsplit("(HTTP ", 1)[-1].split(")")[0]
    hint = ("check that your credentials may list and read it" if gcs_auth else
            "pass --gcs-auth to use your own credentials (gcloud application-default login "
            "for gs://, the AWS credential chain for s3://), or make the objects public")
    return VitzooError(f"access denied {action} {url} (HTTP {status})", hint)


@dataclass(frozen=True)
class Listing:
    """One recursive listing of a prefix: object metadata by relative name, and its folders."""

    url: str
    gcs_auth: bool
    objects: dict[str, dict[str, Any]]
    children: dict[str, tuple[str, ...]]
    fs: Any = field(repr=False, compare=False)
    fs_path: str = ""

    @classmethod
    def take(cls, url: str, *, gcs_auth: bool = False) -> Listing:
        url = url.rstrip("/")
        if storage.scheme_of(url) == "gs" and url.lower().startswith("gcs://"):
            url = "gs://" + url.split("://", 1)[1]
        try:
            entries = storage.list_objects(url, gcs_auth=gcs_auth)
        except VitzooError as exc:
            raise _dataset_error(exc, url, gcs_auth, "listing the image folder") from None
        objects = {e["name"]: e for e in entries
                   if e["name"] and not e["name"].endswith("/") and "//" not in e["name"]}
        if not objects:
            raise VitzooError(f"no objects under {url}",
                              "check the URL; lay the folder out as PREFIX/<class>/* or "
                              "PREFIX/train/<class>/* + PREFIX/test/<class>/*")
        children: dict[str, set[str]] = {"": set()}
        for name in objects:
            parts = name.split("/")
            for depth in range(len(parts)):
                parent, child = "/".join(parts[:depth]), "/".join(parts[:depth + 1])
                children.setdefault(parent, set()).add(child)
                if depth < len(parts) - 1:
                    children.setdefault(child, set())
        fs, fs_path = storage.filesystem(url, gcs_auth=gcs_auth)
        return cls(url, gcs_auth, objects, {k: tuple(sorted(v)) for k, v in children.items()},
                   fs, fs_path)

    def fingerprint(self) -> str:
        """A short digest of every (name, size, version): equal digests, same dataset."""
        digest = hashlib.sha256()
        for name in sorted(self.objects):
            digest.update(f"{name}\0{self.objects[name]['size']}\0{version(self.objects[name])}\n"
                          .encode())
        return digest.hexdigest()[:16]

    def note(self) -> str:
        """The human-readable record of what was listed (goes into ``run.json``)."""
        kind = "generation" if storage.scheme_of(self.url) == "gs" else "etag/size"
        return (f"listed {len(self.objects)} objects under {self.url}; fingerprint "
                f"{self.fingerprint()} of their names and {kind}s (objects changed later are "
                "skipped)")


def version(meta: dict[str, Any]) -> str:
    """What identifies one version of an object: its GCS generation, else etag or checksum."""
    for key in ("generation", "etag", "md5", "crc32c"):
        if meta.get(key) not in (None, ""):
            return f"{key} {meta[key]}"
    return f"size {meta.get('size')}"


class RemoteStat(NamedTuple):
    """The two ``os.stat_result`` fields the folder code reads."""

    st_size: int
    st_mtime_ns: int


class RemotePath:
    """A file or folder of a :class:`Listing`, with the read-only ``pathlib`` calls folders use."""

    __slots__ = ("listing", "rel")

    def __init__(self, listing: Listing, rel: str = "") -> None:
        self.listing = listing
        self.rel = rel

    # -- names -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1] if self.rel else self.listing.url.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.listing, f"{self.rel}/{name}" if self.rel else name)

    def __str__(self) -> str:
        return f"{self.listing.url}/{self.rel}" if self.rel else self.listing.url

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self.listing.url, self.rel) == (
            other.listing.url, other.rel)

    def __hash__(self) -> int:
        return hash((self.listing.url, self.rel))

    def __lt__(self, other: RemotePath) -> bool:
        return self.rel < other.rel

    def expanduser(self) -> RemotePath:
        return self

    def resolve(self) -> RemotePath:
        return self

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        if other.rel and not self.rel.startswith(other.rel + "/"):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.rel[len(other.rel) + 1:] if other.rel else self.rel)

    # -- the tree, from the listing ----------------------------------------------------
    def is_dir(self) -> bool:
        return self.rel in self.listing.children

    def is_file(self) -> bool:
        return self.rel in self.listing.objects

    def iterdir(self) -> list[RemotePath]:
        return [RemotePath(self.listing, c) for c in self.listing.children.get(self.rel, ())]

    def rglob(self, pattern: str) -> list[RemotePath]:
        """Everything below this folder (only ``"*"``, the one pattern the folder code uses)."""
        if pattern != "*":
            raise ValueError("RemotePath.rglob supports only '*'")
        out, pending = [], list(self.iterdir())
        while pending:
            path = pending.pop()
            out.append(path)
            pending.extend(path.iterdir())
        return out

    def stat(self) -> RemoteStat:
        meta = self._meta()
        tag = int(hashlib.sha1(version(meta).encode()).hexdigest()[:15], 16)
        return RemoteStat(int(meta["size"] or 0), meta["generation"] or tag)

    # -- contents ------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        try:
            return self.listing.objects[self.rel]
        except KeyError:
            raise FileNotFoundError(str(self)) from None

    def cache_file(self) -> Path:
        """The local copy of this object version (named by URL and version, never reused stale)."""
        from vitzoo.config import vitzoo_home

        key = hashlib.sha1(f"{self}#{version(self._meta())}".encode()).hexdigest()
        return vitzoo_home() / "remote" / f"{key}{self.suffix.lower()}"

    def read_bytes(self) -> bytes:
        """The listed version's bytes; :class:`ObjectChanged` if it is no longer there.

        A refused or unreachable read raises :class:`VitzooError` (the whole folder is
        unreadable then, not this one file).
        """
        meta = self._meta()
        cached = self.cache_file()
        if cached.is_file() and cached.stat().st_size == meta["size"]:
            return cached.read_bytes()
        url = str(self)
        pin = {"generation": meta["generation"]} if meta["generation"] is not None else {}
        try:
            data = self.listing.fs.cat_file(f"{self.listing.fs_path}/{self.rel}", **pin)
        except Exception as exc:
            error = storage.translate(exc, url)
            if error.message.startswith("not found"):
                raise ObjectChanged(self._changed()) from None
            raise _dataset_error(error, url, self.listing.gcs_auth, "reading") from None
        if not _matches(data, meta):
            raise ObjectChanged(self._changed())
        return data

    def _changed(self) -> str:
        """Why the listed version is gone, with the version there now (if any)."""
        listed = version(self._meta())
        try:
            now = storage.stat(str(self), gcs_auth=self.listing.gcs_auth)
        except VitzooError as exc:
            if exc.message.startswith("not found"):
                return f"deleted during the run ({listed} listed)"
            return f"changed during the run ({listed} listed)"
        return f"changed during the run ({listed} listed, {version(now)} now)"

    def local_copy(self, data: bytes) -> str:
        """Write ``data`` (this object's bytes) to its cache file once; return the local path."""
        target = self.cache_file()
        if not (target.is_file() and target.stat().st_size == len(data)):
            with atomic_write(target) as handle:
                handle.write(data)
        return str(target)


def _matches(data: bytes, meta: dict[str, Any]) -> bool:
    """Do the bytes read agree with the listing (size, then MD5 or CRC32C when listed)?"""
    if meta["size"] is not None and len(data) != meta["size"]:
        return False
    if meta["md5"]:
        return hashlib.md5(data).hexdigest() == meta["md5"]
    if meta["crc32c"]:
        return storage.crc32c_b64(storage.crc32c_of(data)) == meta["crc32c"]
    return True
