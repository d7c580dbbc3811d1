"""The user's own runs, as catalog rows, so ``list --local``, ``predict`` and ``evaluate`` know them.

Runs are kept in ``VITZOO_HOME/local_runs.json`` (a small JSON list), not in the parquet
snapshot: registering a run must never risk the catalog, and the file stays readable by
hand. This module only reads it; :mod:`vitzoo.runs.registry` writes it (under a lock).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitzoo.atomic import output_file
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.schema import COLUMN_NAMES
from vitzoo.config import vitzoo_home
from vitzoo.errors import VitzooError


def registry_path() -> Path:
    return vitzoo_home() / "local_runs.json"


def check_writable() -> None:
    """Fail now, in one line, if a run could not be registered when it ends (VITZOO_HOME unwritable)."""
    output_file(registry_path(), "the local catalog of runs (VITZOO_HOME)")


def read_runs() -> list[dict[str, Any]]:
    """The registered rows (none when the file does not exist); a damaged file is an error."""
    path = registry_path()
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VitzooError(f"cannot read the local run registry {path}: {exc}",
                          "fix or delete the file; your run folders are untouched") from exc
    return runs if isinstance(runs, list) else []


def local_frame(columns: list[str] | None = None) -> Frame:
    """Registered runs as catalog rows (no rows when there are none)."""
    runs = [{"caveats": "", **run} for run in read_runs()]  # registered before the column existed
    return Frame.from_rows(runs, columns or list(COLUMN_NAMES))
