"""Scores of frozen features: few-shot and full-train linear probes, k-nearest neighbours.

Linear probe (the ViT paper's few-shot evaluation, as big_vision's ``fewshot_lsr``):
features are standardised with the fit set's mean and std, a constant feature of
:data:`BIAS` is appended (so the bias is almost unregularised), and regularised least
squares maps them to {-1, 1}^K targets; the prediction is the argmax. One
eigendecomposition per fit set gives the solution for every regulariser in
:data:`L2_GRID` at the cost of small matrix products.

Every score is computed twice, on two sides that never share a choice
(:func:`score_all`):

* **choose**: fitted on the training split minus a *validation part* (a stratified,
  seeded :data:`VALIDATION_FRACTION` of every class, :func:`validation_part`) and scored on
  that part, per image, so candidates can be compared there with a paired test; or, when
  the dataset has its own validation split (neither trained nor reported on), fitted on the
  whole training split and scored on that split;
* **report**: fitted on the whole training split and scored once on the evaluation split.

Nothing on either side looks at evaluation labels to choose anything: the regulariser is
chosen on held-out labelled images of the side's own training images only:

* k-shot: each seeded draw takes k images per class to fit and a disjoint k per class
  ("held-out shots") to choose the regulariser; a class needs 2k training images;
* full-train: a deterministic 10 % per class of the fit set chooses it, then the probe is
  refit on the whole fit set.

kNN: cosine similarity on L2-normalised features, majority vote of the ``k`` nearest
training images (ties go to the lower class index).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitzoo.errors import VitzooError

BIAS = 100.0
L2_GRID = tuple(2.0 ** i for i in range(-10, 20))
DEFAULT_SHOTS = (1, 5, 10, 25)
HOLDOUT_FRACTION = 0.1
#: Share of each training class held out as the validation part that candidates are chosen on.
VALIDATION_FRACTION = 0.2
#: Seed of that carve (fixed: every candidate and every rerun chooses on the same images).
VALIDATION_SEED = 0


def targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """{-1, 1}^K one-hot targets."""
    return 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0


def one_blas_thread() -> Any:
    """A context in which BLAS/LAPACK use one thread.

    The few-shot solves are many small problems (at most features x features); threads gain
    nothing on them and, on a busy machine, OpenBLAS threads waiting for each other made a
    250 x 250 ``eigh`` take 1.7 s instead of 10 ms (measured).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with one_blas_thread():
        return np.linalg.eigh(matrix)


