"""``run.json`` and ``run.log``: what a run was asked, what it decided, and how it ended.

One versioned schema (:data:`SCHEMA_VERSION`) for every kind of run (:data:`KINDS`): a full
fine-tune, a head-only fine-tune and a probe. Every record has the keys of :func:`new_record`
(``schema_version``, ``kind``, ``status``, ``options``, ``source``, ``dataset``,
``class_names``, ``runtime``, ``versions``); ``runtime`` is what
:func:`vitzoo.backbone.start` put in effect (XLA flags, host devices, compile cache) and, for
a full fine-tune, ``runtime.autotune``: the settings chosen, from a ``trial`` or the
``cache`` (or why ``off``/``skipped``), with the measurements (:mod:`vitzoo.adapt.autotune`).
A finished record adds ``final_metrics`` (fractions),
and a run that leaves weights ``final_npz``, ``run_name`` and ``catalog``. Each kind adds its
own sections (a fine-tune its ``batch`` and ``optimizer``; a head-only run its ``method`` and
``feature_extraction``). ``options`` holds flat keys (``dataset``, ``eval_split``, ...), as
it always has. :func:`read_run_json` reads records written before the version existed.

``run.json`` is rewritten atomically at the start (status ``running``) and at the end
(``finished``); it is the record a reader opens first, and ``vitzoo predict`` reads the class
names from it. ``run.log`` is appended, one time-stamped line per decision. Only process 0
writes either file.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.atomic import write_json
from vitzoo.errors import VitzooError
from vitzoo.versions import installed

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.adapt.accumulation import BatchPlan
    from vitzoo.adapt.options import FinetuneOptions
    from vitzoo.data.preprocess import Preprocessing
    from vitzoo.data.source import DataSplits
    from vitzoo.models.configs import ModelConfig

#: Version 1 is the unversioned record of earlier releases (same keys, no ``kind``).
SCHEMA_VERSION = 2
KINDS = ("finetune", "head_only", "probe")
RUN_FILE = "run.json"

#: Libraries whose versions decide the numbers of a run (recorded in ``run.json``).
RUN_PACKAGES = ("vitzoo", "jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu",
                "tensorflow", "tensorflow-datasets")


def versions() -> dict[str, str]:
    """Python and the installed :data:`RUN_PACKAGES` (those not installed are left out)."""
    found = {k: v for k, v in installed(RUN_PACKAGES).items() if v is not None}
    return {"python": platform.python_version(), **found}


def new_record(kind: str, *, status: str, options: dict[str, Any], source: dict[str, Any],
               dataset: dict[str, Any], class_names: list[str] | None,
               runtime: dict[str, Any] | None, **sections: Any) -> dict[str, Any]:
    """A ``run.json`` record of ``kind``: the keys every kind has, then the kind's ``sections``."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}; one of {KINDS}")
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "status": status,
            "head_only": kind == "head_only", "options": options, "source": source,
            "dataset": dataset, "class_names": class_names, **sections, "runtime": runtime,
            "versions": versions()}


def write_run_json(workdir: Path, record: dict[str, Any]) -> Path:
    """Write ``workdir/run.json`` (atomic); refuses a record without this schema's keys."""
    missing = [k for k in ("schema_version", "kind", "status", "options") if k not in record]
    if missing:
        raise ValueError(f"run.json record lacks {missing}")
    return write_json(Path(workdir) / RUN_FILE, record)


def read_run_json(path: Path) -> dict[str, Any]:
    """A ``run.json`` (or its folder) as a record of this schema, older versions migrated."""
    path = Path(path)
    path = path / RUN_FILE if path.is_dir() else path
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VitzooError(f"cannot read {path}: {exc}", "is this a vitzoo run folder?") from exc
    return migrate(record)


def migrate(record: dict[str, Any]) -> dict[str, Any]:
    """An older record in this schema: version 1 had no version and no ``kind``."""
    version = record.get("schema_version", 1)
    if version > SCHEMA_VERSION:
        raise VitzooError(f"run.json has schema version {version}, newer than this vitzoo's "
                          f"{SCHEMA_VERSION}", "upgrade vitzoo: pip install -U vitzoo")
    if version == 1:
        kind = "head_only" if record.get("head_only") else "finetune"
        record = {"schema_version": SCHEMA_VERSION, "kind": kind,
                  "head_only": kind == "head_only", **record}
    return record


def write_log(workdir: Path, lines: list[str]) -> None:
    """Append time-stamped lines to ``run.log``."""
    with (workdir / "run.log").open("a") as fh:
        for line in lines:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def source_section(model: str, checkpoint: Path, architecture: str,
                   **extra: Any) -> dict[str, Any]:
    """Where the weights came from: what the user typed, the file, and its catalog row."""
    from vitzoo.runs.registry import source_row
    from vitzoo.weights.untrained import is_untrained

    row, row_note = source_row(model, checkpoint)
    return {"model": model, "checkpoint": str(checkpoint), **extra, "architecture": architecture,
            "untrained": is_untrained(checkpoint), "catalog_row": row, "catalog_note": row_note}


def started_record(*, options: FinetuneOptions, checkpoint: Path, config: ModelConfig,
                   data: DataSplits, batch_plan: BatchPlan, devices: list[Any],
                   processes: int, preprocessing: Preprocessing,
                   runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``run.json`` of a fine-tune that is starting (or resuming)."""
    from vitzoo.data.preprocess import run_record

    return new_record(
        "finetune", status="running", options=options.as_dict(),
        source=source_section(options.model, checkpoint, config.name),
        dataset=data.describe(), class_names=data.class_names, runtime=runtime,
        preprocessing=run_record(preprocessing, options.res),
        batch={"global": batch_plan.global_batch, "per_device": batch_plan.per_device,
               "accum": batch_plan.accum, "micro_batch": batch_plan.micro_batch,
               "devices": len(devices) * processes, "processes": processes},
        optimizer={"name": "sgd", "momentum": 0.9, "momentum_dtype": options.momentum_dtype,
                   "clip_global_norm": options.clip_norm, "weight_decay": 0.0,
                   "schedule": "linear warmup + cosine decay"},
        devices=[str(d) for d in devices])
