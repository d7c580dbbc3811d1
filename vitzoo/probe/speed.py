"""Forward speed measured now, in the run that ranks it.

A figure timed in an earlier run was taken under another load (a busy machine read a
12-layer model faster than a 6-layer one), so img/s is never cached: every probe times every
candidate's compiled forward again, at the batch and dtype it extracted with. One warm-up call
(compilation, first transfers) is not timed; then :data:`TIMED_BATCHES` batches are timed one
by one, and the median is reported with the slowest and fastest batch as its spread.
The figure records the matrix-product backend it was timed with (``matmul``: which, why, and
what the forward's autotune decided, :mod:`vitzoo.backbone.forward_tune`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

#: Timed batches per candidate (at least 3, so the median is not one noisy call).
TIMED_BATCHES = 5
WARMUP_BATCHES = 1


def time_batches(run: Callable[[], Any], *, repeats: int = TIMED_BATCHES,
                 warmup: int = WARMUP_BATCHES,
                 clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run`` (which must wait for its result)."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = clock()
        run()
        seconds.append(max(clock() - start, 1e-9))
    return seconds


def summary(seconds: list[float], batch: int) -> dict[str, Any]:
    """img/s of the median batch, with the fastest and slowest batch as the spread."""
    rates = sorted(batch / s for s in seconds)
    return {"img_per_sec": statistics.median(rates), "img_per_sec_min": rates[0],
            "img_per_sec_max": rates[-1], "timed_batches": len(rates),
            "warmup_batches": WARMUP_BATCHES,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}


def measure(extractor: Any, repeats: int = TIMED_BATCHES) -> dict[str, Any]:
    """img/s of ``extractor``'s compiled forward on one global batch of random pixels.

    Decoding and host transfers are excluded: the batch is placed on the devices once.
    The backend is decided first (a trial the extraction left unfinished is finished), so
    every timed batch runs the same compiled forward.
    """
    import jax

    extractor.forward.tune()

    devices = extractor.devices
    res = extractor.backbone.resolution
    layout = extractor.forward.layout  # this process's share of the global batch
    images = np.random.default_rng(0).uniform(
        -1, 1, (layout.local_devices, layout.per_device, res, res, 3)).astype(np.float32)
    on_devices = extractor.placement.shard(images)

    def run() -> None:
        jax.block_until_ready(extractor.forward.device_call(on_devices))

    device = devices[0]
    return {**summary(time_batches(run, repeats=repeats), extractor.global_batch),
            "batch": extractor.global_batch, "dtype": extractor.dtype,
            "device": str(getattr(device, "device_kind", device.platform)),
            "devices": len(devices), "matmul": extractor.forward.matmul_record()}
