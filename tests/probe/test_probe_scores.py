"""Probe scores against independent oracles (NumPy lstsq ridge, brute-force kNN) on
synthetic features: exact accuracies, no evaluation labels in the regulariser choice."""

from __future__ import annotations

import numpy as np
import pytest

from vitzoo.errors import VitzooError
from vitzoo.probe import scores


def _blobs(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    x = centers[labels] + spread * rng.normal(0, 1, (len(labels), dim))
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order].astype(np.int32)


def _oracle_predict(x_fit, y_fit, x_test, l2, classes):
    """Ridge by an augmented least-squares problem: [X; sqrt(l2) I] w = [Y; 0]."""
    x_fit = np.asarray(x_fit, np.float64)
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-5

    def design(x):
        z = (np.asarray(x, np.float64) - mean) / std
        return np.hstack([z, np.full((len(z), 1), scores.BIAS)])

    a = design(x_fit)
    y = 2.0 * np.eye(classes)[y_fit] - 1.0
    big_a = np.vstack([a, np.sqrt(l2) * np.eye(a.shape[1])])
    big_y = np.vstack([y, np.zeros((a.shape[1], classes))])
    w = np.linalg.lstsq(big_a, big_y, rcond=None)[0]
    return np.argmax(design(x_test) @ w, axis=1)


def _oracle_choice(x_fit, y_fit, x_val, y_val, classes):
    accs = [np.mean(_oracle_predict(x_fit, y_fit, x_val, l2, classes) == y_val)
            for l2 in scores.L2_GRID]
    best = max(accs)
    return max(l2 for l2, a in zip(scores.L2_GRID, accs, strict=True) if a == best)


def test_fewshot_equals_lstsq_oracle_for_every_draw():
    classes = 4
    tx, ty = _blobs(12, classes, 6, 1.5, seed=1)
    ex, ey = _blobs(25, classes, 6, 1.5, seed=2)
    out, notes = scores.fewshot(tx, ty, ex, ey, classes, shots=(1, 3, 5), seeds=3)
    assert notes == [] and sorted(out) == [1, 3, 5]
    for k, result in out.items():
        expected = []
        for seed in range(3):
            fit, held = scores.draw_shots(ty, classes, k, seed)
            assert len(set(fit) & set(held)) == 0 and len(fit) == len(held) == k * classes
            l2 = _oracle_choice(tx[fit], ty[fit], tx[held], ty[held], classes)
            expected.append(np.mean(_oracle_predict(tx[fit], ty[fit], ex, l2, classes) == ey))
        assert result["runs"] == pytest.approx(expected, abs=1e-6)
        assert result["mean"] == pytest.approx(np.mean(expected), abs=1e-6)
        assert result["std"] == pytest.approx(np.std(expected), abs=1e-6)


