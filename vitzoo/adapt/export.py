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
from vitzoo.errors import VitzooError


def export_params(path: Path, params: Any, config: Any) -> Path:
    """Parameters -> release-layout ``.npz`` (atomic)."""
    from vitzoo.weights.release import params_to_release, save_npz

    return save_npz(path, params_to_release(params, config))


def source_row(model: str, checkpoint: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The source checkpoint's catalog row, or (None, why not).

    The row is matched by what identifies the file, never by a file's stem alone: a
    user's own ``tiny.npz`` is not an earlier local run whose upstream file was also
    called ``tiny``. What identifies it: the catalog name or alias the user typed, the
    object a file in the download cache was fetched as, or the full path of a registered
    run's ``final.npz``.
    """
    from vitzoo.catalog.api import find_local_run

    path = checkpoint.resolve()
    for name in (*_typed_name(model), *_cached_as(path)):
        try:
            info = find_checkpoint(name)
        except VitzooError:
            continue
        row = dict(getattr(info, "row", {}) or {})
        row.setdefault("filename", getattr(info, "filename", None))
        return row, None
    run = find_local_run(path)
    if run is not None:
        return run, None
    return None, f"{path} is not a catalog checkpoint (a file of your own)"


def _typed_name(model: str) -> list[str]:
    """``model`` when it is a name, not a path or URL the user gave."""
    if "://" in model or Path(model).expanduser().exists():
        return []
    return [model]


def _cached_as(path: Path) -> list[str]:
    """``collection/stem`` of a file in the download cache (its object path in the bucket)."""
    from vitzoo import config

    try:
        relpath = path.relative_to(config.cache_dir().resolve())
    except ValueError:
        return []
    return [relpath.with_suffix("").as_posix()]


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
