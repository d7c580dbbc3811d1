"""Atomic writes, and one-line errors for output locations that cannot be written.

Every file vitzoo writes (catalogs, checkpoints, downloads' records, plots,
run outputs) goes through here, so a crash, Ctrl-C or full disk leaves either
the old file or the new one, never half of one, and no temporary litter.

Shared state that several processes change (a memo, a registry) is read, changed and
rewritten under a ``filelock`` by :func:`update_json`: an atomic rename alone keeps a file
whole but lets the second of two concurrent writers drop the first one's change.

Outputs made of several files (an export) are built in a temporary folder and
swapped in whole (:func:`atomic_dir`).

Output locations are checked here too: :func:`output_dir` / :func:`output_file`
before a command starts its work, and :func:`output_errors` where a write
happens, turn a read-only disk, a file in the way or a full disk into one
:class:`~vitzoo.errors.VitzooError` naming the path and the fix, for every
command that writes.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vitzoo.errors import VitzooError


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds.

    For libraries that insist on writing by file name (parquet, matplotlib).
    """
    target = Path(path)
    with output_errors(target, "file"):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    try:
        try:
            yield Path(tmp)
        except OSError as exc:  # a full disk while writing is the location's fault; others are not
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise output_error(exc, target, "file") from None
            raise
        with output_errors(target, "file"):
            if fsync:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the result should look like any other file
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """Like ``open(path, mode)``, but the file appears only complete, when the block succeeds."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle


def read_json_state(path: str | os.PathLike) -> dict[str, Any]:
    """A shared JSON object file: ``{}`` when missing; unreadable or damaged is a one-line error.

    Never a silent ``{}`` for a file that exists: rewriting it would drop whatever it held.
    """
    import json

    from vitzoo.errors import VitzooError

    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise VitzooError(f"cannot read {target}: {exc.strerror or exc}",
                          "check its permissions") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise VitzooError(f"{target} is not valid JSON ({exc})",
                          "move it aside or delete it; it is rebuilt as needed") from None
    if not isinstance(data, dict):
        raise VitzooError(f"{target} holds a JSON {type(data).__name__}, not an object",
                          "move it aside or delete it; it is rebuilt as needed")
    return data


def update_json(path: str | os.PathLike, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the JSON object at ``path``, let ``change`` edit it in place, write it back atomically.

    The read-change-write runs under ``PATH.lock`` (a ``filelock``), so concurrent updates by
    threads or processes are applied one after the other and none is lost. Errors reading or
    writing propagate. Returns the object as written.
    """
    from filelock import FileLock

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        data = read_json_state(target)
        change(data)
        write_json(target, data, indent=1, sort_keys=True)
    return data

# --- output locations ---------------------------------------------------------------------

