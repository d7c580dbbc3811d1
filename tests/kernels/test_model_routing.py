"""A tiny bf16 ViT with its dense products on oneDNN: same answers as XLA, within bf16.

Oracles: the same model with ``VITZOO_CPU_MATMUL=xla`` (bf16 through XLA) and in float32;
the number of custom calls is counted by hand from the architecture (below).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.support.adapt_helpers import run_python
from vitzoo.adapt.optimizer import sgd_momentum
from vitzoo.adapt.steps import init_state, make_train_step
from vitzoo.kernels import matmul
from vitzoo.models import build_model
from vitzoo.models.configs import ModelConfig

CLASSES = 5
CONFIG = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=2,
                     patch_size=8, num_heads=2)
# Routed per encoder block: the fused q/k/v projection, the output projection and the
# MLP's two Dense layers (the patch convolution and the float32 head stay with XLA); and,
# as batched products, the attention scores and values. The scanned body appears once in
# the jaxpr; backward adds 2 each.
ROUTED_FORWARD = 4
ROUTED_TRAIN = 3 * ROUTED_FORWARD
BATCHED_FORWARD = 2
BATCHED_TRAIN = 3 * BATCHED_FORWARD
LOSS_TOLERANCE = 0.03  # as tests/adapt/test_bf16.py: bf16 rounding over 4 steps of 2 layers
STEPS = 4


def _params(images):
    params = build_model(CONFIG, CLASSES).init(jax.random.PRNGKey(0), images[:1])["params"]
    return jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)


def _data():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    return images, rng.integers(0, CLASSES, 16).astype(np.int32)


def _calls(jaxpr) -> tuple[int, int]:
    """(dense products, batched products) through oneDNN in a jaxpr."""
    return matmul.count_calls(jaxpr), str(jaxpr).count(matmul.BATCHED_TARGET)


def _forward(dtype, backend, monkeypatch, images, params):
    monkeypatch.setenv(matmul.ENV, backend)
    model = build_model(CONFIG, CLASSES, dtype=dtype)
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(params, images)
    return np.asarray(fn(params, images), np.float32), _calls(jaxpr)


def test_forward_matches_xla_and_float32(onednn, monkeypatch):
    images, _ = _data()
    params = _params(images)
    ours, calls = _forward(jnp.bfloat16, "onednn", monkeypatch, images, params)
    xla, none = _forward(jnp.bfloat16, "xla", monkeypatch, images, params)
    fp32, _ = _forward(jnp.float32, "xla", monkeypatch, images, params)
    assert (calls, none) == ((ROUTED_FORWARD, BATCHED_FORWARD), (0, 0))
    scale = np.abs(fp32).max()
    # bf16 rounds activations and weights (2^-9 relative each) through 2 blocks
    assert np.abs(ours - fp32).max() < 0.05 * scale
    assert np.abs(ours - xla).max() < 0.05 * scale
    assert not np.array_equal(ours, fp32)  # it really ran in bf16


def _train(dtype, backend, monkeypatch):
    monkeypatch.setenv(matmul.ENV, backend)
    images, labels = _data()
    model = build_model(CONFIG, CLASSES, dtype=dtype)
    tx = sgd_momentum(optax.constant_schedule(0.1), momentum_dtype="float32")
    step = make_train_step(model.apply, tx, num_classes=CLASSES, pmap=False)
    state, batch = init_state(_params(images), tx), {"image": images, "label": labels}
    key = np.asarray(jax.random.PRNGKey(2))
    calls = _calls(jax.make_jaxpr(step)(state, batch, key))
    step, losses = jax.jit(step), []
    for _ in range(STEPS):
        state, metrics = step(state, batch, key)
        losses.append(float(metrics["loss"]))
    return np.array(losses), calls


def test_train_steps_match_xla_and_float32(onednn, monkeypatch):
    ours, calls = _train(jnp.bfloat16, "onednn", monkeypatch)
    xla, _ = _train(jnp.bfloat16, "xla", monkeypatch)
    fp32, _ = _train(jnp.float32, "xla", monkeypatch)
    assert calls == (ROUTED_TRAIN, BATCHED_TRAIN)
    assert ours[-1] < ours[0]  # it trains
    np.testing.assert_allclose(ours, fp32, atol=LOSS_TOLERANCE)
    np.testing.assert_allclose(ours, xla, atol=LOSS_TOLERANCE)


def test_map_head_cross_attention_routes_too(onednn, monkeypatch):
    """The MAP head's cross-attention projections and its MLP go through the kernel too."""
    images, _ = _data()
    config = ModelConfig(name="tiny-map", family="vit", hidden_size=32, mlp_dim=64,
                         num_layers=1, patch_size=8, num_heads=2, classifier="map")
    model_fp32 = build_model(config, CLASSES)
    params = model_fp32.init(jax.random.PRNGKey(0), images[:1])["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)  # a non-zero head
    monkeypatch.setenv(matmul.ENV, "onednn")
    model = build_model(config, CLASSES, dtype=jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(params, images)
    # block: 4; MAP head: q, k, v, out projections + 2 MLP Dense; and each attention's 2
    assert _calls(jaxpr) == (ROUTED_FORWARD + 6, BATCHED_FORWARD + 2)
    ours = np.asarray(model.apply({"params": params}, images), np.float32)
    want = np.asarray(model_fp32.apply({"params": params}, images), np.float32)
    assert np.abs(ours - want).max() < 0.05 * np.abs(want).max()


def test_pmap_over_two_cpu_devices(kernel):
    """Two host devices each call the kernel (threads split between them), same answers."""
    code = f"""
    import os, jax, jax.numpy as jnp, numpy as np
    from vitzoo.kernels import matmul
    from vitzoo.models import build_model
    from vitzoo.models.configs import ModelConfig
    matmul.load({str(kernel)!r})
    assert jax.local_device_count() == 2
    config = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=2,
                         patch_size=8, num_heads=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 32, 32, 3)).astype(np.float32)
    params = build_model(config, 5).init(jax.random.PRNGKey(0), x[0, :1])["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)  # a non-zero head
    out = {{}}
    for backend in ("onednn", "xla"):
        os.environ["VITZOO_CPU_MATMUL"] = backend
        model = build_model(config, 5, dtype=jnp.bfloat16)
        f = jax.pmap(lambda p, x: model.apply({{"params": p}}, x), in_axes=(None, 0))
        jaxpr = str(jax.make_jaxpr(f)(params, x))
        calls = (matmul.count_calls(jaxpr), jaxpr.count(matmul.BATCHED_TARGET))
        out[backend] = (np.asarray(f(params, x), np.float32), calls)
    (ours, calls), (xla, none) = out["onednn"], out["xla"]
    assert (calls, none) == (({ROUTED_FORWARD}, {BATCHED_FORWARD}), (0, 0)), (calls, none)
    assert np.abs(ours - xla).max() < 0.05 * np.abs(xla).max(), np.abs(ours - xla).max()
    print("OK")
    """
    done = run_python(code, devices=2)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_xla_mode_traces_exactly_as_before(dtype, monkeypatch):
    """Off, the model never reaches the kernel module's helpers: plain einsums and Dense."""
    monkeypatch.setenv(matmul.ENV, "xla")
    images, _ = _data()
    model = build_model(CONFIG, CLASSES, dtype=dtype)
    params = _params(images)
    text = str(jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(params, images))
    assert matmul.TARGET not in text and "ffi_call" not in text
