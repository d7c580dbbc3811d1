"""Models against an independent NumPy forward pass, and full-size shapes/parameter counts.

The NumPy reference below is written from ``docs/CHECKPOINT_LAYOUT.md`` and reads
the flat release arrays directly; it shares no code with ``vitzoo.models`` or
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
from ckpt_factory import tiny_hybrid_arrays, tiny_mixer_arrays, tiny_vit_arrays

from vitzoo.errors import VitzooError
from vitzoo.models import build_model, get_config, infer_config
from vitzoo.models.configs import CONFIGS
from vitzoo.weights.release import release_to_params

# --- the independent NumPy reference -------------------------------------------------


def np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_group_norm(x, scale, bias, groups=32, eps=1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(b, h, w, c) * scale.reshape(-1) + bias.reshape(-1)


def _same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def np_conv(x, w, stride, padding):
    """NHWC x HWIO convolution by explicit patch extraction (TF SAME / VALID padding)."""
    kh, kw, _, _ = w.shape
    if padding == "SAME":
        x = np.pad(x, ((0, 0), _same_pads(x.shape[1], kh, stride),
                       _same_pads(x.shape[2], kw, stride), (0, 0)))
    b, h, wd, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((b, oh, ow, w.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out += patch @ w[i, j]
    return out


def np_max_pool_same(x, k=3, s=2):
    pads = ((0, 0), _same_pads(x.shape[1], k, s), _same_pads(x.shape[2], k, s), (0, 0))
    x = np.pad(x, pads, constant_values=-np.inf)
    oh, ow = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    out = np.full((x.shape[0], oh, ow, x.shape[3]), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[:, i:i + s * oh:s, j:j + s * ow:s, :])
    return out


def np_std_conv(x, w, stride):
    """vit_jax StdConv: standardise the raw kernel, eps added to the std (layout §5.2)."""
    w = (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)
    return np_conv(x, w, stride, "SAME")


def np_resnet(f, x):
    x = np_std_conv(x, f["conv_root/kernel"], 2)
    x = np.maximum(np_group_norm(x, f["gn_root/scale"], f["gn_root/bias"]), 0)
    x = np_max_pool_same(x)
    s = 1
    while f"block{s}/unit1/conv1/kernel" in f:
        u = 1
        while f"block{s}/unit{u}/conv1/kernel" in f:
            p = f"block{s}/unit{u}"
            stride = 2 if (s > 1 and u == 1) else 1

            def gn(y, name, p=p):
                return np_group_norm(y, f[f"{p}/{name}/scale"], f[f"{p}/{name}/bias"])

            residual = x
            if f"{p}/conv_proj/kernel" in f:
                residual = gn(np_std_conv(x, f[f"{p}/conv_proj/kernel"], stride), "gn_proj")
            y = np.maximum(gn(np_std_conv(x, f[f"{p}/conv1/kernel"], 1), "gn1"), 0)
            y = np.maximum(gn(np_std_conv(y, f[f"{p}/conv2/kernel"], stride), "gn2"), 0)
            y = gn(np_std_conv(y, f[f"{p}/conv3/kernel"], 1), "gn3")
            x = np.maximum(residual + y, 0)
            u += 1
        s += 1
    return x


def np_attention(x, f, p):
    q = np.einsum("btd,dhk->bthk", x, f[f"{p}/query/kernel"]) + f[f"{p}/query/bias"]
    k = np.einsum("btd,dhk->bthk", x, f[f"{p}/key/kernel"]) + f[f"{p}/key/bias"]
    v = np.einsum("btd,dhk->bthk", x, f[f"{p}/value/kernel"]) + f[f"{p}/value/bias"]
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqs,bshk->bqhk", weights, v)
    return np.einsum("bqhk,hkd->bqd", out, f[f"{p}/out/kernel"]) + f[f"{p}/out/bias"]


def np_vit(f, images):
    """Forward pass of a ViT or hybrid straight from the flat release arrays."""
    f = {k: v.astype(np.float64) for k, v in f.items()}
    x = images.astype(np.float64)
    if "conv_root/kernel" in f:
        x = np_resnet(f, x)
    p = f["embedding/kernel"].shape[0]
    x = np_conv(x, f["embedding/kernel"], p, "VALID") + f["embedding/bias"]
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    if "cls" in f:
        x = np.concatenate([np.broadcast_to(f["cls"], (b, 1, c)), x], axis=1)
    x = x + f["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in f:
        blk = f"Transformer/encoderblock_{i}"
        y = np_layer_norm(x, f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"])
        x = x + np_attention(y, f, f"{blk}/MultiHeadDotProductAttention_1")
        y = np_layer_norm(x, f[f"{blk}/LayerNorm_2/scale"], f[f"{blk}/LayerNorm_2/bias"])
        y = np_gelu(y @ f[f"{blk}/MlpBlock_3/Dense_0/kernel"] + f[f"{blk}/MlpBlock_3/Dense_0/bias"])
        x = x + y @ f[f"{blk}/MlpBlock_3/Dense_1/kernel"] + f[f"{blk}/MlpBlock_3/Dense_1/bias"]
        i += 1
    x = np_layer_norm(x, f["Transformer/encoder_norm/scale"], f["Transformer/encoder_norm/bias"])
    x = x[:, 0] if "cls" in f else x.mean(axis=1)
    if "pre_logits/kernel" in f:
        x = np.tanh(x @ f["pre_logits/kernel"] + f["pre_logits/bias"])
    return x @ f["head/kernel"] + f["head/bias"]


def np_mixer(f, images):
    f = {k: v.astype(np.float64) for k, v in f.items()}
    p = f["stem/kernel"].shape[0]
    x = np_conv(images.astype(np.float64), f["stem/kernel"], p, "VALID") + f["stem/bias"]
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)

    def mlp(y, prefix):
        y = np_gelu(y @ f[f"{prefix}/Dense_0/kernel"] + f[f"{prefix}/Dense_0/bias"])
        return y @ f[f"{prefix}/Dense_1/kernel"] + f[f"{prefix}/Dense_1/bias"]

    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in f:
        blk = f"MixerBlock_{i}"
        y = np_layer_norm(x, f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"])
        x = x + mlp(y.transpose(0, 2, 1), f"{blk}/token_mixing").transpose(0, 2, 1)
        y = np_layer_norm(x, f[f"{blk}/LayerNorm_1/scale"], f[f"{blk}/LayerNorm_1/bias"])
        x = x + mlp(y, f"{blk}/channel_mixing")
        i += 1
    x = np_layer_norm(x, f["pre_head_layer_norm/scale"], f["pre_head_layer_norm/bias"])
    return x.mean(axis=1) @ f["head/kernel"] + f["head/bias"]


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
