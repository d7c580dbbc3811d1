"""One evaluation pass: the masked sums of the eval step over a split, and their means.

Shared by the periodic evaluation of a run and by ``vitzoo evaluate``, so the two give
the same number for the same parameters (same batches, same summation order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def eval_totals(eval_step: Callable[[Any, Any], Any], params: Any,
                batches: Iterable[dict[str, np.ndarray]], devices: Sequence[Any]
                ) -> dict[str, np.ndarray]:
    """Sums over every batch of the pmapped ``eval_step`` (``count``, ``top1``, ...), on the host."""
    import jax
    import jax.numpy as jnp

    from vitzoo.adapt.devices import shard, unreplicate

    totals: dict[str, Any] = {}
    for batch in batches:
        sums = eval_step(params, shard(batch, devices))
        totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
    return {k: np.asarray(unreplicate(v)) for k, v in totals.items()}


def eval_means(totals: dict[str, np.ndarray], num_classes: int) -> dict[str, float | None]:
    """Top-1, top-5 and loss per example, and the number of examples counted.

    Top-5 is None for five classes or fewer: it would be 100% by construction, a number
    that says nothing about the model.
    """
    count = max(float(totals["count"]), 1.0)
    return {"eval_accuracy": float(totals["top1"]) / count,
            "eval_top5": float(totals["top5"]) / count if num_classes > 5 else None,
            "eval_loss": float(totals["loss"]) / count,
            "eval_examples": int(totals["count"])}
