"""``run.json`` and ``run.log``: what a run was asked, what it decided, and how it ended.

``run.json`` is rewritten atomically at the start (status ``running``) and at the end
(``finished``, final metrics, catalog entry); it is the record a reader opens first, and
``vitzoo predict`` reads the class names from it. ``run.log`` is appended, one
time-stamped line per decision (start or resume, notes, skipped files, the end).
Only process 0 writes either file.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.atomic import atomic_write
from vitzoo.versions import installed

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.adapt.accumulation import BatchPlan
    from vitzoo.adapt.options import FinetuneOptions
    from vitzoo.data.source import DataSplits
    from vitzoo.models.configs import ModelConfig

#: Libraries whose versions decide the numbers of a run (recorded in ``run.json``).
RUN_PACKAGES = ("vitzoo", "jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu",
                "tensorflow", "tensorflow-datasets")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic JSON write (temporary file + rename)."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")


def write_log(workdir: Path, lines: list[str]) -> None:
    """Append time-stamped lines to ``run.log``."""
    with (workdir / "run.log").open("a") as fh:
        for line in lines:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def versions() -> dict[str, str]:
    """Python and the installed :data:`RUN_PACKAGES` (those not installed are left out)."""
    found = {k: v for k, v in installed(RUN_PACKAGES).items() if v is not None}
    return {"python": platform.python_version(), **found}


def started_record(*, options: FinetuneOptions, checkpoint: Path, config: ModelConfig,
                   data: DataSplits, batch_plan: BatchPlan, devices: list[Any],
                   processes: int, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``run.json`` of a run that is starting (or resuming)."""
    from vitzoo.adapt.export import source_row
    from vitzoo.data import eval_recipe, train_recipe

    row, row_note = source_row(options.model, checkpoint)
    return {
        "status": "running",
        "options": options.as_dict(),
        "source": {"model": options.model, "checkpoint": str(checkpoint),
                   "architecture": config.name, "catalog_row": row, "catalog_note": row_note},
        "dataset": data.describe(),
        "class_names": data.class_names,
        "preprocessing": {"train": train_recipe(options.res).as_dict(),
                          "eval": eval_recipe(options.res).as_dict()},
        "batch": {"global": batch_plan.global_batch, "per_device": batch_plan.per_device,
                  "accum": batch_plan.accum, "micro_batch": batch_plan.micro_batch,
                  "devices": len(devices) * processes, "processes": processes},
        "optimizer": {"name": "sgd", "momentum": 0.9, "momentum_dtype": options.momentum_dtype,
                      "clip_global_norm": options.clip_norm, "weight_decay": 0.0,
                      "schedule": "linear warmup + cosine decay"},
        "devices": [str(d) for d in devices],
        "runtime": runtime,
        "versions": versions(),
    }
