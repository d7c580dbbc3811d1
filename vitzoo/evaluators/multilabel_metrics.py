"""The multi-label facts, once: sigmoid loss, average precision, F1 and its threshold.

A multi-label model scores every class independently (a sigmoid per class), so it is
judged without a threshold by mean average precision (``map``: macro over the classes
that have at least one positive example; a class without positives has no defined AP)
and, once a threshold turns scores into label sets, by the micro F1 over every
(image, class) pair (``f1``, dominated by the frequent classes) and the macro F1 (``macro_f1``:
the mean of the per-class F1, over the same classes as ``map``, so a rare class counts as
much as a frequent one). The threshold is a choice, so it is made on validation data
(:func:`choose_threshold`, by micro F1) and then applied unchanged to the split that is
reported.

Units are those of every metric: fractions in [0, 1]. The loss is the mean over classes
of the per-class binary cross-entropy, averaged over examples (``BCEWithLogitsLoss``'s
mean), so its scale does not grow with the number of classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The names a multi-label evaluator yields, in this order.
METRICS = ("map", "f1", "macro_f1", "threshold", "loss", "examples")
#: Where each is stored in metrics.jsonl and run.json.
RECORD_KEYS = {"map": "eval_map", "f1": "eval_f1", "macro_f1": "eval_macro_f1",
               "threshold": "eval_threshold",
               "loss": "eval_loss", "examples": "eval_examples"}
#: The thresholds tried on validation (0.05 .. 0.95): coarse enough not to fit noise.
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: The threshold used before any was chosen (an untrained head, a run recorded without one).
DEFAULT_THRESHOLD = 0.5


def sigmoid_cross_entropy(logits: Any, targets: Any) -> Any:
    """Per-example binary cross-entropy of float32 logits against 0/1 targets, mean over classes (jax)."""
    import jax.numpy as jnp
    import optax

    return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                              targets.astype(jnp.float32)).mean(-1)


def numpy_loss(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """:func:`sigmoid_cross_entropy` on the host (float64), for scores gathered from devices."""
    x = np.asarray(logits, np.float64)
    z = np.asarray(targets, np.float64)
    return (np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))).mean(-1)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the step precision-recall curve of one class; None without positives.

    Tied scores form one threshold (they cannot be ordered), as in scikit-learn's
    ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over distinct scores.
    """
    positives = np.asarray(positives) > 0
    total = int(positives.sum())
    if total == 0:
        return None
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked, hits = np.asarray(scores, np.float64)[order], positives[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tp = np.cumsum(hits)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Macro mean of :func:`average_precision` over the classes with a positive example."""
    values = [average_precision(scores[:, k], targets[:, k]) for k in range(targets.shape[1])]
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def f1_score(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    """Micro F1 over every (image, class) pair of the label sets ``probabilities >= threshold``."""
    predicted = np.asarray(probabilities) >= threshold
    truth = np.asarray(targets) > 0
    tp = float(np.sum(predicted & truth))
    denominator = float(predicted.sum() + truth.sum())
    return 2 * tp / denominator if denominator else 1.0


def macro_f1_score(probabilities: np.ndarray, targets: np.ndarray,
                   threshold: float) -> float | None:
    """Mean per-class F1 at ``threshold`` over the classes with a positive example (as
    :func:`mean_average_precision`); None when no class has one."""
    truth = np.asarray(targets) > 0
    kept = np.flatnonzero(truth.any(axis=0))
    if len(kept) == 0:
        return None
    return float(np.mean([f1_score(probabilities[:, k], truth[:, k], threshold) for k in kept]))


def choose_threshold(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The :data:`THRESHOLDS` value with the best F1 (the one nearest 0.5 among equals)."""
    ranked = sorted(THRESHOLDS, key=lambda t: (-f1_score(probabilities, targets, t),
                                               abs(t - DEFAULT_THRESHOLD)))
    return ranked[0]


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray,
                       threshold: float) -> dict[str, float | int | None]:
    """``map``, ``f1`` and ``macro_f1`` (at ``threshold``), ``threshold``, ``loss`` and
    ``examples`` of one split."""
    probabilities = sigmoid(logits)
    return {"map": mean_average_precision(probabilities, targets),
            "f1": f1_score(probabilities, targets, threshold),
            "macro_f1": macro_f1_score(probabilities, targets, threshold),
            "threshold": float(threshold),
            "loss": float(numpy_loss(logits, targets).mean()) if len(targets) else 0.0,
            "examples": len(targets)}
