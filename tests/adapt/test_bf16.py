"""``--dtype bfloat16`` on CPU: the train step really multiplies in bfloat16 (the operand
dtypes of every matrix product in its jaxpr), and its loss stays within bfloat16's rounding
of the float32 run's over a few steps from the same weights and batches.

Oracles: the expected number of bfloat16 products is counted by hand from the
architecture (below); the float32 run of the same step is the reference for the losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vitzoo.adapt.optimizer import sgd_momentum
from vitzoo.adapt.steps import init_state, make_train_step
from vitzoo.models import build_model
from vitzoo.models.configs import ModelConfig

CLASSES, LAYERS = 5, 2
CONFIG = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=LAYERS,
                     patch_size=8, num_heads=2)
# Per encoder block, six matrix products in the compute dtype: fused q/k/v projection,
# scores q.k, weights.v, output projection, MLP Dense_0, MLP Dense_1. The backward pass
# of each is two more (gradient w.r.t. each operand). The blocks are one scanned body
# (unrolled at compile time on CPU), so the jaxpr holds each product once, not per layer.
# Plus the patch embedding's convolution and its kernel gradient (images need none).
# The head is float32 by design.
BF16_PRODUCTS = 6 * 3 + 2
# bfloat16 keeps 8 significant bits: each rounding is off by at most 2^-9 relative.
# A handful of roundings per layer over 2 layers, softmax and a mean cross-entropy near
# ln(5) = 1.6 gives losses within ~1% of float32's; 0.03 (about 2%) leaves room for the
# updates' drift over 4 steps and still fails if the bfloat16 run trains differently.
LOSS_TOLERANCE = 0.03
STEPS = 4


def _setup(dtype):
    model = build_model(CONFIG, CLASSES, dtype=dtype)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, 16).astype(np.int32)
    params = build_model(CONFIG, CLASSES).init(jax.random.PRNGKey(0), images[:1])["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)  # a non-zero head, so that every layer gets a gradient
    tx = sgd_momentum(optax.constant_schedule(0.1), momentum_dtype="float32")
    step = make_train_step(model.apply, tx, num_classes=CLASSES, pmap=False)
    return step, init_state(params, tx), {"image": images, "label": labels}


def _products(jaxpr) -> list[tuple[str, ...]]:
    """Operand dtypes of every dot_general / convolution, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for sub in jax.core.jaxprs_in_params(eqn.params):
            found += _products(sub)
    return found


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_train_step_multiplies_in_the_compute_dtype(dtype):
    step, state, batch = _setup(dtype)
    jaxpr = jax.make_jaxpr(step)(state, batch, np.asarray(jax.random.PRNGKey(2))).jaxpr
    products = _products(jaxpr)
    bf16 = [p for p in products if p == ("bfloat16", "bfloat16")]
    if dtype == jnp.float32:
        assert bf16 == [] and products
    else:
        dots = [p for p in products if len(p) == 2]
        # Every encoder product (forward and backward) is bfloat16 x bfloat16.
        assert len(bf16) == BF16_PRODUCTS, products
        assert all(p == ("bfloat16", "bfloat16") or p == ("float32", "float32")
                   for p in dots), products


def test_bf16_loss_stays_within_rounding_of_fp32_over_a_few_steps():
    losses = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        step, state, batch = _setup(dtype)
        step = jax.jit(step)
        key = np.asarray(jax.random.PRNGKey(2))
        losses[name] = []
        for _ in range(STEPS):
            state, metrics = step(state, batch, key)
            losses[name].append(float(metrics["loss"]))
    fp32, bf16 = np.array(losses["float32"]), np.array(losses["bfloat16"])
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]  # both train
    np.testing.assert_allclose(bf16, fp32, atol=LOSS_TOLERANCE)
    assert not np.array_equal(bf16, fp32)  # bfloat16 did round: it is not float32 again
