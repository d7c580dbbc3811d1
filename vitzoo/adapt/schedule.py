"""The learning-rate schedule of the reference trainer: linear warmup times cosine decay.

``lr(step) = base * min(1, step / warmup) * 0.5 * (1 + cos(pi * progress))`` with
``progress = clip((step - warmup) / (total - warmup), 0, 1)``: exactly
``vit_jax.utils.create_learning_rate_schedule(decay_type='cosine')``, written once and
usable both inside the jitted update (jnp) and on the host for logging (numpy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int,
                  ) -> Callable[[Any], Any]:
    """An optax-compatible schedule ``step -> lr`` (works on ints, numpy and jax arrays)."""
    if total_steps < 1:
        from vitzoo.errors import VitzooError

        raise VitzooError(f"--steps must be at least 1, got {total_steps}")
    warmup_steps = max(0, min(warmup_steps, total_steps))
    decay_steps = max(1, total_steps - warmup_steps)

    def schedule(step: Any) -> Any:
        import jax.numpy as jnp

        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        lr = base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        if warmup_steps:
            lr = lr * jnp.minimum(1.0, step / warmup_steps)
        return lr

    return schedule


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int) -> float:
    """The same schedule in plain Python, for logs and metrics (no device round trip)."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if warmup_steps:
        lr *= min(1.0, step / warmup_steps)
    return lr