@dataclass
class RidgePath:
    """Regularised least squares on one fit set, solvable for any regulariser.

    ``w(l2) = (lhs * 1 / (eigs + l2)) @ rhs``: with ``X`` the design matrix ``[N, D+1]``,
    either ``X^T X = Q diag(eigs) Q^T`` (``lhs = Q``, ``rhs = Q^T X^T Y``) when N >= D+1,
    or ``X X^T = Q diag(eigs) Q^T`` (``lhs = X^T Q``, ``rhs = Q^T Y``) otherwise.
    """

    mean: np.ndarray
    std: np.ndarray
    lhs: np.ndarray
    rhs: np.ndarray
    eigs: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, num_classes: int) -> RidgePath:
        x = np.asarray(x, np.float64)
        mean = x.mean(axis=0, keepdims=True)
        std = x.std(axis=0, keepdims=True) + 1e-5
        design = cls._design(x, mean, std)
        y = targets(labels, num_classes)
        n, d = design.shape
        if n >= d:
            eigs, q = _eigh(design.T @ design)
            lhs, rhs = q, q.T @ (design.T @ y)
        else:
            eigs, q = _eigh(design @ design.T)
            lhs, rhs = design.T @ q, q.T @ y
        return cls(mean, std, lhs, rhs, eigs)

    @staticmethod
    def _design(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - mean) / std
        return np.concatenate([z, np.full((z.shape[0], 1), BIAS)], axis=1)

    def weights(self, l2: float) -> np.ndarray:
        """``[D+1, K]`` weights on the standardised features plus the bias feature."""
        return (self.lhs / (self.eigs + l2)[None, :]) @ self.rhs

    def projector(self, x: np.ndarray) -> np.ndarray:
        """``design(x) @ lhs``: computed once, then predictions for any l2 are cheap."""
        return self._design(x, self.mean, self.std) @ self.lhs

    def predict_projected(self, projected: np.ndarray, l2: float) -> np.ndarray:
        return np.argmax((projected / (self.eigs + l2)[None, :]) @ self.rhs, axis=1)

    def predict(self, x: np.ndarray, l2: float) -> np.ndarray:
        """Class predictions for raw features ``x`` with regulariser ``l2``.

        Through :meth:`head`, so the standardisation is folded into the weights instead of
        applied to every evaluation row (pass float64 ``x`` to avoid a conversion per call).
        """
        kernel, bias = self.head(l2)
        return np.argmax(np.asarray(x, np.float64) @ kernel + bias, axis=1)

    def head(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
        """The probe as a head on raw features: ``x @ kernel + bias`` (same argmax)."""
        w = self.weights(l2)
        kernel = w[:-1] / self.std.reshape(-1, 1)
        bias = BIAS * w[-1] - (self.mean / self.std) @ w[:-1]
        return kernel, bias.reshape(-1)


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else 0.0


def choose_l2(path: RidgePath, x_val: np.ndarray, y_val: np.ndarray) -> tuple[float, float]:
    """The regulariser with the best held-out accuracy (ties: the stronger one)."""
    projected = path.projector(x_val)
    best, best_acc = L2_GRID[0], -1.0
    for l2 in L2_GRID:
        acc = accuracy(path.predict_projected(projected, l2), y_val)
        if acc >= best_acc:
            best, best_acc = l2, acc
    return best, best_acc


def draw_shots(labels: np.ndarray, num_classes: int, k: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded draw of k fit and k held-out indices per class (disjoint)."""
    rng = np.random.default_rng([seed, k])
    fit, held = [], []
    for cls in range(num_classes):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        fit.append(members[:k])
        held.append(members[k:2 * k])
    return np.concatenate(fit), np.concatenate(held)


def fewshot(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
            num_classes: int, shots: tuple[int, ...] = DEFAULT_SHOTS, seeds: int = 5, *,
            per_image: bool = False) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """k-shot accuracy on ``eval_x``, ``{k: {mean, std, runs, l2}}``, and notes.

    A k for which some class has fewer than 2k training images is skipped with a note.
    ``per_image`` adds ``correct_draws``: per image, how many of the draws got it right
    (what a paired comparison of two candidates needs).
    """
    if seeds < 1:
        raise VitzooError(f"--seeds must be at least 1, got {seeds}", "e.g. --seeds 5")
    counts = np.bincount(train_y, minlength=num_classes)
    eval_x = np.asarray(eval_x, np.float64)  # once, not once per draw
    out: dict[int, dict[str, Any]] = {}
    notes: list[str] = []
    for k in shots:
        if k < 1:
            raise VitzooError(f"--shots values must be at least 1, got {k}", "e.g. --shots 1,5,10,25")
        if counts.min() < 2 * k:
            notes.append(f"{k}-shot skipped: it needs {2 * k} training images per class "
                         f"({k} to fit, {k} held out to choose the regulariser) and the "
                         f"smallest class has {int(counts.min())}")
            continue
        accs, l2s = [], []
        correct_draws = np.zeros(len(eval_y), np.int64)
        with one_blas_thread():
            for seed in range(seeds):
                fit, held = draw_shots(train_y, num_classes, k, seed)
                path = RidgePath.fit(train_x[fit], train_y[fit], num_classes)
                l2, _ = choose_l2(path, train_x[held], train_y[held])
                hits = path.predict(eval_x, l2) == eval_y
                correct_draws += hits
                accs.append(float(np.mean(hits)) if len(eval_y) else 0.0)
                l2s.append(l2)
        out[k] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": accs,
                  "l2": l2s}
        if per_image:
            out[k]["correct_draws"] = correct_draws
    return out, notes


def holdout_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices of the training split for choosing the full-train regulariser."""
    from vitzoo.data.source import carve

    fit, held = carve(len(labels), HOLDOUT_FRACTION, labels)
    if len(held) == 0:
        raise VitzooError("the training split is too small to hold out images for choosing "
                          "the regulariser (a class needs at least 2 images)",
                          "add training images")
    return fit, held


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, num_classes: int
                 ) -> tuple[RidgePath, float, float]:
    """The full-train probe: (path refit on all training images, chosen l2, held-out acc)."""
    fit, held = holdout_split(train_y)
    l2, held_acc = choose_l2(RidgePath.fit(train_x[fit], train_y[fit], num_classes),
                             train_x[held], train_y[held])
    return RidgePath.fit(train_x, train_y, num_classes), l2, held_acc


def knn(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
        num_classes: int, k: int = 10, block: int = 1024) -> float:
    """kNN accuracy (cosine similarity, majority vote), evaluated in row blocks."""
    hits = knn_hits(train_x, train_y, eval_x, eval_y, num_classes, k, block)
    return float(np.mean(hits)) if len(hits) else 0.0


def knn_hits(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
             num_classes: int, k: int = 10, block: int = 1024) -> np.ndarray:
    """Per evaluation image, whether the kNN vote gets it right."""
    hits = []
    for start, nearest in nearest_neighbours(train_x, eval_x, k, block):
        votes = np.zeros((len(nearest), num_classes), np.int64)
        np.add.at(votes, (np.arange(len(nearest))[:, None], train_y[nearest]), 1)
        hits.append(np.argmax(votes, axis=1) == eval_y[start:start + len(nearest)])
    return np.concatenate(hits) if hits else np.zeros(0, bool)


def nearest_neighbours(train_x: np.ndarray, eval_x: np.ndarray, k: int, block: int = 1024
                       ) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, indices [rows, k])`` of the ``k`` most cosine-similar training images of
    each evaluation image, a block of evaluation rows at a time (``k`` capped at the
    training images)."""
    if k < 1:
        raise VitzooError(f"--knn-k must be at least 1, got {k}", "e.g. --knn-k 10")
    k = min(k, len(train_x))

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    bank = unit(train_x)
    for start in range(0, len(eval_x), block):
        sims = unit(eval_x[start:start + block]) @ bank.T
        yield start, np.argpartition(-sims, k - 1, axis=1)[:, :k]


def validation_part(labels: np.ndarray, fraction: float = VALIDATION_FRACTION
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices of the training split: the part candidates are chosen on.

    Stratified and seeded (``fraction``, :data:`VALIDATION_SEED`), so every candidate and
    every rerun is chosen on the same images.
    """
    from vitzoo.data.source import carve

    fit, val = carve(len(labels), fraction, labels, seed=VALIDATION_SEED)
    if len(val) == 0:
        raise VitzooError("the training split is too small to hold out a validation part for "
                          "choosing between candidates (a class needs at least 2 images)",
                          "add training images")
    return fit, val


