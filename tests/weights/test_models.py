"""Models against an independent NumPy forward pass, and full-size shapes/parameter counts.

The NumPy reference (``tests.support.numpy_models``) is written from ``docs/CHECKPOINT_LAYOUT.md``
and reads the flat release arrays directly; it shares no code with ``vitzoo.models`` or
``vitzoo.weights.release``, so agreement checks the models *and* the layout conversion.
"""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support.ckpt_factory import tiny_hybrid_arrays, tiny_mixer_arrays, tiny_vit_arrays
from tests.support.numpy_models import np_mixer, np_mixer_features, np_vit, np_vit_outputs
from vitzoo.errors import VitzooError
from vitzoo.models import build_model, get_config, infer_config
from vitzoo.models.configs import CONFIGS
from vitzoo.weights.release import release_to_params

# --- Flax vs NumPy on tiny checkpoints -----------------------------------------------

TINY = {
    "vit": (lambda: tiny_vit_arrays(seed=1), 32, np_vit),
    "vit-gap-rep": (lambda: tiny_vit_arrays(seed=2, classifier="gap", representation_size=24),
                    32, np_vit),
    "hybrid-stem-only": (lambda: tiny_hybrid_arrays(seed=3, blocks=()), 64, np_vit),
    "hybrid-stages": (lambda: tiny_hybrid_arrays(seed=4, blocks=(1, 2)), 64, np_vit),
    "mixer": (lambda: tiny_mixer_arrays(seed=5), 32, np_mixer),
}


def _images(res, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, res, res, 3)).astype(np.float32)


def _flax_logits(flat, images, **build_kw):
    config, info = infer_config(flat)
    model = build_model(config, info["num_classes"], **build_kw)
    params = release_to_params(flat, config)
    return np.asarray(model.apply({"params": params}, images, train=False))


@pytest.mark.parametrize("kind", sorted(TINY))
def test_logits_match_independent_numpy_forward(kind):
    make, res, reference = TINY[kind]
    flat = make()
    images = _images(res)
    expected = reference(flat, images)
    got = _flax_logits(flat, images)
    assert got.shape == expected.shape == (2, 10)
    assert got.dtype == np.float32
    scale = np.abs(expected).max()
    assert scale > 0.1  # the comparison is not between two near-zero vectors
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)


def test_bfloat16_compute_is_close_and_params_stay_float32():
    flat = tiny_vit_arrays(seed=1)
    images = _images(32)
    expected = np_vit(flat, images)
    got = _flax_logits(flat, images, dtype=jnp.bfloat16)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=0.1 * np.abs(expected).max())
    config, _ = infer_config(flat)
    model = build_model(config, 10, dtype=jnp.bfloat16)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_outputs_are_the_pre_logits_and_attention_of_the_numpy_forward(kind):
    """``outputs=True`` returns what the head reads (and each layer's attention softmax)."""
    make, res, _ = TINY[kind]
    flat = make()
    images = _images(res)
    config, info = infer_config(flat)
    model = build_model(config, info["num_classes"])
    params = release_to_params(flat, config)
    mixer = config.family == "mixer"
    logits, out = model.apply({"params": params}, images, outputs=True, attention=not mixer)
    expected = np_mixer_features(flat, images) if mixer else np_vit_outputs(flat, images)[0]
    assert out["pre_logits"].dtype == np.float32
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out["pre_logits"], expected, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(logits, _flax_logits(flat, images), rtol=0, atol=1e-6 * scale)
    if not mixer:
        np.testing.assert_allclose(out["attention"], np_vit_outputs(flat, images)[1], atol=1e-5)
    else:
        assert set(out) == {"pre_logits"}


