"""How to split a global batch: devices, processes, and gradient-accumulation micro-steps.

``--accum auto`` estimates how many images fit on one device at once from the model's
activation size (what the backward pass must keep per example: per layer, a handful of
``tokens x width`` tensors plus the ``heads x tokens x tokens`` attention maps) and the
device's memory (``bytes_limit`` on GPU/TPU, a share of available host memory on CPU),
then picks the largest micro-batch that divides the per-device batch and fits. The
same command thus uses 1 micro-step on a laptop CPU with plenty of RAM and 8 on a
16 GB GPU at 384 px, with no hand tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitzoo.errors import VitzooError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    processes: int
    local_devices: int
    accum: int
    note: str | None = None

    @property
    def per_device(self) -> int:
        return self.global_batch // (self.processes * self.local_devices)

    @property
    def micro_batch(self) -> int:
        return self.per_device // self.accum


def activation_bytes(config: Any, resolution: int, itemsize: int) -> int:
    """Rough bytes of activations kept for the backward pass, per example."""
    tokens = config.grid(resolution) ** 2 + config.num_prefix_tokens
    d, m, layers = config.hidden_size, config.mlp_dim, config.num_layers
    if config.family == "mixer":
        per_layer = tokens * (10 * d + 2 * m) + d * 2 * (config.tokens_mlp_dim or tokens)
    else:
        per_layer = tokens * (14 * d + 3 * m) + 3 * max(config.num_heads, 1) * tokens * tokens
    total = layers * per_layer
    if config.family == "hybrid":
        total += resolution * resolution * config.resnet_width * 4  # the stem at full res
    return int(total * itemsize * 1.5)


def device_memory(local_devices: int) -> int:
    """Bytes one device may use for activations."""
    import jax

    stats = None
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # CPU backends may not implement it
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return host_device_memory(local_devices)


def host_device_memory(local_devices: int) -> int:
    """Bytes one CPU host device may use: half the available host memory, shared evenly."""
    from vitzoo.data.memory import available_host_memory

    return available_host_memory() // 2 // max(1, local_devices)


def plan(global_batch: int, accum: int | str, *, processes: int, local_devices: int,
         config: Any = None, resolution: int = 224, itemsize: int = 4,
         param_bytes: int = 0, memory: int | None = None) -> BatchPlan:
    """Validate/adjust the global batch and choose the number of accumulation steps.

    ``memory``: bytes one device may use (None: :func:`device_memory`, which starts JAX;
    the autotune trial plans candidate device counts before JAX starts).
    """
    if global_batch < 1:
        raise VitzooError(f"--batch must be positive, got {global_batch}")
    devices = processes * local_devices
    note = None
    if global_batch % devices:
        adjusted = global_batch - global_batch % devices
        if adjusted == 0:
            raise VitzooError(f"--batch {global_batch} is smaller than the {devices} devices",
                              f"use --batch {devices} or a multiple of it")
        note = (f"global batch {global_batch} is not divisible by {devices} devices: "
                f"using {adjusted}")
        global_batch = adjusted
    per_device = global_batch // devices
    if accum == "auto":
        if config is None:
            steps = 1
        else:
            free = (device_memory(local_devices) if memory is None else memory) \
                - 4 * param_bytes
            per_example = max(1, activation_bytes(config, resolution, itemsize))
            fit = max(1, free // per_example)
            micro = max(d for d in range(1, per_device + 1)
                        if per_device % d == 0 and (d <= fit or d == 1))
            steps = per_device // micro
    else:
        try:
            steps = int(accum)
        except ValueError:
            raise VitzooError(f"--accum must be 'auto' or a positive integer, got {accum!r}") \
                from None
        if steps < 1 or per_device % steps:
            raise VitzooError(
                f"--accum {steps} does not divide the per-device batch {per_device} "
                f"(global batch {global_batch} over {devices} device(s))",
                "choose an --accum that divides it, or --accum auto")
    return BatchPlan(global_batch, processes, local_devices, steps, note)
