"""Run logs: ``metrics.jsonl`` (one JSON object per log step) and TensorBoard events.

Only process 0 writes. On resume the JSONL file is cut back to the checkpoint's step, so
a run that was killed and resumed has exactly one record per step, as if it never
stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitzoo.atomic import atomic_write


def truncate_after(path: Path, step: int) -> None:
    """Drop records with ``step`` greater than ``step`` (atomic rewrite)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:
            continue  # a torn last line from a killed run
    with atomic_write(path, "w") as handle:
        handle.write("".join(f"{line}\n" for line in kept))


class MetricsWriter:
    """Appends to ``metrics.jsonl`` and TensorBoard; a no-op unless ``enabled``."""

    def __init__(self, workdir: Path, *, enabled: bool = True, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self._tb: Any = None
        if not enabled:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        truncate_after(self.path, resume_step)
        self._fh = self.path.open("a")
        from tensorboardX import SummaryWriter  # a dependency: a missing one is named by the CLI

        self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1
                                 if resume_step else None)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._fh.close()
        self._tb.close()
