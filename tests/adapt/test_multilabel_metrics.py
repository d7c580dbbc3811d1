"""Multi-label loss and metrics against independent NumPy oracles written here.

Oracles: binary cross-entropy from its textbook form (``-z log p - (1 - z) log(1 - p)``
with ``p = 1 / (1 + e^-x)``); average precision as the mean over positive examples of the
precision at that example's score (ties counted together, which is scikit-learn's
definition in another form); F1 from counted true/false positives and negatives; macro F1
as scikit-learn's ``f1_score(average="macro", labels=<classes with a positive>)`` defines it
(the mean of per-class F1 counted column by column; scikit-learn is not a test dependency
here, so its definition is written out).
The train step's reported loss is checked against the same BCE oracle on the model's own
logits, so a softmax loss (or a sum over classes) in the step fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from vitzoo.evaluators.multilabel_metrics import (
    average_precision,
    choose_threshold,
    f1_score,
    macro_f1_score,
    mean_average_precision,
    multilabel_metrics,
    numpy_loss,
    sigmoid,
)


def bce_oracle(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return (-(targets * np.log(p) + (1 - targets) * np.log(1 - p))).mean(axis=1)


def ap_oracle(scores: np.ndarray, positives: np.ndarray) -> float | None:
    if positives.sum() == 0:
        return None
    precisions = []
    for i in np.flatnonzero(positives):
        at_or_above = scores >= scores[i]
        precisions.append(positives[at_or_above].sum() / at_or_above.sum())
    return float(np.mean(precisions))


def f1_oracle(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    tp = fp = fn = 0
    for p, z in zip(probabilities.ravel(), targets.ravel(), strict=True):
        tp += int(p >= threshold and z == 1)
        fp += int(p >= threshold and z == 0)
        fn += int(p < threshold and z == 1)
    return 2 * tp / (2 * tp + fp + fn)


def macro_f1_oracle(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    per_class = []
    for k in range(targets.shape[1]):
        if targets[:, k].sum() == 0:
            continue  # the classes mAP averages over
        per_class.append(f1_oracle(probabilities[:, [k]], targets[:, [k]], threshold))
    return float(sum(per_class) / len(per_class))


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    targets = (rng.uniform(size=(40, 6)) < 0.3).astype(np.int32)
    targets[:, 5] = 0  # a class without positives: no AP, left out of the mean
    logits = (rng.normal(size=(40, 6)) + 1.5 * targets).astype(np.float32)
    logits[::4, 1] = logits[0, 1]  # ties
    return logits, targets


def test_bce_equals_the_textbook_formula(scored):
    import jax.numpy as jnp

    from vitzoo.evaluators.multilabel_metrics import sigmoid_cross_entropy

    logits, targets = scored
    expected = bce_oracle(logits, targets)
    np.testing.assert_allclose(numpy_loss(logits, targets), expected, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(sigmoid_cross_entropy(jnp.asarray(logits),
                                                                jnp.asarray(targets))),
                               expected, rtol=1e-5)


def test_average_precision_equals_the_oracle_with_ties(scored):
    logits, targets = scored
    scores = sigmoid(logits)
    per_class = [ap_oracle(scores[:, k], targets[:, k]) for k in range(6)]
    assert per_class[5] is None and average_precision(scores[:, 5], targets[:, 5]) is None
    for k in range(5):
        assert average_precision(scores[:, k], targets[:, k]) == pytest.approx(per_class[k], 1e-12)
    assert mean_average_precision(scores, targets) == pytest.approx(np.mean(per_class[:5]), 1e-12)
    # a hand example: ranks 1 and 3 positive -> (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    # all tied: precision is the positive rate
    assert average_precision(np.zeros(4), np.array([1, 0, 0, 0])) == pytest.approx(0.25)


def test_f1_and_the_threshold_chosen(scored):
    logits, targets = scored
    probabilities = sigmoid(logits)
    for t in (0.2, 0.5, 0.8):
        assert f1_score(probabilities, targets, t) == pytest.approx(f1_oracle(probabilities, targets, t))
    chosen = choose_threshold(probabilities, targets)
    best = max(f1_oracle(probabilities, targets, t) for t in np.round(np.arange(1, 20) * 0.05, 2))
    assert f1_oracle(probabilities, targets, chosen) == pytest.approx(best)
    metrics = multilabel_metrics(logits, targets, chosen)
    assert metrics["examples"] == 40 and metrics["threshold"] == chosen
    assert metrics["macro_f1"] == pytest.approx(macro_f1_oracle(probabilities, targets, chosen))
    assert metrics["loss"] == pytest.approx(bce_oracle(logits, targets).mean(), rel=1e-10)


def test_macro_f1_weighs_every_class_with_a_positive_equally(scored):
    logits, targets = scored
    probabilities = sigmoid(logits)
    for t in (0.2, 0.5, 0.8):
        assert macro_f1_score(probabilities, targets, t) == pytest.approx(
            macro_f1_oracle(probabilities, targets, t), abs=1e-12)
    # by hand: class 0 found perfectly (F1 1), class 1 (one positive) missed (F1 0), class 2
    # has no positive and is left out however it is predicted -> macro 0.5; micro 2*2/(2+3)
    p = np.array([[0.9, 0.1, 0.9], [0.8, 0.2, 0.1], [0.1, 0.3, 0.1]])
    z = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    assert macro_f1_score(p, z, 0.5) == pytest.approx(0.5)
    assert f1_score(p, z, 0.5) == pytest.approx(2 * 2 / (3 + 3))
    assert macro_f1_score(p, np.zeros_like(z), 0.5) is None


def test_train_step_reports_the_sigmoid_bce_of_its_logits():
    import jax

    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.steps import init_state, make_train_step
    from vitzoo.models import build_model
    from vitzoo.models.configs import ModelConfig

    config = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=1,
                         patch_size=8, num_heads=2)
    model = build_model(config, 4)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    targets = (rng.uniform(size=(8, 4)) < 0.5).astype(np.int32)
    params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
    params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(p.dtype), params)
    logits = np.asarray(model.apply({"params": params}, images, train=False), np.float64)
    tx = sgd_momentum(lambda _: 0.0, momentum_dtype="float32")
    for accum in (1, 2):
        step = make_train_step(model.apply, tx, num_classes=4, accum=accum, pmap=False,
                               task="multilabel")
        state = init_state(jax.tree.map(np.array, jax.device_get(params)), tx)
        _, metrics = step(state, {"image": images, "label": targets},
                          np.asarray(jax.random.PRNGKey(0)))
        assert float(metrics["loss"]) == pytest.approx(bce_oracle(logits, targets).mean(), rel=1e-4)
        exact = np.all((logits > 0) == (targets > 0), axis=1).mean()
        assert float(metrics["accuracy"]) == pytest.approx(exact)


MULTI_DEVICE = r"""
import io, json
import jax, numpy as np
from PIL import Image
from vitzoo.backbone.devices import replicate
from vitzoo.data import Layout, eval_recipe
from vitzoo.data.pipeline import Examples
from vitzoo.evaluators.multilabel import MultiLabel
from vitzoo.models import build_model
from vitzoo.models.configs import ModelConfig

rng = np.random.default_rng(0)
def png(i):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
split = Examples([png(i) for i in range(13)], (rng.uniform(size=(13, 3)) < 0.5).astype(np.int32))
config = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=1,
                     patch_size=8, num_heads=2)
model = build_model(config, 3)
params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(p.dtype), params)
out = {}
for n in (1, 4):
    devices = jax.local_devices()[:n]
    evaluator = MultiLabel("eval", model.apply, split, recipe=eval_recipe(32),
                           layout=Layout(8, local_devices=n), devices=devices, validation=split)
    out[n] = dict(evaluator.run(replicate(params, devices)))
print(json.dumps(out))
"""


def test_multilabel_evaluator_on_four_devices_equals_one():
    """13 images in global batches of 8 (padding masked), gathered from 4 devices or 1."""
    import json

    from tests.support.adapt_helpers import run_python

    proc = run_python(MULTI_DEVICE, devices=4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = out["1"], out["4"]
    assert one["examples"] == four["examples"] == 13
    assert four["threshold"] == one["threshold"]
    for name in ("map", "f1", "macro_f1", "loss"):
        assert four[name] == pytest.approx(one[name], rel=1e-5), name
