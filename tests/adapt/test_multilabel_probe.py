"""The multi-label linear probe against a closed-form ridge oracle written here.

Oracle: standardise with the fit set's mean/std (+1e-5), append a constant column of 100,
solve ``(X^T X + l2 I) W = X^T Y`` with ``Y`` in {-1, 1}, score by AP per class (the oracle
of ``test_multilabel_metrics``). The probe must give the oracle's outputs for any l2,
choose the l2 with the best held-out mAP, and report the oracle's mAP for it; informative
features must score far above the same features with shuffled labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.adapt.test_multilabel_metrics import ap_oracle
from vitzoo.data.source import carve
from vitzoo.probe.multilabel import fit, linear_probe_map, scores
from vitzoo.probe.scores import HOLDOUT_FRACTION, L2_GRID


def ridge_oracle(x, y, l2):
    mean, std = x.mean(0), x.std(0) + 1e-5
    design = np.c_[(x - mean) / std, np.full(len(x), 100.0)]
    w = np.linalg.solve(design.T @ design + l2 * np.eye(design.shape[1]), design.T @ (2.0 * y - 1))
    return lambda z: np.c_[(z - mean) / std, np.full(len(z), 100.0)] @ w


def map_oracle(s, y):
    aps = [ap_oracle(s[:, k], y[:, k]) for k in range(y.shape[1])]
    return float(np.mean([a for a in aps if a is not None]))


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=(90, 4)) < 0.4).astype(np.int32)
    x = rng.normal(size=(90, 12)) + 2.5 * np.c_[y, y, np.zeros((90, 4))]
    return x[:60], y[:60], x[60:], y[60:]


def test_probe_outputs_equal_the_closed_form(features):
    tx, ty, ex, _ = features
    path = fit(tx, ty)
    for l2 in (0.01, 1.0, 300.0):
        np.testing.assert_allclose(scores(path, ex, l2), ridge_oracle(tx, ty, l2)(ex),
                                   rtol=1e-6, atol=1e-8)


def test_probe_chooses_on_held_out_training_images_and_reports_map(features):
    tx, ty, ex, ey = features
    result = linear_probe_map(tx, ty, ex, ey)
    keep, held = carve(len(ty), HOLDOUT_FRACTION)
    held_maps = [map_oracle(ridge_oracle(tx[keep], ty[keep], l2)(tx[held]), ty[held])
                 for l2 in L2_GRID]
    assert held_maps[L2_GRID.index(result["l2"])] == pytest.approx(max(held_maps))
    assert result["map"] == pytest.approx(map_oracle(ridge_oracle(tx, ty, result["l2"])(ex), ey))
    shuffled = linear_probe_map(tx, ty[np.random.default_rng(1).permutation(len(ty))], ex, ey)
    assert result["map"] >= 0.9 and result["map"] >= shuffled["map"] + 0.25, (result, shuffled)