#: errno -> (what is wrong, what to do) for a location vitzoo was asked to write.
_OUTPUT_ERRNOS: dict[int, tuple[str, str]] = {
    errno.EROFS: ("the file system is read-only", "choose a location on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you may write to, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to, or change its permissions"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a path that is not inside a file"),
    errno.EEXIST: ("it exists and is a file, not a folder", "remove the file or choose another folder"),
    errno.EISDIR: ("it is a folder, not a file", "give a file name"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose another disk"),
    errno.EDQUOT: ("the disk quota is exhausted", "free some space or choose another disk"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


def _file_above(path: Path) -> Path | None:
    """The nearest part of ``path`` (itself included) that exists and is not a folder."""
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            return None if part.is_dir() else part
    return None


def output_error(exc: OSError, path: str | os.PathLike, what: str) -> VitzooError | None:
    """The one-line error for ``exc``, raised writing ``what`` at ``path``; None if not about the location."""
    known = _OUTPUT_ERRNOS.get(exc.errno or 0)
    if known is None:
        return None
    reason, fix = known
    path = Path(path)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_above(path)
        if blocker is not None:
            reason = ("it exists and is a file, not a folder" if blocker == path
                      else f"{blocker} is a file, not a folder")
    return VitzooError(f"cannot write {what} {path}: {reason}", fix)


def disk_error(exc: OSError) -> VitzooError | None:
    """The one-line error for a full or read-only disk wherever it strikes; None for anything else.

    The last net, in the CLI's entry point: commands check their output places first, but a
    disk can fill up mid-run.
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None
    return output_error(exc, exc.filename or "(a file)", "file")


@contextmanager
def output_errors(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a location error (read-only, a file in the way, no space...) into one :class:`VitzooError`."""
    try:
        yield
    except OSError as exc:
        error = output_error(exc, path, what)
        if error is None:
            raise
        raise error from None


def _nearest_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists() or p.is_symlink() or p == p.parent)


def output_dir(path: str | os.PathLike, what: str, *, create: bool = True) -> Path:
    """Check (and by default create) the folder ``path`` that ``what`` will be written into.

    Commands call this before their work starts, so a read-only disk, a file where a
    folder should be, or a full disk is one line naming the option, before minutes of
    computing and with nothing written. With ``create=False`` nothing is created: the
    nearest existing folder on the way must be writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise output_error(OSError(errno.EEXIST, "exists"), path, what)  # type: ignore[misc]
    with output_errors(path, what):
        if create:
            path.mkdir(parents=True, exist_ok=True)
            _probe(path)
        else:
            _probe_nearest(path)
    return path


def output_file(path: str | os.PathLike, what: str) -> Path:
    """Check, creating nothing, that the file ``path`` can be written (see :func:`output_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise output_error(OSError(errno.EISDIR, "is a folder"), path, what)  # type: ignore[misc]
    with output_errors(path, what):
        _probe_nearest(path.parent)
    return path


def _probe_nearest(path: Path) -> None:
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise OSError(errno.ENOTDIR, "not a folder", str(existing))
    _probe(existing)


def _probe(folder: Path) -> None:
    """Create one file in ``folder``: the one test of writability that is never wrong.

    An unnamed file where the kernel allows it (``O_TMPFILE``), so even a kill leaves nothing.
    """
    with tempfile.TemporaryFile(prefix=".vitzoo-probe-", suffix=".tmp", dir=folder):
        pass


# --- whole folders ------------------------------------------------------------------------

#: Suffixes of the temporaries :func:`atomic_dir` leaves only when killed; the next
#: :func:`atomic_dir` of the same target removes them.
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"


def _stale_temporaries(target: Path) -> list[Path]:
    """Temporaries of earlier, killed :func:`atomic_dir` calls for ``target``."""
    if not target.parent.is_dir():
        return []
    return sorted(p for suffix in (PARTIAL_SUFFIX, REPLACED_SUFFIX)
                  for p in target.parent.glob(f".{glob.escape(target.name)}.*{suffix}"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # musl or an old glibc
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``; a reader sees the old folder or the new one, whole.

    Where the kernel can exchange two names in one step there is no moment without
    ``target``. Elsewhere the old folder is first renamed to a ``.replaced`` name: a kill
    between the two renames leaves no ``target`` (the old export sits under that name until
    the next export of the target removes it), and a failed second rename puts it back.
    """
    if not target.exists():
        os.replace(new, target)
    elif _exchange(new, target):
        _remove(new)  # now the old folder
    else:
        backup = target.parent / f"{new.name[:-len(PARTIAL_SUFFIX)]}{REPLACED_SUFFIX}"
        os.replace(target, backup)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(backup, target)
            raise
        _remove(backup)
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename still happened
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: str | os.PathLike, *, what: str = "folder") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds it replaces ``path`` whole.

    For outputs that are several files that belong together (an export: weights and the
    configs that describe them). A failure or a kill at any point leaves the previous
    ``path`` complete (or, where the kernel cannot exchange two names and the kill falls
    between two renames, no ``path``), never old and new files mixed. Temporaries left by
    a killed earlier call (``.NAME.*.partial``, ``.NAME.*.replaced``) are removed first.
    Two calls for the same ``path`` must not run at the same time.
    """
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    for stale in _stale_temporaries(target):
        with output_errors(stale, what):
            _remove(stale)
    output_dir(target.parent, what)
    with output_errors(target.parent, what):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is for every user
        _fsync_dir(tmp)
        with output_errors(target, what):
            _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2,
               sort_keys: bool = False) -> Path:
    """``data`` as JSON at ``path``, atomically; values JSON lacks (paths, dates) as text.

    The one JSON file writer: run records, the local-catalog registry, caches' records,
    exported configs and catalog manifests all go through it (``vitzoo.runs`` re-exports it).
    """
    import json

    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=indent, sort_keys=sort_keys, default=str)
        handle.write("\n")
    return Path(path)
