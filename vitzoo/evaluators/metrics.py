"""The evaluator protocol and the facts every evaluator shares: names, top-5 rule, units, loss.

Evaluators reduce a split to *sums* (``loss``, ``top1``, ``top5``, ``count`` and per-class
``class_hits``/``class_count``), whether on the devices (a pmapped, ``psum``-ed step) or
in NumPy (:func:`numpy_sums`); :func:`metrics_from_sums` turns sums into the named
metrics, so both kinds report the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np

#: The names every classification evaluator yields, in this order.
METRICS = ("top1", "top5", "loss", "examples")

#: Where each metric is stored in metrics.jsonl and run.json (resume and the catalog read these).
RECORD_KEYS = {"top1": "eval_accuracy", "top5": "eval_top5", "loss": "eval_loss",
               "examples": "eval_examples"}

Metric = tuple[str, "float | int | None"]


class Evaluator(Protocol):
    """Evaluates a subject (parameters, a head, ...) on one split and yields named metrics."""

    name: str

    def run(self, subject: Any) -> Iterator[tuple[str, float | int | None]]:
        """``(metric name, value)`` pairs; values are fractions, counts or None (not defined)."""
        ...


def top5_applies(num_classes: int) -> bool:
    """Top-5 means something only with more than five classes (otherwise it is 1.0 by construction)."""
    return num_classes > 5


def cross_entropy(logits: Any, labels: Any, num_classes: int,
                  label_smoothing: float = 0.0) -> Any:
    """Per-example softmax cross-entropy of float32 logits (jax), optionally label-smoothed."""
    import jax
    import jax.numpy as jnp
    import optax

    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def numpy_sums(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """The sums of :func:`metrics_from_sums` computed on the host from float32 logits ``[N, K]``."""
    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels, np.int64)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    hits = (np.argmax(logits, axis=1) == labels).astype(np.float64)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :min(5, num_classes)]
    onehot = np.eye(num_classes)[labels]
    return {"loss": -logp[np.arange(len(labels)), labels].sum(), "top1": hits.sum(),
            "top5": (top == labels[:, None]).any(axis=1).sum(), "count": np.float64(len(labels)),
            "class_hits": onehot.T @ hits, "class_count": onehot.sum(axis=0)}


def metrics_from_sums(sums: dict[str, Any], num_classes: int) -> dict[str, float | int | None]:
    """``top1``, ``top5`` (None for <= 5 classes), ``loss`` per example, and ``examples``."""
    count = max(float(sums["count"]), 1.0)
    return {"top1": float(sums["top1"]) / count,
            "top5": float(sums["top5"]) / count if top5_applies(num_classes) else None,
            "loss": float(sums["loss"]) / count,
            "examples": int(sums["count"])}


def per_class(sums: dict[str, Any], class_names: list[str]) -> list[dict[str, Any]]:
    """Top-1 per class (None for a class with no example), from the per-class sums."""
    rows = []
    for i, name in enumerate(class_names):
        n = int(sums["class_count"][i])
        rows.append({"index": i, "class": name, "examples": n,
                     "accuracy": float(sums["class_hits"][i]) / n if n else None})
    return rows


def record_fields(metrics: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Named metrics as stored in metrics.jsonl/run.json (``top1`` -> ``eval_accuracy``...)."""
    return {RECORD_KEYS.get(name, name): value for name, value in metrics}


def run_all(evaluators: Iterable[Evaluator], subject: Any) -> dict[str, dict[str, Any]]:
    """Every evaluator's metrics on ``subject``: ``{evaluator name: {metric: value}}``."""
    return {e.name: dict(e.run(subject)) for e in evaluators}
