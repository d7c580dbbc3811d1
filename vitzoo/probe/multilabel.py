"""Probe scores of a multi-label dataset: ridge regression to multi-hot targets and kNN label
voting, scored by mAP.

The same regularised least squares as the single-label probe (:class:`~vitzoo.probe.scores.
RidgePath`: standardised features, a bias feature, one eigendecomposition for every
regulariser), with ``{-1, 1}`` targets per class taken from the multi-hot rows instead of
a one-hot row; the scores are the regression outputs, ranked per class by average
precision (:func:`vitzoo.evaluators.multilabel_metrics.mean_average_precision`). The
regulariser is chosen on a deterministic held-out part of the training split (by mAP),
then the probe is refit on the whole training split and scored once on the evaluation
split, which chooses nothing.

kNN: each class's score is the share of the ``k`` most cosine-similar training images that
carry it (the neighbours of :func:`vitzoo.probe.scores.nearest_neighbours`), ranked by AP
like the probe's outputs.

Few-shot scores do not apply: "k images per class" is no sample of a dataset whose images
carry several classes (drawing k for one class draws others too), so none is reported.

:func:`score_all` mirrors :func:`vitzoo.probe.scores.score_all`: a **choose** side fitted
on the training split minus a seeded validation part and scored there (keeping the scores
per image, for the paired bootstrap between candidates), and a **report** side fitted on
the whole training split and scored once on the evaluation split, with a bootstrap
interval over its images (:mod:`vitzoo.probe.intervals`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np

from vitzoo.errors import VitzooError
from vitzoo.evaluators.multilabel_metrics import mean_average_precision
from vitzoo.probe.scores import (
    HOLDOUT_FRACTION,
    L2_GRID,
    VALIDATION_FRACTION,
    VALIDATION_SEED,
    RidgePath,
    nearest_neighbours,
)

TASK = "multilabel"
#: The scores a multi-label probe measures (the ranking names ``--sort`` takes).
SCORES = ("linear_map", "knn_map")
FEWSHOT_NOTE = ("few-shot scores do not apply to a multi-label dataset (k images per class is "
                "no sample when an image carries several classes): not measured")


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


def linear_probe_scores(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray
                        ) -> tuple[np.ndarray, float, float]:
    """``(per-class outputs on eval_x, chosen l2, its held-out mAP)`` of the full-train probe.

    The regulariser is the :data:`L2_GRID` value with the best mAP on a seeded
    :data:`HOLDOUT_FRACTION` of the training images, fitted on the rest; the probe is then
    refit on every training image.
    """
    from vitzoo.data.source import carve

    n = len(train_y)
    if n < 4:
        raise VitzooError(f"the training split has {n} image(s); a multi-label probe needs "
                          "at least 4 (some held out to choose the regulariser)",
                          "add training images")
    keep, held = carve(n, HOLDOUT_FRACTION)
    l2, holdout_map = choose_l2(fit(train_x[keep], train_y[keep]), train_x[held], train_y[held])
    return scores(fit(train_x, train_y), eval_x, l2), l2, holdout_map


def choose_l2(path: RidgePath, held_x: np.ndarray, held_y: np.ndarray) -> tuple[float, float]:
    """``(l2, its mAP)``: the :data:`L2_GRID` value whose probe ranks ``held_y`` best."""
    held_maps = [mean_average_precision(scores(path, held_x, l2), held_y) for l2 in L2_GRID]
    valid = [(m, l2) for m, l2 in zip(held_maps, L2_GRID, strict=True) if m is not None]
    if not valid:
        raise VitzooError("the held-out training images carry no class",
                          "add training images with labels")
    best_map, l2 = max(valid, key=lambda pair: pair[0])
    return l2, best_map


def linear_probe_map(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                     eval_y: np.ndarray) -> dict[str, Any]:
    """``map`` on the evaluation split, the chosen ``l2`` and its ``holdout_map``
    (:func:`linear_probe_scores`)."""
    outputs, l2, holdout_map = linear_probe_scores(train_x, train_y, eval_x)
    return {"map": mean_average_precision(outputs, eval_y), "l2": l2,
            "holdout_map": holdout_map, "examples": len(eval_y)}


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, k: int = 10
               ) -> np.ndarray:
    """Per evaluation image and class, the share of its ``k`` nearest training images with the class."""
    train_y = np.asarray(train_y) > 0
    out = np.zeros((len(eval_x), train_y.shape[1]), np.float64)
    for start, nearest in nearest_neighbours(train_x, eval_x, k):
        out[start:start + len(nearest)] = train_y[nearest].mean(axis=1)
    return out


def _pack_matrix(values: np.ndarray, dtype: str) -> dict[str, Any]:
    array = np.ascontiguousarray(values, dtype)
    return {"shape": list(array.shape), "dtype": dtype,
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def unpack_matrix(packed: dict[str, Any]) -> np.ndarray:
    """The array :func:`_pack_matrix` stored (per-image scores and targets in the saved scores)."""
    flat = np.frombuffer(base64.b64decode(packed["data"]), np.dtype(packed["dtype"]))
    return flat.reshape(packed["shape"]).astype(np.float64)


def smallest_class(targets: np.ndarray) -> int:
    """Images carrying the rarest class (0 when some class has none here)."""
    return int((np.asarray(targets) > 0).sum(axis=0).min()) if np.ndim(targets) == 2 else 0


def resampled_map(outputs: np.ndarray, targets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """mAP of ``outputs`` in every bootstrap resample (``counts [R, N]``, :func:`~vitzoo.probe.
    intervals.bootstrap_counts`); NaN where no resampled image carries a class.

    Vectorised over the resamples: a resample is the images weighted by how often they were
    drawn, so each class is sorted once and :func:`~vitzoo.evaluators.multilabel_metrics.
    average_precision`'s sum (tied scores one threshold) is taken with weighted counts. A
    drawn duplicate ties with itself, so this is the AP of the resampled rows.
    """
    outputs, truth = np.asarray(outputs, np.float64), np.asarray(targets) > 0
    counts = np.asarray(counts, np.float64)
    aps = np.full((counts.shape[0], truth.shape[1]), np.nan)
    for k in range(truth.shape[1]):
        order = np.argsort(-outputs[:, k], kind="stable")
        ranked = outputs[order, k]
        last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
        weights = counts[:, order]
        tp = np.cumsum(weights * truth[order, k], axis=1)[:, last_of_tie]
        seen = np.cumsum(weights, axis=1)[:, last_of_tie]
        total = tp[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(seen > 0, tp / seen, 0.0)
            recall = tp / total
            ap = np.sum(np.diff(recall, axis=1, prepend=0.0) * precision, axis=1)
        aps[:, k] = np.where(total[:, 0] > 0, ap, np.nan)
    defined = ~np.isnan(aps).all(axis=1)
    out = np.full(counts.shape[0], np.nan)
    out[defined] = np.nanmean(aps[defined], axis=1)
    return out


def map_interval(outputs: np.ndarray, targets: np.ndarray) -> list[float] | None:
    """95 % bootstrap interval over the images of the mAP of ``outputs``."""
    from vitzoo.probe.intervals import bootstrap_counts, bootstrap_interval

    interval = bootstrap_interval(resampled_map(outputs, targets, bootstrap_counts(len(targets))))
    return None if interval is None else list(interval)


def score_side(fit_set: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
               knn_k: int, per_image: bool) -> dict[str, Any]:
    """Linear and kNN mAP of probes fitted on ``fit_set``, measured on ``test`` (which chooses
    nothing): per-image outputs kept (``per_image``, the choosing side) or the bootstrap
    interval computed (the reported side)."""
    (fx, fy), (tx, ty) = fit_set, test
    linear, l2, holdout_map = linear_probe_scores(fx, fy, tx)
    neighbours = knn_scores(fx, fy, tx, knn_k)
    side: dict[str, Any] = {
        "examples": len(ty), "smallest_class": smallest_class(ty),
        "classes_scored": int((np.asarray(ty) > 0).any(axis=0).sum()),
        "linear": {"map": mean_average_precision(linear, ty), "l2": l2,
                   "holdout_map": holdout_map},
        "knn": {"map": mean_average_precision(neighbours, ty), "k": min(knn_k, len(fy))},
        "fewshot": {},
    }
    for name, outputs in (("linear", linear), ("knn", neighbours)):
        if per_image:
            side[name]["per_image"] = {"scores": _pack_matrix(outputs, "float32")}
        else:
            side[name]["interval"] = map_interval(outputs, ty)
    if per_image:
        side["per_image"] = {"targets": _pack_matrix(np.asarray(ty) > 0, "uint8")}
    return side


class MultiLabelProbeScores:
    """One side of a multi-label probe as an evaluator (the :mod:`vitzoo.evaluators` protocol):
    yields ``examples``, ``linear_map`` and ``knn_map`` and keeps the full result in :attr:`side`."""

    def __init__(self, name: str, fit_set: tuple[np.ndarray, np.ndarray],
                 scored: tuple[np.ndarray, np.ndarray], *, knn_k: int, per_image: bool) -> None:
        self.name, self.fit_set, self.scored = name, fit_set, scored
        self.settings = {"knn_k": knn_k, "per_image": per_image}
        self.side: dict[str, Any] = {}

    def run(self, subject: Any = None) -> Iterator[tuple[str, float | int | None]]:
        self.side = score_side(self.fit_set, self.scored, **self.settings)
        yield "examples", self.side["examples"]
        yield "linear_map", self.side["linear"]["map"]
        yield "knn_map", self.side["knn"]["map"]


def validation_part(n: int, fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices: a seeded ``fraction`` of the training images (not
    stratified: an image carries several classes), the same for every candidate."""
    from vitzoo.data.source import carve

    fit_rows, val = carve(n, fraction, seed=VALIDATION_SEED)
    if len(val) == 0 or len(fit_rows) < 4:
        raise VitzooError(f"the training split has {n} image(s), too few to hold out a "
                          "validation part for choosing between candidates",
                          "add training images")
    return fit_rows, val