def pack(values: np.ndarray) -> str:
    """Small non-negative integers per image as base64 (compact in the saved scores JSON)."""
    return base64.b64encode(np.asarray(values, np.uint8).tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.uint8).astype(np.int64)


def smallest_class(labels: np.ndarray, num_classes: int) -> int:
    return int(np.bincount(np.asarray(labels), minlength=num_classes).min()) if num_classes else 0


def score_side(fit: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
               num_classes: int, *, shots: tuple[int, ...], seeds: int, knn_k: int,
               per_image: bool) -> tuple[dict[str, Any], list[str]]:
    """Every score of probes fitted on ``fit`` and measured on ``test`` (which chooses nothing)."""
    (fx, fy), (tx, ty) = fit, test
    notes = []
    try:
        path, l2, held_acc = linear_probe(fx, fy, num_classes)
    except VitzooError:
        if not per_image:  # the reported side never chooses on its test images
            raise
        # too few images to hold out of the fit: the validation part chooses the regulariser
        # too, the same way for every candidate (its accuracy is then the best over the grid)
        path = RidgePath.fit(fx, fy, num_classes)
        l2, held_acc = choose_l2(path, tx, ty)
        notes.append("too few training images to hold out for the linear probe's regulariser "
                     "once the validation part is set aside: the validation part chose it")
    linear_hits = path.predict(np.asarray(tx, np.float64), l2) == ty
    knn_correct = knn_hits(fx, fy, tx, ty, num_classes, knn_k)
    few, few_notes = fewshot(fx, fy, tx, ty, num_classes, shots, seeds, per_image=per_image)
    notes += [f"ranking: {n} once the validation part is set aside" if per_image else n
              for n in few_notes]
    side = {
        "examples": len(ty), "smallest_class": smallest_class(ty, num_classes),
        "linear": {"accuracy": float(np.mean(linear_hits)) if len(ty) else 0.0,
                   "correct": int(np.sum(linear_hits)), "l2": l2, "holdout_accuracy": held_acc},
        "knn": {"accuracy": float(np.mean(knn_correct)) if len(ty) else 0.0,
                "correct": int(np.sum(knn_correct)), "k": min(knn_k, len(fy))},
        "fewshot": {str(k): v for k, v in few.items()},
    }
    if per_image:
        side["linear"]["per_image"] = pack(linear_hits)
        side["knn"]["per_image"] = pack(knn_correct)
        for entry in side["fewshot"].values():
            entry["per_image"] = pack(entry.pop("correct_draws"))
    return side, notes


