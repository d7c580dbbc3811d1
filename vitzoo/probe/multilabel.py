"""The linear probe of a multi-label dataset: ridge regression to multi-hot targets, scored by mAP.

The same regularised least squares as the single-label probe (:class:`~vitzoo.probe.scores.
RidgePath`: standardised features, a bias feature, one eigendecomposition for every
regulariser), with ``{-1, 1}`` targets per class taken from the multi-hot rows instead of
a one-hot row; the scores are the regression outputs, ranked per class by average
precision (:func:`vitzoo.evaluators.multilabel_metrics.mean_average_precision`). The
regulariser is chosen on a deterministic held-out part of the training split (by mAP),
then the probe is refit on the whole training split and scored once on the evaluation
split, which chooses nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitzoo.errors import VitzooError
from vitzoo.evaluators.multilabel_metrics import mean_average_precision
from vitzoo.probe.scores import HOLDOUT_FRACTION, L2_GRID, RidgePath


def multi_hot_targets(labels: np.ndarray) -> np.ndarray:
    """``{-1, 1}`` per class: 1 where the image carries the class."""
    return 2.0 * (np.asarray(labels) > 0) - 1.0


def fit(x: np.ndarray, labels: np.ndarray) -> RidgePath:
    """:meth:`RidgePath.fit` with multi-hot targets (``labels`` ``[N, K]`` of 0/1)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True) + 1e-5
    design = RidgePath._design(x, mean, std)
    y = multi_hot_targets(labels)
    n, d = design.shape
    with _one_thread():
        if n >= d:
            eigs, q = np.linalg.eigh(design.T @ design)
            lhs, rhs = q, q.T @ (design.T @ y)
        else:
            eigs, q = np.linalg.eigh(design @ design.T)
            lhs, rhs = design.T @ q, q.T @ y
    return RidgePath(mean, std, lhs, rhs, eigs)


def _one_thread() -> Any:
    from vitzoo.probe.scores import one_blas_thread

    return one_blas_thread()


def scores(path: RidgePath, x: np.ndarray, l2: float) -> np.ndarray:
    """The probe's per-class outputs ``[N, K]`` for raw features ``x``."""
    kernel, bias = path.head(l2)
    return np.asarray(x, np.float64) @ kernel + bias


def linear_probe_map(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                     eval_y: np.ndarray) -> dict[str, Any]:
    """``map`` on the evaluation split, the chosen ``l2`` and its ``holdout_map``.

    The regulariser is the :data:`L2_GRID` value with the best mAP on a seeded
    :data:`HOLDOUT_FRACTION` of the training images, fitted on the rest.
    """
    from vitzoo.data.source import carve

    n = len(train_y)
    if n < 4:
        raise VitzooError(f"the training split has {n} image(s); a multi-label probe needs "
                          "at least 4 (some held out to choose the regulariser)",
                          "add training images")
    keep, held = carve(n, HOLDOUT_FRACTION)
    path = fit(train_x[keep], train_y[keep])
    held_maps = [mean_average_precision(scores(path, train_x[held], l2), train_y[held])
                 for l2 in L2_GRID]
    valid = [(m, l2) for m, l2 in zip(held_maps, L2_GRID, strict=True) if m is not None]
    if not valid:
        raise VitzooError("the held-out training images carry no class",
                          "add training images with labels")
    holdout_map, l2 = max(valid, key=lambda pair: pair[0])
    final = fit(train_x, train_y)
    return {"map": mean_average_precision(scores(final, eval_x, l2), eval_y), "l2": l2,
            "holdout_map": holdout_map, "examples": len(eval_y)}
