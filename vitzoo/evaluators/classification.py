"""A classifier on a split: the periodic evaluation of a fine-tune and ``vitzoo evaluate``.

Both build the same :class:`Classification` over a :class:`vitzoo.data.Split` (same
batches, same pmapped step, same summation order), so the number ``evaluate`` prints for
a run's final parameters is the run's final ``eval_accuracy``, exactly. The whole split is
covered once: the last batch is padded and its padding masked. The step ``psum``-s its
sums over every device of every process, so each process holds the global totals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vitzoo.evaluators.metrics import cross_entropy, metrics_from_sums

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.data import Layout, Preprocess, Split


def make_eval_step(apply_fn: Callable[..., Any], *, num_classes: int,
                   pmap: bool = True) -> Callable[..., dict[str, Any]]:
    """``eval(params, batch) -> sums`` over the whole (global) batch, padded rows masked.

    Returns summed loss, top-1 and top-5 hits, the example count, and per-class hit and
    example counts, all ``psum``-ed so every device (and process) holds the global totals.
    """
    import jax
    import jax.numpy as jnp

    from vitzoo.backbone.devices import AXIS

    k = min(5, num_classes)

    def evaluate(params: Any, batch: dict[str, Any]) -> dict[str, Any]:
        logits = apply_fn({"params": params}, batch["image"], train=False).astype(jnp.float32)
        labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
        loss = cross_entropy(logits, labels, num_classes)
        top1 = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        topk = jax.lax.top_k(logits, k)[1]
        top5 = jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)
        onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None]
        sums = {
            "loss": jnp.sum(loss * mask), "top1": jnp.sum(top1 * mask),
            "top5": jnp.sum(top5 * mask), "count": jnp.sum(mask),
            "class_hits": onehot.T @ top1, "class_count": onehot.sum(0),
        }
        return jax.lax.psum(sums, AXIS) if pmap else sums

    if not pmap:
        return jax.jit(evaluate)
    return jax.pmap(evaluate, axis_name=AXIS)


def eval_totals(eval_step: Callable[[Any, Any], Any], params: Any,
                batches: Iterable[dict[str, np.ndarray]], devices: Sequence[Any]
                ) -> dict[str, np.ndarray]:
    """Sums over every batch of the pmapped ``eval_step`` (``count``, ``top1``, ...), on the host."""
    import jax
    import jax.numpy as jnp

    from vitzoo.backbone.devices import shard, unreplicate

    totals: dict[str, Any] = {}
    for batch in batches:
        sums = eval_step(params, shard(batch, devices))
        totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
    return {k: np.asarray(unreplicate(v)) for k, v in totals.items()}


class Classification:
    """Top-1, top-5, loss and example count of a classifier on one split.

    ``run(params)`` takes parameters replicated on ``devices`` (as the trainer holds them);
    :attr:`sums` keeps the last run's totals (per-class counts for ``evaluate``).
    ``step``: the step to run instead of a fresh :func:`make_eval_step` of ``apply_fn``
    (``evaluate`` passes a matrix-product race over such steps,
    :mod:`vitzoo.backbone.forward_tune`); it must compute the same sums.
    """

    def __init__(self, name: str, apply_fn: Callable[..., Any], split: Split, *,
                 recipe: Preprocess, layout: Layout, devices: Sequence[Any],
                 num_classes: int, step: Callable[..., Any] | None = None) -> None:
        self.name = name
        self.num_classes = num_classes
        self.devices = list(devices)
        self._step = (step if step is not None
                      else make_eval_step(apply_fn, num_classes=num_classes))
        self._batches = split.eval_batches(recipe, layout)
        self.sums: dict[str, np.ndarray] = {}

    def run(self, params: Any) -> Iterator[tuple[str, float | int | None]]:
        self.sums = eval_totals(self._step, params, self._batches, self.devices)
        yield from metrics_from_sums(self.sums, self.num_classes).items()
