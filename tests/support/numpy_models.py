"""An independent NumPy forward pass of ViT, hybrid and Mixer, straight from the flat release arrays.

Written from ``docs/CHECKPOINT_LAYOUT.md``; it shares no code with ``vitzoo.models`` or
``vitzoo.weights.release``, so a model that agrees with it checks the models *and* the
layout conversion. Float64 throughout, with explicit loops instead of library convolutions.
"""

from __future__ import annotations

import math

import numpy as np


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


def np_attention(x, f, p, weights_out=None):
    """Multi-head self-attention; appends the softmax ``[B, H, T, T]`` to ``weights_out``."""
    q = np.einsum("btd,dhk->bthk", x, f[f"{p}/query/kernel"]) + f[f"{p}/query/bias"]
    k = np.einsum("btd,dhk->bthk", x, f[f"{p}/key/kernel"]) + f[f"{p}/key/bias"]
    v = np.einsum("btd,dhk->bthk", x, f[f"{p}/value/kernel"]) + f[f"{p}/value/bias"]
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(-1, keepdims=True)
    if weights_out is not None:
        weights_out.append(weights)
    out = np.einsum("bhqs,bshk->bqhk", weights, v)
    return np.einsum("bqhk,hkd->bqd", out, f[f"{p}/out/kernel"]) + f[f"{p}/out/bias"]


def np_vit(f, images):
    """Forward pass of a ViT or hybrid straight from the flat release arrays."""
    features, _ = np_vit_outputs(f, images)
    f = {k: v.astype(np.float64) for k, v in f.items()}
    return features @ f["head/kernel"] + f["head/bias"]


def np_vit_outputs(f, images):
    """``(pre_logits [B, D], attention [B, layers, H, T, T])`` of a ViT or hybrid.

    The pre-logits are what the head reads: the representation layer's tanh output when
    the file has ``pre_logits/*``, else the class token (or token mean) after the final norm.
    """
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
    i, weights = 0, []
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in f:
        blk = f"Transformer/encoderblock_{i}"
        y = np_layer_norm(x, f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"])
        x = x + np_attention(y, f, f"{blk}/MultiHeadDotProductAttention_1", weights)
        y = np_layer_norm(x, f[f"{blk}/LayerNorm_2/scale"], f[f"{blk}/LayerNorm_2/bias"])
        y = np_gelu(y @ f[f"{blk}/MlpBlock_3/Dense_0/kernel"] + f[f"{blk}/MlpBlock_3/Dense_0/bias"])
        x = x + y @ f[f"{blk}/MlpBlock_3/Dense_1/kernel"] + f[f"{blk}/MlpBlock_3/Dense_1/bias"]
        i += 1
    x = np_layer_norm(x, f["Transformer/encoder_norm/scale"], f["Transformer/encoder_norm/bias"])
    x = x[:, 0] if "cls" in f else x.mean(axis=1)
    if "pre_logits/kernel" in f:
        x = np.tanh(x @ f["pre_logits/kernel"] + f["pre_logits/bias"])
    return x, np.stack(weights, axis=1)


def np_mixer(f, images):
    head = {k: v.astype(np.float64) for k, v in f.items() if k.startswith("head/")}
    return np_mixer_features(f, images) @ head["head/kernel"] + head["head/bias"]


def np_mixer_features(f, images):
    """The mean token after the final LayerNorm: what a Mixer's head reads."""
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
    return x.mean(axis=1)