def score_all(train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray],
              *, knn_k: int = 10, validation: tuple[np.ndarray, np.ndarray] | None = None,
              validation_name: str = "validation",
              fraction: float = VALIDATION_FRACTION) -> dict[str, Any]:
    """Every multi-label score of one candidate on both sides, JSON-able (plus ``notes``).

    As :func:`vitzoo.probe.scores.score_all`: ``choose`` fitted on the training split minus
    a ``fraction`` of its images and scored there, or, given the dataset's own
    ``validation`` split (features, multi-hot rows), fitted on the whole training split and
    scored on that; ``report`` fitted on the whole training split, scored on ``evaluation``.
    """
    from vitzoo.evaluators import run_all

    (tx, ty), (ex, ey) = train, evaluation
    if validation is None:
        fit_rows, val = validation_part(len(ty), fraction)
        chosen_on = (tx[fit_rows], ty[fit_rows]), (tx[val], ty[val])
        described = (f"validation: {fraction:.0%} of the training images (seed {VALIDATION_SEED}; "
                     "not stratified: an image carries several classes), held out of the fit")
    else:
        chosen_on = (tx, ty), validation
        described = (f"validation: the dataset's own {validation_name} split, "
                     "the whole training split fitted")
    sides = [MultiLabelProbeScores("validation", *chosen_on, knn_k=knn_k, per_image=True),
             MultiLabelProbeScores("evaluation", (tx, ty), (ex, ey), knn_k=knn_k,
                                   per_image=False)]
    metrics = run_all(sides, None)
    choose, report = sides[0].side, sides[1].side
    choose["metrics"], report["metrics"] = metrics["validation"], metrics["evaluation"]
    choose["split"] = described
    choose["source"] = "carved" if validation is None else "dataset"
    return {"task": TASK, "choose": choose, "report": report, "notes": [FEWSHOT_NOTE]}


def paired_map_test(first: dict[str, Any], second: dict[str, Any],
                    targets: dict[str, Any]) -> dict[str, Any]:
    """Paired bootstrap of the mAP difference of two candidates' saved per-image outputs."""
    from vitzoo.probe.intervals import bootstrap_counts, paired_bootstrap

    truth = unpack_matrix(targets)
    counts = bootstrap_counts(len(truth))
    return paired_bootstrap(
        resampled_map(unpack_matrix(first["per_image"]["scores"]), truth, counts)
        - resampled_map(unpack_matrix(second["per_image"]["scores"]), truth, counts))
