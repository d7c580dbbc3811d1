"""timm <-> release conversion, checked with a NumPy forward pass written in timm's layout.

``np_timm_vit`` follows timm's module structure and tensor conventions (NCHW, OIHW convs,
``nn.Linear`` weights ``[out, in]``, fused ``qkv`` reshaped ``(B, N, 3, H, d)``, ResNetV2
``stem``/``stages``/``downsample``), but with vit_jax's numerics (tanh GELU, StdConv eps on
the std, GroupNorm eps 1e-6) so that any difference isolates the *mapping*. It shares no
code with vitzoo or with the release-layout reference in tests.support.numpy_models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support.ckpt_factory import tiny_hybrid_arrays, tiny_mixer_arrays, tiny_vit_arrays
from vitzoo.errors import VitzooError
from vitzoo.models import build_model, get_config, infer_config
from vitzoo.weights.release import expected_release_shapes, release_to_params
from vitzoo.weights.timm import (
    guess_config,
    load_timm_safetensors,
    release_to_timm,
    timm_to_release,
)

# --- NumPy forward in timm's layout (NCHW) -----------------------------------------------


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _ln(x, sd, name):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _pad_same(x, k, s, value=0.0):
    pads = []
    for size in x.shape[2:]:
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), (0, 0), *pads), constant_values=value)


def _conv2d(x, w, stride):
    """NCHW input, OIHW weight, no padding (like torch.nn.functional.conv2d)."""
    o, _, kh, kw = w.shape
    b, _, h, wd = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((b, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
    return out


def _std_conv_same(x, w, stride):
    flat = w.reshape(w.shape[0], -1)
    w = ((flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-5)).reshape(w.shape)
    return _conv2d(_pad_same(x, w.shape[2], stride), w, stride)


def _gn(x, sd, name, act):
    b, c, h, w = x.shape
    g = x.reshape(b, 32, c // 32, h, w)
    g = (g - g.mean((2, 3, 4), keepdims=True)) / np.sqrt(g.var((2, 3, 4), keepdims=True) + 1e-6)
    y = g.reshape(b, c, h, w) * sd[f"{name}.weight"][:, None, None] + sd[f"{name}.bias"][:, None,
                                                                                         None]
    return np.maximum(y, 0) if act else y


def _backbone(x, sd):
    stem = "patch_embed.backbone.stem" if any(".stages." in k for k in sd) else \
        "patch_embed.backbone"
    x = _gn(_std_conv_same(x, sd[f"{stem}.conv.weight"], 2), sd, f"{stem}.norm", act=True)
    x = _pad_same(x, 3, 2, value=-np.inf)
    oh, ow = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    x = np.max([x[:, :, i:i + 2 * oh:2, j:j + 2 * ow:2] for i in range(3) for j in range(3)], 0)
    s = 0
    while f"patch_embed.backbone.stages.{s}.blocks.0.conv1.weight" in sd:
        u = 0
        while (p := f"patch_embed.backbone.stages.{s}.blocks.{u}") and f"{p}.conv1.weight" in sd:
            stride = 2 if s > 0 and u == 0 else 1
            shortcut = x
            if f"{p}.downsample.conv.weight" in sd:
                shortcut = _gn(_std_conv_same(x, sd[f"{p}.downsample.conv.weight"], stride), sd,
                               f"{p}.downsample.norm", act=False)
            y = _gn(_std_conv_same(x, sd[f"{p}.conv1.weight"], 1), sd, f"{p}.norm1", act=True)
            y = _gn(_std_conv_same(y, sd[f"{p}.conv2.weight"], stride), sd, f"{p}.norm2", act=True)
            y = _gn(_std_conv_same(y, sd[f"{p}.conv3.weight"], 1), sd, f"{p}.norm3", act=False)
            x = np.maximum(y + shortcut, 0)
            u += 1
        s += 1
    return x


def np_timm_vit(sd, images_nhwc, num_heads):
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = images_nhwc.astype(np.float64).transpose(0, 3, 1, 2)
    if any(k.startswith("patch_embed.backbone.") for k in sd):
        x = _backbone(x, sd)
    p = sd["patch_embed.proj.weight"].shape[-1]
    x = _conv2d(x, sd["patch_embed.proj.weight"], p) + sd["patch_embed.proj.bias"][:, None, None]
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1).transpose(0, 2, 1)
    x = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, c)), x], 1) + sd["pos_embed"]
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        t = f"blocks.{i}"
        y = _ln(x, sd, f"{t}.norm1")
        n = y.shape[1]
        qkv = _linear(y, sd, f"{t}.attn.qkv").reshape(b, n, 3, num_heads, c // num_heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        attn = (q * (c // num_heads) ** -0.5) @ k.transpose(0, 1, 3, 2)
        attn = np.exp(attn - attn.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, c)
        x = x + _linear(y, sd, f"{t}.attn.proj")
        y = _gelu(_linear(_ln(x, sd, f"{t}.norm2"), sd, f"{t}.mlp.fc1"))
        x = x + _linear(y, sd, f"{t}.mlp.fc2")
        i += 1
    return _linear(_ln(x, sd, "norm")[:, 0], sd, "head")


def np_timm_mixer(sd, images_nhwc):
    """timm ``MlpMixer`` (``stem.proj``, ``blocks.i.mlp_tokens/mlp_channels``, ``norm``, ``head``)."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = images_nhwc.astype(np.float64).transpose(0, 3, 1, 2)
    p = sd["stem.proj.weight"].shape[-1]
    x = _conv2d(x, sd["stem.proj.weight"], p) + sd["stem.proj.bias"][:, None, None]
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1).transpose(0, 2, 1)  # flatten(2).transpose(1, 2): [B, N, C]
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        t = f"blocks.{i}"
        y = _ln(x, sd, f"{t}.norm1").transpose(0, 2, 1)
        y = _linear(_gelu(_linear(y, sd, f"{t}.mlp_tokens.fc1")), sd, f"{t}.mlp_tokens.fc2")
        x = x + y.transpose(0, 2, 1)
        y = _gelu(_linear(_ln(x, sd, f"{t}.norm2"), sd, f"{t}.mlp_channels.fc1"))
        x = x + _linear(y, sd, f"{t}.mlp_channels.fc2")
        i += 1
    return _linear(_ln(x, sd, "norm").mean(axis=1), sd, "head")


