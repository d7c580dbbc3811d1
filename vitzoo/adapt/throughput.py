"""Train metrics and images per second over a window of steps.

The first step is timed apart (``first_step_s``: data, checkpoint load and compile)
and never counted as throughput. A window runs from the end of the last report to
now, so evaluation time is not counted as training time either.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class TrainWindow:
    """Collects the per-step metrics of the running window and reports their means."""

    def __init__(self, images_per_step: int, started: float) -> None:
        self.images_per_step = images_per_step
        self.started = started
        self.first_step_s: float | None = None
        self.img_per_sec = 0.0
        self._window: list[Any] = []
        self._since = time.perf_counter()

    def add(self, metrics: Any) -> bool:
        """Count one step's (device) metrics; True for the first step, which opens the window."""
        self._window.append(metrics)
        if self.first_step_s is not None:
            return False
        import jax

        jax.block_until_ready(metrics)
        self.first_step_s = time.perf_counter() - self.started
        self.restart()
        return True

    def summary(self) -> dict[str, float]:
        """Means of the window's train metrics and its images/s ({} for an empty window)."""
        if not self._window:
            return {}
        import jax

        host = [jax.tree.map(lambda x: float(np.asarray(x)[0]), m)
                for m in jax.device_get(self._window)]
        elapsed = time.perf_counter() - self._since
        self.img_per_sec = len(self._window) * self.images_per_step / max(elapsed, 1e-9)
        return {"train_loss": float(np.mean([m["loss"] for m in host])),
                "train_accuracy": float(np.mean([m["accuracy"] for m in host])),
                "grad_norm": float(np.mean([m["grad_norm"] for m in host])),
                "img_per_sec": self.img_per_sec}

    def restart(self) -> None:
        """Open a new window now."""
        self._window = []
        self._since = time.perf_counter()
