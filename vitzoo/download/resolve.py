"""Resolve a checkpoint name to a verified local ``.npz``: cache, mirrors, GCS, Hugging Face.

Why: the bucket that holds the release refuses anonymous reads since Feb 2026, so a
download has to try several places, say which one refused and why, and never hand
out a file it could not verify. Each download is

* **verified**: size, and md5/crc32c from the catalog, the object's own metadata or,
  failing both, the npz archive's own member CRCs; plus the zip signature;
* **resumable**: bytes go to ``<file>.part``; a later attempt continues it with a
  ranged read when the remote object is the same (size, generation, etag);
* **atomic**: ``os.replace`` of the verified ``.part``; readers never see half a file;
* **safe across processes**: one ``filelock`` per target; a second process waits and
  then finds the finished file.

Sources tried by ``source="auto"``, in order: the cache, each ``VITZOO_MIRRORS``
prefix, ``gs://`` (anonymous, or your credentials with ``gcs_auth``), then the Hugging
Face copy (converted from timm's layout). A mirror holds the bucket's object paths:
``<prefix>/augreg/<filename>.npz``, ``<prefix>/imagenet21k/ViT-B_16.npz``,
``<prefix>/imagenet1k/Mixer-B_16.npz`` (what ``gsutil rsync -r gs://vit_models
<prefix>`` produces; the cache folder itself has the same layout).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from vitzoo import config, storage
from vitzoo.atomic import output_dir, output_errors
from vitzoo.catalog.families import numerics as family_numerics
from vitzoo.download import cache
from vitzoo.download.cache import Expected, Record
from vitzoo.errors import VitzooError
from vitzoo.names import validate_path_component
from vitzoo.weights import untrained

SOURCE_CHOICES = ("auto", "cache", "mirror", "gcs", "hf")
CHUNK = 8 << 20


@dataclass(frozen=True)
class Origin:
    """One place to get a file from. ``kind``: cache, mirror, gcs, url or hf."""

    kind: str
    location: str  # a URL, or a Hugging Face repo id for kind "hf"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.location}" if self.kind != "cache" else "cache"


@dataclass(frozen=True)
class Target:
    """What to fetch: where it goes, what it must match and where it may come from."""

    name: str
    dest: Path
    relpath: PurePosixPath  # object path used on mirrors
    expected: Expected
    sources: tuple[Origin, ...]
    arch: str | None = None
    #: activation / LayerNorm eps the file must run with, when the name decides them (another
    #: family's catalog row: :func:`vitzoo.catalog.families.numerics`); None: the file decides
    numerics: Mapping[str, Any] | None = None


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _say(message: str) -> None:
    _console().print(message, markup=False)


# --- resolving names ----------------------------------------------------------


def resolve_checkpoint(
    name: str,
    *,
    source: str = "auto",
    to: Path | None = None,
    gcs_auth: bool = False,
    progress: bool = True,
) -> Path:
    """The one resolver of a checkpoint argument: a verified local ``.npz`` file.

    ``name`` is a local path (or ``file://`` URL), a remote URL, a catalog name, an
    architecture alias (its recommended checkpoint), the name of a registered local run, or
    ``random:ARCH`` (untrained, random weights: :mod:`vitzoo.weights.untrained`);
    ``finetune``, ``evaluate``, ``predict`` and ``download`` all come through here.
    ``source``: ``auto`` (cache, mirrors, GCS, Hugging Face), ``cache``, ``mirror``,
    ``gcs``, ``hf``, or a URL prefix laid out like the bucket. ``to``: a folder to
    put the file in instead of the cache (``<to>/<filename>.npz``).
    """
    text = str(name).strip()
    if not text:
        raise VitzooError("empty checkpoint name", "give a catalog name, an alias or a path")
    untrained_arch = untrained.requested_arch(text)
    if untrained_arch is not None:  # random:Ti/16: built here, no network (vitzoo.weights.untrained)
        return untrained.checkpoint(untrained_arch)
    local = _as_local_file(text)
    if local is not None:
        return local
    if storage.is_remote(text):
        target = _url_target(text, source=source, to=to)
    else:
        target = _catalog_target(text, source=source, to=to)
    if isinstance(target, Path):
        return target
    return fetch(target, gcs_auth=gcs_auth, progress=progress)


def _as_local_file(text: str) -> Path | None:
    """An existing local file (plain path or file://), checked to be an npz; else None."""
    if storage.scheme_of(text) != "file":
        return None
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.exists():
        if text.startswith("file://"):
            raise VitzooError(f"no such file: {path}", "check the path")
        return None
    if path.is_dir():
        if (path / TIMM_FOLDER_WEIGHTS).is_file():
            return _convert_timm_folder(path.resolve())
        raise VitzooError(f"{path} is a folder, not a checkpoint",
                          "name the .npz file inside it, or give a timm folder "
                          "(model.safetensors + config.json)")
    if not cache.has_zip_signature(path):
        from vitzoo.weights.release import load_npz

        load_npz(path)  # its check names what the file is instead (an HTML error page, ...)
        raise VitzooError(f"{path} is not an npz checkpoint (no zip signature)",
                          "check the file; release checkpoints are .npz archives")
    return path.resolve()


#: The weights file of a timm checkpoint folder (as timm and the Hugging Face Hub write it).
TIMM_FOLDER_WEIGHTS = "model.safetensors"


def _convert_timm_folder(folder: Path) -> Path:
    """A timm folder (``model.safetensors`` + ``config.json``) as a release ``.npz`` in the cache.

    Converted once per content: the cache name is a hash of both files, so an edited folder
    is converted again and an unchanged one is not. The recorded source is the folder.
    """
    import hashlib

    digest = hashlib.sha256()
    for name in (TIMM_FOLDER_WEIGHTS, "config.json"):
        if (folder / name).is_file():
            digest.update(f"{name}:{cache.hash_file(folder / name)[1]};".encode())
    dest = cache.path_for(PurePosixPath("timm-folders") / f"{digest.hexdigest()[:20]}.npz")
    if dest.is_file() and cache.check(dest) is None:
        return dest
    from vitzoo.weights.facts import preprocessing_of
    from vitzoo.weights.release import save_npz
    from vitzoo.weights.timm import load_timm_folder

    pixels = preprocessing_of(folder)  # its config.json is not beside the converted file
    save_npz(dest, load_timm_folder(folder))
    _say(f"converted {folder} from timm's layout to the release layout")
    size, md5, crc = cache.hash_file(dest)
    _record(dest, size, md5, crc, "local", folder.as_uri(), None,
            converted_from=f"timm-folder:{folder}", preprocessing=pixels.as_dict())
    return dest


def _mirror_sources(relpath: PurePosixPath, prefixes: list[str]) -> list[Origin]:
    return [Origin("mirror", f"{prefix.rstrip('/')}/{relpath.as_posix()}") for prefix in prefixes]


def _choose(source: str, *, cache_src: Origin | None, relpath: PurePosixPath,
            gcs: Origin | None, hf: Origin | None) -> tuple[Origin, ...]:
    choice = source.strip()
    if choice == "auto":
        picked = [cache_src, *_mirror_sources(relpath, config.mirrors()), gcs, hf]
    elif choice == "cache":
        picked = [cache_src]
    elif choice == "mirror":
        if not config.mirrors():
            raise VitzooError("--source mirror but VITZOO_MIRRORS is empty",
                              "set VITZOO_MIRRORS to one or more URL prefixes")
        picked = _mirror_sources(relpath, config.mirrors())
    elif choice == "gcs":
        if gcs is None:
            raise VitzooError("this checkpoint has no gs:// URL", "use --source auto or hf")
        picked = [gcs]
    elif choice == "hf":
        if hf is None:
            raise VitzooError("this checkpoint has no known Hugging Face copy",
                              "use --source auto, gcs or a mirror URL")
        picked = [hf]
    elif "://" in choice or choice.startswith(("/", ".", "~")):
        picked = _mirror_sources(relpath, [choice])
    else:
        raise VitzooError(f"unknown --source {source!r}",
                          f"use one of {', '.join(SOURCE_CHOICES)} or a URL prefix")
    return tuple(s for s in picked if s is not None)


def _dest(relpath: PurePosixPath, filename: str, to: Path | None) -> tuple[Path, Origin | None]:
    """Final path, and the cache copy as a source when the file goes elsewhere."""
    cached = cache.path_for(relpath)
    if to is None:
        return cached, Origin("cache", str(cached))
    return Path(to).expanduser() / filename, Origin("cache", str(cached))


def _url_target(url: str, *, source: str, to: Path | None) -> Target | Path:
    relpath = cache.relpath_for_url(url)
    dest, cache_src = _dest(relpath, relpath.name, to)
    is_gcs = storage.scheme_of(url) == "gs"
    sources = _choose(source, cache_src=cache_src, relpath=relpath if is_gcs else
                      PurePosixPath(relpath.name), gcs=Origin("gcs" if is_gcs else "url", url),
                      hf=None)
    if not is_gcs and source == "auto":  # mirrors are laid out like the buckets only
        sources = tuple(s for s in sources if s.kind != "mirror")
    return Target(url, dest, relpath, Expected(), sources)


def _catalog_target(name: str, *, source: str, to: Path | None) -> Target | Path:
    from vitzoo.catalog.api import find_checkpoint

    try:
        info = find_checkpoint(name)
    except VitzooError as exc:
        looks_like_path = name.endswith(".npz") or os.sep in name or name.startswith(("~", "."))
        if looks_like_path and not exc.message.startswith("unknown architecture"):
            raise VitzooError(f"no such file: {name}", "check the path") from None
        raise
    return target_for(info, source=source, to=to)


def target_for(info: Any, *, source: str = "auto", to: Path | None = None) -> Target | Path:
    """The fetch plan for a catalog entry (``vitzoo.catalog.api.CheckpointInfo``)."""
    filename = validate_path_component(f"{info.filename}.npz", "checkpoint file name")
    local_path = getattr(info, "local_path", None)
    if local_path:  # the user's own registered fine-tune
        found = _as_local_file(str(local_path))
        if found is None:
            raise VitzooError(f"registered checkpoint {info.filename} is missing: {local_path}",
                              "restore the file, or remove the run from your catalog")
        return found
    url = getattr(info, "url", None)
    if url and storage.scheme_of(url) == "gs":
        relpath = cache.relpath_for_url(url)
    else:
        relpath = cache.safe_relpath([*str(info.collection).split("/"), filename])
    if relpath.name != filename:
        raise VitzooError(f"catalog URL {url} does not end in {filename}",
                          "the catalog may be corrupt; rebuild it")
    dest, cache_src = _dest(relpath, filename, to)
    gcs = Origin("gcs" if storage.scheme_of(url) == "gs" else "url", url) if url else None
    hf_repo = getattr(info, "hf_repo", None)
    hf = Origin("hf", hf_repo) if hf_repo else None
    expected = Expected.of(getattr(info, "size_bytes", None), getattr(info, "md5", None),
                           getattr(info, "crc32c", None))
    sources = _choose(source, cache_src=cache_src, relpath=relpath, gcs=gcs, hf=hf)
    row = getattr(info, "row", None) or {}
    numerics = family_numerics(row)
    if numerics is not None:  # another family's file: its own config.json and timm's sizes
        # name the shapes (tiny stand-ins included). The numerics are the ones the weights were
        # trained with, which the repo's config.json implies, except where the row's repo serves
        # another name's file (the *_quickgelu_* CLIP twins): there only the name the user chose
        # says which activation to run, and the row's wins. The cache path is the row's own
        # name, so two names sharing a Hub repo get two converted files.
        if hf_repo == f"timm/{row.get('checkpoint')}":
            numerics = {}
        return Target(info.filename, dest, relpath, expected, sources, None, numerics)
    return Target(info.filename, dest, relpath, expected, sources, getattr(info, "name", None))


# --- fetching -----------------------------------------------------------------


#: Inside :func:`remember_offline`: the offline error seen first (None: none yet); outside: absent.
_offline: list[str] = []
_remembering: list[bool] = []


@contextlib.contextmanager
def remember_offline() -> Iterator[None]:
    """Within the block, once one fetch found the machine offline, later fetches try only the
    cache and fail in one short line: a probe of ten candidates says the offline reason once,
    not ten times (a command that fetches one file is unchanged)."""
    _remembering.append(True)
    try:
        yield
    finally:
        _remembering.pop()
        if not _remembering:
            _offline.clear()


def fetch(target: Target, *, gcs_auth: bool = False, progress: bool = True) -> Path:
    """Try each source in turn; the first verified file wins. One error lists them all."""
    failures: list[tuple[Origin, str]] = []
    if _offline:  # offline already said once in this block: the cache only, quietly
        cached = [s for s in target.sources if s.kind == "cache" and Path(s.location).is_file()]
        if not cached:
            raise VitzooError("not in the cache, and offline (the reason is given once, for "
                              "the first checkpoint that could not be fetched)")
        target = replace(target, sources=tuple(cached))
    for index, src in enumerate(target.sources):
        if not (src.kind == "cache" and Path(src.location) == target.dest):
            # about to write: an unwritable folder is the user's to fix, not a source's failure
            output_dir(target.dest.parent, "the download folder", create=False)
        try:
            path = _fetch_from(src, target, gcs_auth=gcs_auth, progress=progress)
        except VitzooError as exc:
            failures.append((src, exc.message))
            if src.kind == "cache":
                continue  # a cache miss is not news
            remaining = target.sources[index + 1:]
            nxt = f"; trying {remaining[0].label}" if remaining else ""
            _say(f"{src.kind}: {exc.message}{nxt}")
            continue
        if any(s.kind != "cache" for s, _ in failures):
            _say(f"got {target.name} from {src.label}")
        return path
    tried = "; ".join(f"{s.kind}: {reason}" for s, reason in failures) or "no sources"
    remote = [reason for s, reason in failures if s.kind != "cache"]
    offline = bool(remote) and all(any(m in reason for m in _OFFLINE_SIGNS) for reason in remote)
    no_dns = bool(remote) and all(any(m in reason for m in _DNS_FAILURES) for reason in remote)
    has_hf = any(s.kind == "hf" for s in target.sources)
    if offline and _remembering:
        _offline.append(target.name)
    raise VitzooError(
        ("this machine looks offline: no host name could be looked up; " if no_dns else
         "offline (HF_HUB_OFFLINE is set and no other source could be looked up); " if offline
         else "")
        + f"could not fetch {target.name} from any source ({tried})",
        "set VITZOO_MIRRORS to a mirror or copy the file locally, or fetch it with "
        "`vitzoo download NAME --gcs-auth` (your Google credentials)"
        + (" or `vitzoo download NAME --source hf`" if has_hf else _nearest_copy(target.name)),
    )


def _nearest_copy(name: str) -> str:
    """``; the nearest checkpoint with a copy is X`` when the catalog knows one."""
    from vitzoo.catalog.api import find_checkpoint, nearest_with_copy

    try:
        nearest = nearest_with_copy(find_checkpoint(name))
    except VitzooError:
        return ""
    return f"; the nearest checkpoint with a copy elsewhere is {nearest}" if nearest else ""


#: Fragments of the errors a failed DNS lookup produces (socket, urllib3, aiohttp, curl).
_DNS_FAILURES = ("Name or service not known", "Temporary failure in name resolution",
                 "nodename nor servname", "getaddrinfo failed", "Could not resolve host",
                 "NameResolutionError", "host name lookup failed")
#: A remote source's failure that means "no network here": a host name that does not resolve,
#: or Hugging Face's offline mode (vitzoo.download.hub's message).
_OFFLINE_SIGNS = (*_DNS_FAILURES, "HF_HUB_OFFLINE is set")


def _fetch_from(src: Origin, target: Target, *, gcs_auth: bool, progress: bool) -> Path:
    dest = target.dest
    if src.kind == "cache":
        cached = Path(src.location)
        reason = cache.check(cached, target.expected) or _other_numerics(cached, target)
        if reason is not None:
            raise VitzooError(reason)
        if cached == dest:
            return dest
        record = Record.load(cached)
        recorded = Expected(record.size, record.md5, record.crc32c) if record else Expected()
        return _download(str(cached), dest, target.expected.merged(recorded),
                         source_kind="cache", gcs_auth=False, progress=progress)
    with _locked(dest):
        if src.kind != "cache" and cache.check(dest, target.expected) is None and \
                _other_numerics(dest, target) is None:
            record = Record.load(dest)
            if record is not None and record.source == src.kind:
                return dest  # another process finished it while we waited
        if src.kind == "hf":
            return _convert_from_hub(src.location, dest, arch=target.arch,
                                     numerics=target.numerics, progress=progress)
        return _download_locked(src.location, dest, target.expected, source_kind=src.kind,
                                gcs_auth=gcs_auth, progress=progress)


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    with output_errors(dest.parent, "the download folder"):
        dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache.lock_of(dest)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(f"waiting for another process downloading {dest.name}")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _download(url: str, dest: Path, expected: Expected, *, source_kind: str, gcs_auth: bool,
              progress: bool) -> Path:
    with _locked(dest):
        return _download_locked(url, dest, expected, source_kind=source_kind,
                                gcs_auth=gcs_auth, progress=progress)


def _same_object(part_record: dict[str, Any] | None, url: str, meta: dict[str, Any]) -> bool:
    if not part_record or part_record.get("url") != url or meta.get("size") is None:
        return False
    return all(part_record.get(k) == meta.get(k) for k in ("size", "generation", "etag", "md5"))


def _download_locked(url: str, dest: Path, expected: Expected, *, source_kind: str,
                     gcs_auth: bool, progress: bool) -> Path:
    meta = storage.stat(url, gcs_auth=gcs_auth)
    if expected.size is not None and meta["size"] is not None and meta["size"] != expected.size:
        raise VitzooError(f"{url} is {meta['size']} bytes but the catalog says {expected.size}",
                          "the copy differs from the release; use another source")
    for key in ("md5", "crc32c"):
        known, remote = getattr(expected, key), meta[key]
        if known and remote and known != remote:
            raise VitzooError(f"{url} has {key} {remote} but the catalog says {known}",
                              "the copy differs from the release; use another source")
    want = expected.merged(Expected(meta["size"], meta["md5"], meta["crc32c"]))
    part = cache.part_of(dest)
    part_meta_path = cache.sidecar_of(part)
    for attempt in (1, 2):
        offset = 0
        if part.exists() and _same_object(cache.read_json(part_meta_path), url, meta):
            offset = part.stat().st_size
            if want.size is not None and offset > want.size:
                offset = 0
        if offset == 0:
            part.unlink(missing_ok=True)
            cache.atomic_write_text(part_meta_path, _json({"url": url, **meta}))
        elif attempt == 1:
            _say(f"resuming {dest.name} at {offset:,} of {want.size:,} bytes")
        size, md5, crc = _stream(url, part, offset, want.size, gcs_auth=gcs_auth,
                                 progress=progress, label=dest.name)
        reason = _mismatch(size, md5, crc, want)
        if reason is None and not cache.has_zip_signature(part):
            reason = "not an npz file (no zip signature)"
        if reason is None and not want.has_hash:
            reason = cache.zip_members_ok(part)
        if reason is None:
            break
        part.unlink(missing_ok=True)
        if offset and attempt == 1:
            _say(f"{dest.name}: resumed download failed verification ({reason}); "
                 "starting over")
            continue
        part_meta_path.unlink(missing_ok=True)
        raise VitzooError(f"downloaded {url} but it failed verification: {reason}",
                          "the source may be corrupt or changed; try again or use another source")
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    part_meta_path.unlink(missing_ok=True)
    _record(dest, size, md5, crc, source_kind, url, meta)
    return dest


def _mismatch(size: int, md5: str, crc: str, want: Expected) -> str | None:
    if want.size is not None and size != want.size:
        return f"size {size} bytes, expected {want.size}"
    if want.md5 and md5 != want.md5:
        return f"md5 {md5}, expected {want.md5}"
    if want.crc32c and crc != want.crc32c:
        return f"crc32c {crc}, expected {want.crc32c}"
    return None


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True, default=str)


def _record(dest: Path, size: int, md5: str, crc: str, source_kind: str, url: str | None,
            remote: dict[str, Any] | None, converted_from: str | None = None,
            preprocessing: dict[str, Any] | None = None) -> None:
    Record(size=size, md5=md5, crc32c=crc, source=source_kind, url=url,
           converted_from=converted_from, preprocessing=preprocessing, remote=remote,
           mtime_ns=dest.stat().st_mtime_ns,
           downloaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds")).save(dest)


def _stream(url: str, part: Path, offset: int, total: int | None, *, gcs_auth: bool,
            progress: bool, label: str) -> tuple[int, str, str]:
    """Append ``url[offset:]`` to ``part``; returns (size, md5 hex, crc32c b64) of the whole."""
    import hashlib

    md5 = hashlib.md5()
    crc = 0
    if offset:
        count = 0
        with part.open("rb") as fh:  # hash what is already there
            while chunk := fh.read(CHUNK):
                md5.update(chunk)
                crc = storage.crc32c_of(chunk, crc)
                count += len(chunk)
        offset = count
    size = offset
    with _progress(label, total, offset, enabled=progress) as advance, part.open("ab") as out:
        for chunk in storage.iter_chunks(url, start=offset, chunk_size=CHUNK, gcs_auth=gcs_auth):
            out.write(chunk)
            md5.update(chunk)
            crc = storage.crc32c_of(chunk, crc)
            size += len(chunk)
            advance(len(chunk))
        out.flush()
    return size, md5.hexdigest(), storage.crc32c_b64(crc) or ""


@contextlib.contextmanager
def _progress(label: str, total: int | None, done: int, *, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr (bytes, speed, ETA); silent when not a terminal."""
    console = _console()
    if not enabled or not console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def _other_numerics(path: Path, target: Target) -> str | None:
    """Why a cached file is not the model ``target`` names: converted with another activation or
    LayerNorm eps (a cache written before the name decided them); None when it is."""
    if not target.numerics:
        return None
    import numpy as np

    from vitzoo.models.configs import SWITCH_DEFAULTS, SWITCH_PREFIX, read_switches

    try:
        with np.load(path, allow_pickle=False) as archive:
            recorded = read_switches({key: archive[key] for key in archive.files
                                      if key.startswith(SWITCH_PREFIX)})
    except (OSError, ValueError, VitzooError) as exc:
        return f"unreadable switches ({exc})"
    for name, wanted in target.numerics.items():
        found = recorded.get(name, SWITCH_DEFAULTS[name])
        if found != wanted:
            return f"converted with {name} {found}, but {target.name} runs with {wanted}"
    return None


def _convert_from_hub(repo_id: str, dest: Path, *, arch: str | None,
                      numerics: Mapping[str, Any] | None, progress: bool) -> Path:
    """Download timm's safetensors and write them as a release-layout npz into the cache."""
    from vitzoo.download import hub

    arrays = hub.release_arrays(repo_id, arch=arch, numerics=numerics, progress=progress)
    _say(f"converted hf {repo_id} from timm's layout to the release layout")
    from vitzoo.weights.facts import preprocessing_of
    from vitzoo.weights.release import save_npz

    # the snapshot's config.json (fetched with the weights) decides; the npz goes elsewhere
    pixels = preprocessing_of(hub.download(repo_id, progress=False))

    save_npz(dest, arrays)
    reason = cache.zip_members_ok(dest)
    if reason is not None:  # pragma: no cover - we just wrote it
        dest.unlink(missing_ok=True)
        raise VitzooError(f"converted {repo_id} but the result is unreadable: {reason}")
    size, md5, crc = cache.hash_file(dest)
    _record(dest, size, md5, crc, "hf", f"{hub.endpoint()}/{repo_id}", None,
            converted_from=f"hf:{repo_id}", preprocessing=pixels.as_dict())
    return dest
