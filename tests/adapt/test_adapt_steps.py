"""The pmapped update on 8 fake CPU devices equals a single-device update of the same
global batch; ``accum=4`` equals no accumulation; the eval step counts masked rows."""

from __future__ import annotations

import json

import pytest

from tests.support.adapt_helpers import run_python

STEP_EQUIVALENCE = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from vitzoo.backbone.devices import replicate, shard, unreplicate
from vitzoo.adapt.optimizer import sgd_momentum
from vitzoo.adapt.schedule import warmup_cosine
from vitzoo.adapt.steps import init_state, make_train_step
from vitzoo.models import build_model
from vitzoo.evaluators.classification import make_eval_step
from vitzoo.models.configs import ModelConfig

assert jax.local_device_count() == 8
config = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=2,
                     patch_size=8, num_heads=2)
model = build_model(config, 5)
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (64, 32, 32, 3)).astype(np.float32)
y = rng.integers(0, 5, 64).astype(np.int32)
params = jax.device_get(model.init(jax.random.PRNGKey(0), x[:1])["params"])
params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype), params)
tx = sgd_momentum(warmup_cosine(0.05, 10, 1), momentum_dtype="float32")
key = np.asarray(jax.random.PRNGKey(1))

def pmapped(ndev, accum, steps=2):
    devs = jax.local_devices()[:ndev]
    state = replicate(jax.device_get(init_state(params, tx)), devs)
    step = make_train_step(model.apply, tx, num_classes=5, accum=accum)
    batch = shard({"image": x.reshape(ndev, -1, 32, 32, 3), "label": y.reshape(ndev, -1)}, devs)
    for _ in range(steps):
        state, metrics = step(state, batch, replicate(key, devs))
    return unreplicate(state.params), float(np.asarray(metrics["loss"])[0])

def single(accum, steps=2):
    state = jax.device_get(init_state(params, tx))
    step = make_train_step(model.apply, tx, num_classes=5, accum=accum, pmap=False)
    for _ in range(steps):
        state, metrics = step(state, {"image": x, "label": y}, key)
    return jax.device_get(state.params), float(metrics["loss"])

def diff(a, b):
    return max(float(np.abs(np.asarray(u) - np.asarray(v)).max())
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

def moved(a):
    return max(float(np.abs(np.asarray(u) - np.asarray(v)).max())
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(params)))

ref, ref_loss = single(1)
p8, loss8 = pmapped(8, 1)
acc4, loss4 = single(4)
evaluate = make_eval_step(model.apply, num_classes=5)
mask = np.zeros(64, bool); mask[:50] = True
sums = evaluate(replicate(ref, jax.local_devices()),
                shard({"image": x.reshape(8, -1, 32, 32, 3), "label": y.reshape(8, -1),
                       "mask": mask.reshape(8, -1)}))
sums = {k: np.asarray(v)[0].tolist() for k, v in sums.items()}
print(json.dumps({"pmap_vs_single": diff(ref, p8), "accum4_vs_single": diff(ref, acc4),
                  "moved": moved(ref),
                  "losses": [ref_loss, loss8, loss4], "eval": sums}))
"""


@pytest.fixture(scope="module")
def equivalence():
    proc = run_python(STEP_EQUIVALENCE, devices=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pmap_over_8_devices_equals_one_device_on_the_same_global_batch(equivalence):
    assert equivalence["moved"] > 1e-3  # the update really changed the parameters
    assert equivalence["pmap_vs_single"] < 1e-5
    assert abs(equivalence["losses"][0] - equivalence["losses"][1]) < 1e-5


def test_accumulation_equals_the_unaccumulated_batch(equivalence):
    assert equivalence["accum4_vs_single"] < 1e-5
    assert abs(equivalence["losses"][0] - equivalence["losses"][2]) < 1e-5


def test_eval_step_sums_only_unmasked_rows_across_devices(equivalence):
    sums = equivalence["eval"]
    assert sums["count"] == 50
    assert sum(sums["class_count"]) == 50
    assert sums["top1"] <= sums["top5"] <= 50
    assert sum(sums["class_hits"]) == sums["top1"]
