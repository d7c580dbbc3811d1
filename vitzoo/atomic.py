"""Atomic file writes: a temporary file beside the target, renamed into place.

Every file vitzoo writes (catalogs, checkpoints, downloads' records, plots,
run outputs) goes through here, so a crash, Ctrl-C or full disk leaves either
the old file or the new one, never half of one, and no temporary litter.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
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
