"""How sure a probe's numbers are: 95 % intervals and a paired test between two candidates.

* A proportion (linear or kNN accuracy, ``correct`` of ``n`` images) gets the Wilson score
  interval: unlike ``p +- 1.96 sqrt(p(1-p)/n)`` it stays inside [0, 1] and does not shrink to
  zero width at 0 % or 100 %, which is where small evaluation sets put a probe.
* A few-shot score is a mean over seeded draws of the shots; its spread is the std over the
  draws (what changes when other images are drawn), shown as mean +- std.
* Two candidates scored on the *same* images are compared with a paired test: the exact
  McNemar test (a two-sided binomial test on the images exactly one of them gets right).
  Pairing is why it is used rather than "do the two intervals overlap": both candidates see
  the same easy and hard images, so their accuracies move together and overlapping intervals
  say little about their difference. For few-shot scores each image's number of correct
  draws is compared (an exact sign test on the images where the two differ; with one draw
  it is McNemar's test).
* A mean average precision (a multi-label probe) is no proportion: its interval is the
  percentile bootstrap over images (:func:`bootstrap_counts` draws the images with
  replacement, the mAP is recomputed per resample, :func:`bootstrap_interval`), and two
  candidates on the same images are compared by the paired bootstrap
  (:func:`paired_bootstrap`: both scored on the same resamples, the p-value is how often
  the difference changes sign).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Two-sided 95 %: the normal quantile of the Wilson interval and the test's level.
Z95 = 1.959963984540054
ALPHA = 0.05
#: Bootstrap resamples (and their fixed seed: the same candidate gets the same interval on a rerun).
RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes out of ``n`` (fractions)."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_two_sided(successes: int, trials: int) -> float:
    """Exact two-sided p-value of ``successes`` in ``trials`` fair coin flips."""
    if trials == 0:
        return 1.0
    k = min(successes, trials - successes)
    tail = sum(math.comb(trials, i) for i in range(k + 1)) / 2.0 ** trials
    return min(1.0, 2.0 * tail)


def paired_test(a: Sequence[int], b: Sequence[int]) -> dict[str, float | int]:
    """Exact McNemar / sign test of per-image scores ``a`` against ``b`` (same images, same order).

    ``a[i]`` is what the first candidate got right on image ``i`` (1/0, or the number of
    correct draws); returns the images where ``a`` is higher, where ``b`` is, and the p-value.
    """
    if len(a) != len(b):
        raise ValueError("a paired test needs the same images for both candidates")
    better = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    worse = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    return {"first_better": better, "second_better": worse,
            "p_value": binomial_two_sided(better, better + worse)}


def bootstrap_counts(n: int, *, resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``[resamples, n]``: how often each of ``n`` images is drawn in each bootstrap resample
    (``n`` draws with replacement, seeded: the same images give the same resamples)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                     for _ in range(resamples)]) if n else np.zeros((resamples, 0), np.int64)


def bootstrap_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The 95 % percentile interval of a statistic's resampled ``values`` (NaN: undefined in
    that resample, left out); None when it is defined in none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    low, high = np.quantile(values, [ALPHA / 2, 1 - ALPHA / 2])
    return (float(low), float(high))


def paired_bootstrap(differences: np.ndarray) -> dict[str, float | int]:
    """Two-sided bootstrap p-value that a paired difference (first minus second) is 0.

    ``differences`` are the statistic's differences on the same resampled images (NaN left
    out); the p-value is twice the share of resamples on the less frequent side of zero (at
    least one resample's worth: 1/resamples), capped at 1.
    """
    values = np.asarray(differences, np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return {"p_value": 1.0, "resamples": 0}
    below, above = float(np.mean(values <= 0)), float(np.mean(values >= 0))
    floor = 1.0 / len(values)
    return {"p_value": min(1.0, 2.0 * max(min(below, above), floor)), "resamples": len(values)}