def test_full_train_probe_and_knn_equal_oracles():
    classes = 3
    tx, ty = _blobs(40, classes, 5, 2.0, seed=3)
    ex, ey = _blobs(30, classes, 5, 2.0, seed=4)
    both = scores.score_all((tx, ty), (ex, ey), classes, shots=(2,), seeds=2, knn_k=7)
    out = both["report"]
    fit, held = scores.holdout_split(ty)
    l2 = _oracle_choice(tx[fit], ty[fit], tx[held], ty[held], classes)
    assert out["linear"]["l2"] == l2
    expected = np.mean(_oracle_predict(tx, ty, ex, l2, classes) == ey)
    assert out["linear"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert out["linear"]["correct"] == round(expected * len(ey))

    # the choosing side: fitted without the validation part (a stratified 20 %), scored on it
    part, val = scores.validation_part(ty)
    assert len(set(part) | set(val)) == len(ty) and not set(part) & set(val)
    assert np.all(np.bincount(ty[val], minlength=classes) == 8)  # 20 % of each class of 40
    px, py = tx[part], ty[part]
    inner_fit, inner_held = scores.holdout_split(py)
    l2 = _oracle_choice(px[inner_fit], py[inner_fit], px[inner_held], py[inner_held], classes)
    hits = _oracle_predict(px, py, tx[val], l2, classes) == ty[val]
    choose = both["choose"]
    assert choose["linear"]["l2"] == l2 and choose["examples"] == len(val)
    np.testing.assert_array_equal(scores.unpack(choose["linear"]["per_image"]), hits)

    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(ex.astype(np.float64)) @ unit(tx.astype(np.float64)).T
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    votes = np.stack([np.bincount(ty[row], minlength=classes) for row in nearest])
    assert out["knn"]["accuracy"] == pytest.approx(np.mean(votes.argmax(1) == ey), abs=1e-6)
    assert 0.3 < out["knn"]["accuracy"] < 1.0  # a task where the oracle check means something

    # the same numbers as the evaluator protocol's named metrics (fractions)
    assert out["metrics"]["linear_top1"] == pytest.approx(expected, abs=1e-6)
    assert out["metrics"]["knn_top1"] == pytest.approx(np.mean(votes.argmax(1) == ey), abs=1e-6)
    assert out["metrics"]["examples"] == len(ey)
    assert choose["metrics"]["examples"] == len(val)
    assert choose["metrics"]["linear_top1"] == pytest.approx(np.mean(hits), abs=1e-6)
    assert set(out["metrics"]) == {"examples", "linear_top1", "knn_top1", "fewshot_2_top1"}


def test_probe_head_gives_the_probe_predictions():
    tx, ty = _blobs(20, 3, 8, 1.0, seed=5)
    path = scores.RidgePath.fit(tx, ty, 3)
    kernel, bias = path.head(0.5)
    assert kernel.shape == (8, 3) and bias.shape == (3,)
    np.testing.assert_array_equal(np.argmax(tx @ kernel + bias, 1), path.predict(tx, 0.5))


def test_shuffled_labels_score_near_chance():
    classes = 5
    tx, ty = _blobs(60, classes, 16, 0.5, seed=6)
    ex, ey = _blobs(60, classes, 16, 0.5, seed=7)
    rng = np.random.default_rng(0)
    ty, ey = rng.permutation(ty), rng.permutation(ey)
    out = scores.score_all((tx, ty), (ex, ey), classes, shots=(5, 10), seeds=5)["report"]
    for value in (out["linear"]["accuracy"], out["knn"]["accuracy"],
                  out["fewshot"]["5"]["mean"], out["fewshot"]["10"]["mean"]):
        assert abs(value - 1 / classes) < 0.1


def test_separable_data_scores_near_one():
    classes = 5
    tx, ty = _blobs(30, classes, 16, 0.05, seed=8)
    ex, ey = _blobs(30, classes, 16, 0.05, seed=8)  # same centres, other noise draw below
    ex = ex + np.random.default_rng(1).normal(0, 0.05, ex.shape).astype(np.float32)
    out = scores.score_all((tx, ty), (ex, ey), classes, shots=(1, 5), seeds=3)["report"]
    assert out["linear"]["accuracy"] >= 0.99 and out["knn"]["accuracy"] >= 0.99
    assert out["fewshot"]["1"]["mean"] >= 0.95 and out["fewshot"]["5"]["mean"] >= 0.99


def test_too_few_images_skips_k_with_a_note_and_bad_values_fail():
    tx, ty = _blobs(6, 3, 4, 1.0, seed=9)
    out, notes = scores.fewshot(tx, ty, tx, ty, 3, shots=(1, 3, 4), seeds=1)
    assert sorted(out) == [1, 3]
    assert notes == ["4-shot skipped: it needs 8 training images per class (4 to fit, 4 held "
                     "out to choose the regulariser) and the smallest class has 6"]
    with pytest.raises(VitzooError, match="--shots values must be at least 1"):
        scores.fewshot(tx, ty, tx, ty, 3, shots=(0,))
    with pytest.raises(VitzooError, match="--seeds must be at least 1"):
        scores.fewshot(tx, ty, tx, ty, 3, seeds=0)
    with pytest.raises(VitzooError, match="--knn-k must be at least 1"):
        scores.knn(tx, ty, tx, ty, 3, k=0)


def _independent_draw(labels: np.ndarray, classes: int, k: int, seed: int):
    """The documented draw, written here from its description: one generator seeded with
    (seed, k); per class, in class order, its members shuffled; the first k fit, the next k
    are held out to choose the regulariser."""
    generator = np.random.default_rng([seed, k])
    fit, held = [], []
    for cls in range(classes):
        members = np.where(labels == cls)[0]
        order = generator.permutation(members.size)
        fit.extend(members[order[:k]])
        held.extend(members[order[k:2 * k]])
    return np.array(fit), np.array(held)


def test_fewshot_draws_differ_by_seed_and_equal_independent_draws():
    classes = 3
    tx, ty = _blobs(15, classes, 6, 3.0, seed=11)
    ex, ey = _blobs(40, classes, 6, 3.0, seed=12)
    out, _ = scores.fewshot(tx, ty, ex, ey, classes, shots=(2,), seeds=4)
    draws = [_independent_draw(ty, classes, 2, seed) for seed in range(4)]
    assert len({tuple(sorted(fit)) for fit, _ in draws}) == 4  # every seed its own draw
    expected = []
    for fit, held in draws:
        l2 = _oracle_choice(tx[fit], ty[fit], tx[held], ty[held], classes)
        expected.append(np.mean(_oracle_predict(tx[fit], ty[fit], ex, l2, classes) == ey))
    assert len(set(expected)) > 1  # noisy enough that draws give different accuracies
    assert out[2]["runs"] == pytest.approx(expected, abs=1e-6)
