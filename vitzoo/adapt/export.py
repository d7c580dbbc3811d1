"""What a finished run leaves behind: ``final.npz`` and a local-catalog entry.

``final.npz`` is written in the release layout (per-layer ``encoderblock_{i}`` names,
pre-Linen numbering) through :func:`vitzoo.weights.release.params_to_release`, so the result
loads back into vitzoo, vit_jax and timm like any zoo checkpoint. ``run.json``
(:mod:`vitzoo.adapt.run_record`) carries the class names next to it, which is where
``vitzoo predict`` looks for them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vitzoo.catalog.api import find_checkpoint
from vitzoo.catalog.local import register_run


def export_params(path: Path, params: Any, config: Any) -> Path:
    """Parameters -> release-layout ``.npz`` (atomic)."""
    from vitzoo.weights.release import params_to_release, save_npz

    return save_npz(path, params_to_release(params, config))


def source_row(model: str, checkpoint: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The source checkpoint's catalog row, or (None, why not)."""
    for name in (model, checkpoint.stem):
        try:
            info = find_checkpoint(name)
        except Exception:  # not a catalog name: a user's own file
            continue
        row = dict(getattr(info, "row", {}) or {})
        row.setdefault("filename", getattr(info, "filename", None))
        return row, None
    return None, f"{checkpoint.name} is not in the catalog"


def run_name(workdir: Path, explicit: str | None) -> str:
    """A catalog-safe name for the run (explicit ``--name`` or the workdir's name)."""
    name = explicit or workdir.resolve().name
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name).strip("._") or "run"


def register(name: str, npz: Path, info: dict[str, Any]) -> str:
    """Add the run to the user's local catalog; returns a line saying what happened."""
    try:
        register_run(name, npz, info)
    except Exception as exc:  # registering must never lose a finished run
        return f"not registered in the local catalog ({exc})"
    return f"registered as {name!r} in the local catalog (vitzoo list --local)"
