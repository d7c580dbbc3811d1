"""The user's own fine-tunes, registered so ``list --local``, ``predict`` and ``evaluate`` know them.

Runs are kept in ``VITZOO_HOME/local_runs.json`` (a small JSON list rewritten
atomically), not in the parquet snapshot: registering a run must never risk
the catalog, and the file stays readable by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitzoo.atomic import atomic_write, output_file
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.schema import COLUMN_NAMES
from vitzoo.config import vitzoo_home
from vitzoo.errors import VitzooError
from vitzoo.names import validate_path_component


def registry_path() -> Path:
    return vitzoo_home() / "local_runs.json"


def check_writable() -> None:
    """Fail now, in one line, if a run could not be registered when it ends (VITZOO_HOME unwritable)."""
    output_file(registry_path(), "the local catalog of runs (VITZOO_HOME)")


def _load() -> list[dict]:
    path = registry_path()
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VitzooError(f"cannot read the local run registry {path}: {exc}",
                          "fix or delete the file; your run folders are untouched") from exc
    return runs if isinstance(runs, list) else []


def register_run(name: str, npz_path: Path, info: dict[str, Any]) -> None:
    """Add or replace a finished run; ``info`` may hold any catalog column by name.

    Typical keys: ``name`` (architecture), ``filename`` (source checkpoint),
    ``adapt_ds``, ``adapt_resolution``, ``adapt_lr``, ``adapt_steps``,
    ``adapt_final_val`` / ``adapt_final_test``, plus ``workdir``.
    """
    validate_path_component(name, "run name")
    row = {k: v for k, v in info.items() if k in COLUMN_NAMES}
    row.update(
        checkpoint=name, collection="local", row_source="local", adapt_filename=name,
        adapt_url=str(Path(npz_path).resolve()), exists=True, exists_source="local run",
        filename_verified=True, caveats="",
    )
    if "workdir" in info:
        row["note"] = f"workdir {info['workdir']}"
    runs = [r for r in _load() if r.get("checkpoint") != name] + [row]
    with atomic_write(registry_path(), "w") as handle:
        json.dump(runs, handle, indent=2, default=str)


def local_frame(columns: list[str] | None = None) -> Frame:
    """Registered runs as catalog rows (no rows when there are none)."""
    runs = [{"caveats": "", **run} for run in _load()]  # registered before the column existed
    return Frame.from_rows(runs, columns or list(COLUMN_NAMES))