def _compute_dtypes(fn, *args):
    """Operand dtypes of every matrix product and convolution in ``fn``'s jaxpr (nested too)."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("kind", ["vit", "hybrid-stages", "mixer"])
def test_bfloat16_really_computes_in_bfloat16(kind):
    """Every product but the float32 head runs on bfloat16 operands (a dtype ignored fails)."""
    make, res, _ = TINY[kind]
    flat = make()
    config, info = infer_config(flat)
    params = release_to_params(flat, config)
    images = jnp.asarray(_images(res))
    model = build_model(config, info["num_classes"], dtype=jnp.bfloat16)
    products = _compute_dtypes(lambda p, x: model.apply({"params": p}, x), params, images)
    in_bf16 = [ops for ops in products if ops == ("bfloat16", "bfloat16")]
    assert [ops for ops in products if ops not in in_bf16] == [("float32", "float32")], products
    assert len(in_bf16) >= 2 * config.num_layers  # at least two products per block


def test_encoder_is_scanned_with_stacked_layer_params():
    config, _ = infer_config(tiny_vit_arrays(depth=3))
    model = build_model(config, 10)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    block = params["params"]["Transformer"]["encoderblock"]
    assert block["MlpBlock_3"]["Dense_0"]["kernel"].shape == (3, 32, 64)
    assert "encoderblock_0" not in params["params"]["Transformer"]


def test_dropout_and_stochastic_depth_act_only_in_training():
    flat = tiny_vit_arrays(seed=1)
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    images = _images(32)
    model = build_model(config, 10, dropout=0.3, stochastic_depth=0.3)
    eval_logits = model.apply({"params": params}, images, train=False)
    np.testing.assert_allclose(eval_logits, np_vit(flat, images), atol=1e-4 * 10, rtol=1e-4)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    train_a = model.apply({"params": params}, images, train=True, rngs=rngs)
    train_b = model.apply({"params": params}, images, train=True,
                          rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(train_a, eval_logits)
    assert not np.allclose(train_a, train_b)


def test_remat_gives_same_logits_and_gradients():
    flat = tiny_vit_arrays(seed=1)
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    images = _images(32)

    def loss(model, p):
        return jnp.sum(model.apply({"params": p}, images, train=False) ** 2)

    plain, remat = build_model(config, 10), build_model(config, 10, remat=True)
    g1 = jax.grad(lambda p: loss(plain, p))(params)
    g2 = jax.grad(lambda p: loss(remat, p))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# --- full-size architectures: shapes only --------------------------------------------

# vit_jax models_test.py MODEL_SIZES (K=1000 @224), equal to the sums of the array sizes in
# docs/CHECKPOINT_LAYOUT.md, also for Mixer;
# legacy ViT/R50 values from vit_jax MODEL_SIZES.
PARAMS_1000 = {
    "Ti/16": 5_717_416, "S/32": 22_878_952, "S/16": 22_050_664, "B/32": 88_224_232,
    "B/16": 86_567_656, "B/8": 86_576_872, "L/16": 304_326_632, "R+Ti/16": 6_337_704,
    "R26+S/32": 36_431_912, "R50+L/32": 328_994_856,
    "L/32": 306_535_400, "H/14": 632_045_800, "R50+B/16": 98_659_112,
    "Mixer-B/16": 59_880_472, "Mixer-B/32": 60_293_428, "Mixer-L/16": 208_196_168,
    # the other families' architectures: timm 1.0.31's VisionTransformer with the same shapes,
    # class token and 1000 classes at 224, counted on torch's meta device (outside this suite)
    "S/8": 22_055_272, "S/14": 22_004_584, "B/14": 86_475_496, "L/14": 304_203_752,
    "XS/16": 8_402_664, "M/16": 38_837_736, "M/32": 39_942_120, "Betwixt/32": 61_723_880,
    "B-plus/16": 117_510_504, "So400m/14": 413_597_656, "So400m/16": 413_735_896,
    "g/14": 1_012_611_432, "g-opt/16": 1_136_286_184, "bigG/14": 1_844_440_680,
}
# §7, K = 21843 @224 (the i21k upstream files) and K = 1000 @384.
PARAMS_21843 = {
    "Ti/16": 9_740_115, "S/32": 30_903_507, "S/16": 30_075_219, "B/32": 104_252_499,
    "B/16": 102_595_923, "B/8": 102_605_139, "L/16": 325_690_707, "R+Ti/16": 10_360_403,
    "R26+S/32": 44_456_467, "R50+L/32": 350_358_931,
}
PARAMS_1000_384 = {
    "Ti/16": 5_790_376, "S/32": 22_915_432, "S/16": 22_196_584, "B/32": 88_297_192,
    "B/16": 86_859_496, "L/16": 304_715_752, "R+Ti/16": 6_355_944, "R26+S/32": 36_468_392,
    "R50+L/32": 329_092_136,
}
# §7 "npz arrays" column
ARRAYS_PER_FILE = {"Ti/16": 200, "S/16": 200, "B/8": 200, "L/16": 392, "R+Ti/16": 203,
                   "R26+S/32": 287, "R50+L/32": 551}


def _param_count(config, num_classes, res):
    model = build_model(config, num_classes)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, res, res, 3))))["params"]
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))


def test_every_table_architecture_has_a_parameter_count():
    assert set(PARAMS_1000) == set(CONFIGS)


@pytest.mark.parametrize("arch", sorted(PARAMS_1000))
def test_parameter_count_k1000_224(arch):
    assert _param_count(get_config(arch), 1000, 224) == PARAMS_1000[arch]


@pytest.mark.parametrize("arch", sorted(PARAMS_21843))
def test_parameter_count_k21843_224(arch):
    assert _param_count(get_config(arch), 21843, 224) == PARAMS_21843[arch]


@pytest.mark.parametrize("arch", sorted(PARAMS_1000_384))
def test_parameter_count_k1000_384(arch):
    assert _param_count(get_config(arch), 1000, 384) == PARAMS_1000_384[arch]


def test_gap_classifier_has_no_class_token():
    # vit_jax MODEL_SIZES 'ViT-B_16-gap-norep'
    from dataclasses import replace

    assert _param_count(replace(get_config("B/16"), classifier="gap"), 1000, 224) == 86_566_120


@pytest.mark.parametrize("arch", sorted(ARRAYS_PER_FILE))
def test_release_array_count(arch):
    from vitzoo.weights.release import expected_release_shapes

    expected = expected_release_shapes(get_config(arch), 21843, 224)
    assert len(expected) == ARRAYS_PER_FILE[arch]


def test_r_ti_16_effective_stride_is_32():
    config = get_config("R_Ti_16")
    assert config.stride == 32 and config.num_tokens(224) == 50 and config.num_tokens(384) == 145
    assert get_config("R50+ViT-B_16").stride == 16
    with pytest.raises(VitzooError, match="multiple of"):
        config.grid(200)


@pytest.mark.parametrize("alias,canonical", [
    ("B_16", "B/16"), ("ViT-B_16", "B/16"), ("r26_s_32", "R26+S/32"), ("R+ViT-Ti_16", "R+Ti/16"),
    ("Mixer-B_16", "Mixer-B/16"), ("R50+ViT-B_16", "R50+B/16"), ("ViT-H/14", "H/14"),
])
def test_get_config_accepts_aliases(alias, canonical):
    assert get_config(alias).name == canonical


def test_get_config_unknown_architecture():
    with pytest.raises(VitzooError, match="unknown architecture"):
        get_config("Z/99")


def test_model_package_import_is_light():
    code = ("import sys, vitzoo.models, vitzoo.models.configs; "
            "heavy = [m for m in ('jax', 'flax', 'numpy', 'tensorflow') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
