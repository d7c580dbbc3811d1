"""The one Pareto rule (catalog rows, plot, probe candidates) against a brute-force dominance check."""

from __future__ import annotations

import numpy as np

from vitzoo.catalog.recommend import pareto_indices
from vitzoo.probe.report import pareto
from vitzoo.probe.run import CandidateResult


def _dominance_front(points: list[tuple[float, float]]) -> set[int]:
    return {i for i, (a, s) in enumerate(points)
            if not any(a2 >= a and s2 >= s and (a2 > a or s2 > s) for a2, s2 in points)}


def test_front_equals_brute_force_dominance_fastest_first():
    rng = np.random.default_rng(0)
    for _ in range(50):
        points = [tuple(p) for p in rng.uniform(0, 1, (rng.integers(1, 30), 2)).round(6)]
        front = pareto_indices(points)
        assert set(front) == _dominance_front(points)
        speeds = [points[i][1] for i in front]
        assert speeds == sorted(speeds, reverse=True)


def test_probe_front_uses_the_same_rule():
    results = [CandidateResult(f"c{i}", img_per_sec=v,
                               scores={"choose": {"linear": {"accuracy": a}}})
               for i, (a, v) in enumerate([(0.9, 10.0), (0.8, 50.0), (0.7, 40.0), (0.95, 5.0)])]
    assert [r.checkpoint for r in pareto(results, "linear_accuracy")] == ["c1", "c0", "c3"]
