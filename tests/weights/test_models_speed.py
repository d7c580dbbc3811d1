"""The speed-motivated formulations compute what the plain ones do.

- The layer stack unrolled (CPU default) and scanned (accelerators) give the same logits
  and gradients, for ViT and Mixer, with the same stacked parameter tree.
- vitzoo's fused-qkv attention equals Flax's ``MultiHeadDotProductAttention`` with the
  same parameters (the layout the released checkpoints load into).
- bfloat16 compute trains like float32 over a few steps.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.support.ckpt_factory import tiny_mixer_arrays, tiny_vit_arrays
from vitzoo.adapt.optimizer import sgd_momentum
from vitzoo.adapt.steps import init_state, make_train_step
from vitzoo.models import infer_config
from vitzoo.models.layers import unroll_on_this_backend
from vitzoo.models.mixer import MlpMixer
from vitzoo.models.vit import SelfAttention, VisionTransformer
from vitzoo.weights.release import release_to_params


def _images(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _vit(config, **kw):
    return VisionTransformer(config=config, num_classes=10, **kw)


def _mixer(config, **kw):
    return MlpMixer(num_classes=10, hidden_size=config.hidden_size,
                    num_layers=config.num_layers, patch_size=config.patch_size,
                    tokens_mlp_dim=config.tokens_mlp_dim, channels_mlp_dim=config.mlp_dim, **kw)


def test_cpu_backend_unrolls_by_default():
    assert unroll_on_this_backend() is (jax.default_backend() == "cpu")


@pytest.mark.parametrize(("arrays", "make"), [(tiny_vit_arrays, _vit),
                                              (tiny_mixer_arrays, _mixer)])
def test_unrolled_and_scanned_layers_agree(arrays, make):
    flat = arrays(seed=1)
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    images = _images(32)
    scanned, unrolled = make(config, unroll=False), make(config, unroll=True)
    init = unrolled.init(jax.random.PRNGKey(0), images)["params"]
    assert jax.tree.structure(init) == jax.tree.structure(params)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(params),
                                                  strict=True))

    def loss(model, p):
        return jnp.sum(model.apply({"params": p}, images) ** 2)

    np.testing.assert_allclose(unrolled.apply({"params": params}, images),
                               scanned.apply({"params": params}, images), rtol=1e-5, atol=1e-5)
    g1 = jax.grad(lambda p: loss(scanned, p))(params)
    g2 = jax.grad(lambda p: loss(unrolled, p))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fused_attention_equals_flax_multi_head_attention():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 12)), jnp.float32)
    flax_mha = nn.MultiHeadDotProductAttention(num_heads=3)
    params = flax_mha.init(jax.random.PRNGKey(0), x, x)["params"]
    params = jax.tree.map(  # non-zero biases, so that every parameter is exercised
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    ours = SelfAttention(num_heads=3)
    assert jax.tree.structure(ours.init(jax.random.PRNGKey(0), x)["params"]) == \
        jax.tree.structure(params)
    np.testing.assert_allclose(ours.apply({"params": params}, x),
                               flax_mha.apply({"params": params}, x, x), rtol=1e-5, atol=1e-5)


def test_attention_dropout_acts_only_in_training():
    x = jnp.ones((1, 5, 8))
    model = SelfAttention(num_heads=2, dropout_rate=0.5, deterministic=False)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    a = model.apply({"params": params}, x, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply({"params": params}, x, rngs={"dropout": jax.random.PRNGKey(2)})
    det = SelfAttention(num_heads=2, dropout_rate=0.5).apply({"params": params}, x)
    assert not np.allclose(a, b)
    assert np.allclose(det, SelfAttention(num_heads=2).apply({"params": params}, x))


def test_bfloat16_training_follows_float32():
    flat = tiny_vit_arrays(seed=2)
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    images = _images(32, n=8, seed=3)
    labels = np.arange(8, dtype=np.int32) % 10
    batch = {"image": images, "label": labels}
    losses = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        model = _vit(config, dtype=dtype)
        tx = sgd_momentum(optax.constant_schedule(0.05))
        step = make_train_step(model.apply, tx, num_classes=10, pmap=False)
        state = init_state(params, tx)
        losses[name] = []
        for _ in range(4):
            state, metrics = step(state, batch, jax.random.PRNGKey(0))
            losses[name].append(float(metrics["loss"]))
    assert losses["float32"][-1] < losses["float32"][0]  # it learns
    assert losses["bfloat16"][-1] < losses["bfloat16"][0]
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)
