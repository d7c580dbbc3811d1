"""Atomic file writes: a temporary file beside the target, renamed into place.

Every file vitzoo writes (catalogs, checkpoints, downloads' records, plots,
run outputs) goes through here, so a crash, Ctrl-C or full disk leaves either
the old file or the new one, never half of one, and no temporary litter.

Shared state that several processes change (a memo, a registry) is read, changed and
rewritten under a ``filelock`` by :func:`update_json`: an atomic rename alone keeps a file
whole but lets the second of two concurrent writers drop the first one's change.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds.

    For libraries that insist on writing by file name (parquet, matplotlib).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
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
    import json

    from filelock import FileLock

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        data = read_json_state(target)
        change(data)
        with atomic_write(target, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True, default=str)
            handle.write("\n")
    return data