# --- tests -----------------------------------------------------------------------------------

CASES = {
    "vit": (lambda: tiny_vit_arrays(seed=11, heads=4), 32),
    "hybrid-stem-only": (lambda: tiny_hybrid_arrays(seed=12, patch=2), 64),
    "hybrid-stages": (lambda: tiny_hybrid_arrays(seed=13, blocks=(2, 1)), 64),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_timm_layout_gives_the_same_logits(kind):
    make, res = CASES[kind]
    flat = make()
    config, _ = infer_config(flat)
    state = release_to_timm(flat, config)
    images = np.random.default_rng(1).uniform(-1, 1, (2, res, res, 3)).astype(np.float32)
    expected = np_timm_vit(state, images, config.num_heads)
    model = build_model(config, 10)
    got = np.asarray(model.apply({"params": release_to_params(flat, config)}, images))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    # and the way back gives the model the same logits
    back = timm_to_release(state, config)
    again = np.asarray(model.apply({"params": release_to_params(back, config)}, images))
    np.testing.assert_array_equal(again, got)


def test_timm_layout_mixer_gives_the_same_logits():
    flat = tiny_mixer_arrays(seed=14, image_size=32, patch=8, tokens_mlp=12)
    config, _ = infer_config(flat)
    state = release_to_timm(flat, config)
    assert state["blocks.0.mlp_tokens.fc1.weight"].shape == (12, 16)
    images = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    expected = np_timm_mixer(state, images)
    model = build_model(config, 10)
    got = np.asarray(model.apply({"params": release_to_params(flat, config)}, images))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("make", [
    lambda: tiny_vit_arrays(seed=1), lambda: tiny_vit_arrays(seed=1, classifier="gap"),
    lambda: tiny_vit_arrays(seed=1, num_classes=0),
    lambda: tiny_hybrid_arrays(seed=2), lambda: tiny_hybrid_arrays(seed=3, blocks=(1, 2)),
    lambda: tiny_mixer_arrays(seed=4),
], ids=["vit", "vit-gap", "vit-headless", "hybrid-stem-only", "hybrid-stages", "mixer"])
def test_round_trips_are_exact(make):
    flat = make()
    config, _ = infer_config(flat)
    state = release_to_timm(flat, config)
    back = timm_to_release(state, config)
    assert back.keys() == flat.keys()
    for key in flat:
        assert back[key].shape == flat[key].shape and np.array_equal(back[key], flat[key]), key
    again = release_to_timm(back, config)
    assert again.keys() == state.keys()
    assert all(np.array_equal(again[k], state[k]) for k in state)


def test_timm_names_and_shapes():
    flat = tiny_hybrid_arrays(blocks=(1,), hidden=32, heads=2)
    config, _ = infer_config(flat)
    state = release_to_timm(flat, config)
    assert state["patch_embed.backbone.stem.conv.weight"].shape == (32, 3, 7, 7)
    assert state["patch_embed.backbone.stem.norm.weight"].shape == (32,)
    assert state["patch_embed.backbone.stages.0.blocks.0.downsample.conv.weight"].shape == \
        (128, 32, 1, 1)
    assert state["blocks.1.attn.qkv.weight"].shape == (96, 32)
    assert state["blocks.1.attn.qkv.bias"].shape == (96,)
    assert state["blocks.0.mlp.fc1.weight"].shape == (64, 32)
    assert state["head.weight"].shape == (10, 32)
    stem_only = release_to_timm(tiny_hybrid_arrays(), infer_config(tiny_hybrid_arrays())[0])
    assert "patch_embed.backbone.conv.weight" in stem_only  # timm's "stem_only" naming
    assert "patch_embed.backbone.norm.bias" in stem_only


def test_load_timm_safetensors_guesses_a_table_architecture(tmp_path):
    config = get_config("Ti/16")
    shapes = expected_release_shapes(config, 1000, 224)
    rng = np.random.default_rng(0)
    flat = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    path = tmp_path / "vit_tiny_patch16_224.safetensors"
    save_file(release_to_timm(flat, config), str(path))
    assert guess_config(release_to_timm(flat, config)).num_heads == 3
    loaded = load_timm_safetensors(path)
    assert loaded.keys() == flat.keys()
    assert all(np.array_equal(loaded[k], flat[k]) for k in flat)
    with pytest.raises(VitzooError, match="does not match architecture S/16"):
        load_timm_safetensors(path, "S/16")


def test_load_timm_safetensors_custom_width_needs_a_config(tmp_path):
    flat = tiny_vit_arrays(seed=5)
    config, _ = infer_config(flat)
    path = tmp_path / "mine.safetensors"
    save_file(release_to_timm(flat, config), str(path))
    with pytest.raises(VitzooError, match="number of attention heads"):
        load_timm_safetensors(path)
    loaded = load_timm_safetensors(path, config)
    assert all(np.array_equal(loaded[k], flat[k]) for k in flat)


def test_bad_safetensors_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(VitzooError, match="not a readable safetensors"):
        load_timm_safetensors(path)
    with pytest.raises(VitzooError, match="does not exist"):
        load_timm_safetensors(tmp_path / "missing.safetensors")


def test_unknown_timm_keys_are_refused():
    flat = tiny_vit_arrays()
    config, _ = infer_config(flat)
    state = release_to_timm(flat, config)
    state["fc_norm.weight"] = np.ones(32, np.float32)
    with pytest.raises(VitzooError, match=r"fc_norm\.weight"):
        timm_to_release(state, config)
    del state["fc_norm.weight"], state["blocks.1.mlp.fc2.bias"]
    with pytest.raises(VitzooError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        timm_to_release(state, config)


def test_representation_layer_is_not_silently_dropped():
    flat = tiny_vit_arrays(representation_size=24)
    config, _ = infer_config(flat)
    with pytest.raises(VitzooError, match="pre_logits"):
        release_to_timm(flat, config)