def score_all(train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray],
              num_classes: int, *, shots: tuple[int, ...] = DEFAULT_SHOTS, seeds: int = 5,
              knn_k: int = 10, validation: tuple[np.ndarray, np.ndarray] | None = None,
              validation_name: str = "validation",
              fraction: float = VALIDATION_FRACTION) -> dict[str, Any]:
    """Every score of one candidate on both sides, as a JSON-able dict (plus ``notes``).

    ``choose``: fitted on the training split minus its validation part (``fraction`` of each
    class), scored there (with per-image results); or, given the dataset's own
    ``validation`` split (features, labels) called ``validation_name``, fitted on the whole
    training split and scored on that. ``report``: fitted on the whole training split,
    scored on ``evaluation``. A k-shot that the smaller fit set cannot afford is skipped for
    ranking only (with a note); it is still reported when the whole training split affords it.
    """
    from vitzoo.evaluators import run_all

    (tx, ty), (ex, ey) = train, evaluation
    if validation is None:
        fit, val = validation_part(ty, fraction)
        chosen_on = (tx[fit], ty[fit]), (tx[val], ty[val])
        described = (f"validation: {fraction:.0%} of each training class "
                     f"(stratified, seed {VALIDATION_SEED}), held out of the fit")
    else:
        chosen_on = (tx, ty), validation
        described = (f"validation: the dataset's own {validation_name} split, "
                     "the whole training split fitted")
    settings = {"shots": shots, "seeds": seeds, "knn_k": knn_k}
    sides = [ProbeScores("validation", *chosen_on, num_classes, per_image=True, **settings),
             ProbeScores("evaluation", (tx, ty), (ex, ey), num_classes, per_image=False,
                         **settings)]
    metrics = run_all(sides, None)
    choose, report = sides[0].side, sides[1].side
    choose["metrics"], report["metrics"] = metrics["validation"], metrics["evaluation"]
    choose["split"] = described
    choose["source"] = "carved" if validation is None else "dataset"
    return {"choose": choose, "report": report, "notes": sides[1].notes + sides[0].notes}


class ProbeScores:
    """One side of a probe as an evaluator (the :mod:`vitzoo.evaluators` protocol).

    Probes fitted on ``fit`` are scored on the split ``name``; :meth:`run` yields the named
    metrics every evaluator uses (``examples``, and ``linear_top1``, ``knn_top1``,
    ``fewshot_K_top1`` as fractions) and keeps the full result (regularisers, per-image
    hits for the paired comparison of candidates) in :attr:`side`. The features are the
    subject's already: ``run`` takes no subject.
    """

    def __init__(self, name: str, fit: tuple[np.ndarray, np.ndarray],
                 scored: tuple[np.ndarray, np.ndarray], num_classes: int, *,
                 shots: tuple[int, ...], seeds: int, knn_k: int, per_image: bool) -> None:
        self.name, self.fit, self.scored, self.num_classes = name, fit, scored, num_classes
        self.settings = {"shots": shots, "seeds": seeds, "knn_k": knn_k, "per_image": per_image}
        self.side: dict[str, Any] = {}
        self.notes: list[str] = []

    def run(self, subject: Any = None) -> Iterator[tuple[str, float | int | None]]:
        self.side, self.notes = score_side(self.fit, self.scored, self.num_classes,
                                           **self.settings)
        yield "examples", self.side["examples"]
        yield "linear_top1", self.side["linear"]["accuracy"]
        yield "knn_top1", self.side["knn"]["accuracy"]
        for k, entry in self.side["fewshot"].items():
            yield f"fewshot_{k}_top1", entry["mean"]
