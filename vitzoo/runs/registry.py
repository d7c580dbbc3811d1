"""What a finished run leaves behind: ``final.npz`` and its entry in the local catalog.

``final.npz`` is written in the release layout (per-layer ``encoderblock_{i}`` names,
pre-Linen numbering) through :func:`vitzoo.weights.release.params_to_release`, so the result
loads back into vitzoo, vit_jax and timm like any zoo checkpoint. ``run.json``
(:mod:`vitzoo.runs.record`) carries the class names next to it, which is where
``vitzoo predict`` looks for them.

The local catalog is ``VITZOO_HOME/local_runs.json`` (read by :mod:`vitzoo.catalog.local`).
Fine-tunes and head-only runs are registered by name (:func:`register_run`); a probe
registers one row per probed candidate (:func:`register_probe`, ``row_source`` ``probe``), so
``vitzoo list --local`` shows what was probed, on which data, with which scores. Every change
is a read-modify-write under a file lock, so runs finishing together keep every entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vitzoo.atomic import write_json
from vitzoo.catalog.api import find_checkpoint
from vitzoo.catalog.local import read_runs, registry_path
from vitzoo.catalog.schema import COLUMN_NAMES
from vitzoo.errors import VitzooError
from vitzoo.names import validate_path_component
from vitzoo.text import percent

#: How long a registration waits for another process's (a read and a small write).
LOCK_TIMEOUT_S = 60


def export_params(path: Path, params: Any, config: Any) -> Path:
    """Parameters -> release-layout ``.npz`` (atomic)."""
    from vitzoo.weights.release import params_to_release, save_npz

    return save_npz(path, params_to_release(params, config))


def _update(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Apply ``change`` to the registry under its lock (read, change, write atomically)."""
    from filelock import FileLock, Timeout

    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            write_json(path, change(read_runs()))
    except Timeout as exc:
        raise VitzooError(f"the local run registry {path} stayed locked for {LOCK_TIMEOUT_S} s",
                          f"is another vitzoo stuck? delete {lock.lock_file} if not") from exc


def _replacing(rows: Iterable[dict[str, Any]]) -> Callable[[list[dict]], list[dict]]:
    """A registry change that adds ``rows``, replacing any entry of the same name."""
    new = list(rows)
    names = {r["checkpoint"] for r in new}
    return lambda runs: [r for r in runs if r.get("checkpoint") not in names] + new


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
    _update(_replacing([row]))


def register(name: str, npz: Path, info: dict[str, Any], workdir: Path) -> str:
    """Register a finished run; returns the line saying so. A failure is raised, saying that
    the run itself is complete in ``workdir`` (its files are written before this is called)."""
    try:
        register_run(name, npz, info)
    except (OSError, VitzooError) as exc:
        reason = exc.one_line() if isinstance(exc, VitzooError) else str(exc)
        raise VitzooError(f"the run in {workdir} is complete but was not registered in the "
                          f"local catalog: {reason}",
                          "fix that; the run's files (final.npz, run.json) are complete and "
                          "usable by path") from exc
    return f"registered as {name!r} in the local catalog (vitzoo list --local)"


def run_name(workdir: Path, explicit: str | None) -> str:
    """A catalog-safe name for the run (explicit ``--name`` or the workdir's name)."""
    name = explicit or workdir.resolve().name
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name).strip("._") or "run"


def probe_name(checkpoint: str, dataset: str) -> str:
    """The registry name of one candidate's probe on one dataset: ``<candidate>--probe--<data>``."""
    def slug(text: str) -> str:
        text = Path(text).name if "/" in text and Path(text).exists() else text
        return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", re.sub(r"\.npz$", "", text)).strip("._") or "x"

    return f"{slug(checkpoint)}--probe--{slug(dataset)}"


def _pct(value: float | None) -> str:
    return percent(value, unknown="n/a")


def probe_rows(report: Any, settings: dict[str, Any],
               runtime: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One registry row per probed (not skipped) candidate of a probe ``report``.

    The catalog columns say what was probed on which data; ``probe`` holds the scores as
    fractions, and ``note`` says them in percentages for a reader of ``list --local``.
    """
    rows = []
    for result in report.results:
        multilabel = getattr(result, "linear_map", None) is not None
        if result.skipped or (result.linear_accuracy is None and not multilabel):
            continue
        fewshot = {k: v.get("mean") for k, v in (result.fewshot or {}).items()}
        shots = ", ".join(f"{k}-shot {_pct(v)}" for k, v in fewshot.items())
        scores = ({"linear_map": result.linear_map, "knn_map": result.knn_map} if multilabel else
                  {"linear_accuracy": result.linear_accuracy, "knn_accuracy": result.knn_accuracy})
        linear, knn = scores.values()
        note = (f"probe on {report.eval_split} ({report.eval_examples} images): linear "
                f"{'mAP ' if multilabel else ''}{_pct(linear)}, kNN "
                f"{'mAP ' if multilabel else ''}{_pct(knn)}"
                + (f", {shots}" if shots else ""))
        name = probe_name(result.checkpoint, report.dataset)
        rows.append({  # no adapt_url: a probe leaves no weights of its own to load
            "checkpoint": name, "collection": "local", "row_source": "probe",
            "name": result.architecture,
            "filename": Path(result.path).stem if result.path else result.checkpoint,
            "adapt_filename": name, "adapt_ds": report.dataset,
            "adapt_resolution": result.resolution, "adapt_steps": 0, "exists": False,
            "exists_source": "probe (no weights)", "filename_verified": False,
            "infer_samples_per_sec": result.img_per_sec, "note": note, "caveats": "",
            "probe": {"candidate": result.checkpoint, "path": result.path, "eval_split": report.eval_split,
                      "train_split": report.train_split, "eval_examples": report.eval_examples,
                      "choosing_split": report.choosing_split,
                      "train_examples": report.train_examples,
                      **scores, "fewshot": fewshot,
                      "settings": settings, "runtime": runtime},
        })
    return rows


def register_probe(report: Any, settings: dict[str, Any],
                   runtime: dict[str, Any] | None = None) -> list[str]:
    """Register every probed candidate of ``report``; returns the names registered."""
    rows = probe_rows(report, settings, runtime)
    if rows:
        _update(_replacing(rows))
    return [r["checkpoint"] for r in rows]


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
