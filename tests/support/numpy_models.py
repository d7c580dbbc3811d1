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


# --- timm's ViT families, straight from a timm state dict -------------------------------------
#
# Written from timm's VisionTransformer / VisionTransformerDistilled / AttentionPoolLatent
# (timm/models/vision_transformer.py, deit.py, layers/attention_pool.py): PatchEmbed conv on
# NCHW with an OIHW kernel, _pos_embed (prefix tokens cls, dist, reg; no_embed_class adds the
# embedding before prepending them), norm_pre, blocks x + ls1(attn(norm1(x))) and
# x + ls2(mlp(norm2(x))), norm, pool (token / avg over the patches / attn_pool), fc_norm, head.
# Float64, nothing shared with vitzoo.


def np_activation(name, x):
    """timm's act_layer: exact erf GELU, tanh GELU, or QuickGELU x*sigmoid(1.702x)."""
    if name == "gelu":
        from scipy.special import erf

        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return np_gelu(x)
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    raise ValueError(name)


def _t_linear(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _t_norm(sd, name, x, eps):
    return np_layer_norm(x, sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _t_attention(q, k, v):
    """Scaled dot-product attention over ``[B, H, N, d]``."""
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return (scores / scores.sum(-1, keepdims=True)) @ v


def _t_mlp(sd, name, x, act):
    return _t_linear(sd, f"{name}.fc2", np_activation(act, _t_linear(sd, f"{name}.fc1", x)))


def np_timm_family(sd, images_nhwc, *, num_heads, act, eps, global_pool, no_embed_class):
    """``(logits or None, pre_logits)`` of a timm ViT of any family, from its state dict.

    ``pre_logits`` is ``forward_head(pre_logits=True)``: for DeiT's distilled model the mean of
    the class and distillation tokens, else the pooled (and fc_norm'ed) vector.
    """
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = images_nhwc.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW, as torch
    w = sd["patch_embed.proj.weight"]  # [D, C, p, p]
    d, c, p, _ = w.shape
    b, _, hh, ww = x.shape
    gh, gw = hh // p, ww // p
    patches = x.reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, -1)
    x = patches @ w.reshape(d, -1).T  # conv with stride = kernel, flatten(2).transpose(1, 2)
    if "patch_embed.proj.bias" in sd:
        x = x + sd["patch_embed.proj.bias"]
    prefix = [np.broadcast_to(sd[k], (b, sd[k].shape[1], d))
              for k in ("cls_token", "dist_token", "reg_token") if k in sd]
    n_prefix = sum(t.shape[1] for t in prefix)
    if no_embed_class:
        x = np.concatenate([*prefix, x + sd["pos_embed"]], axis=1)
    else:
        x = np.concatenate([*prefix, x], axis=1) + sd["pos_embed"]
    if "norm_pre.weight" in sd:
        x = _t_norm(sd, "norm_pre", x, eps)
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        t = f"blocks.{i}"
        n = x.shape[1]
        qkv = _t_linear(sd, f"{t}.attn.qkv", _t_norm(sd, f"{t}.norm1", x, eps))
        q, k, v = qkv.reshape(b, n, 3, num_heads, d // num_heads).transpose(2, 0, 3, 1, 4)
        y = _t_attention(q, k, v).transpose(0, 2, 1, 3).reshape(b, n, d)
        y = _t_linear(sd, f"{t}.attn.proj", y)
        x = x + (y * sd[f"{t}.ls1.gamma"] if f"{t}.ls1.gamma" in sd else y)
        y = _t_mlp(sd, f"{t}.mlp", _t_norm(sd, f"{t}.norm2", x, eps), act)
        x = x + (y * sd[f"{t}.ls2.gamma"] if f"{t}.ls2.gamma" in sd else y)
        i += 1
    if "norm.weight" in sd:
        x = _t_norm(sd, "norm", x, eps)
    if "dist_token" in sd:  # VisionTransformerDistilled.forward_head
        pre = (x[:, 0] + x[:, 1]) / 2
        logits = (_t_linear(sd, "head", x[:, 0]) + _t_linear(sd, "head_dist", x[:, 1])) / 2
        return logits, pre
    if "attn_pool.latent" in sd:  # AttentionPoolLatent over the patch tokens
        tokens = x[:, n_prefix:]
        n = tokens.shape[1]
        hd = d // num_heads
        q = _t_linear(sd, "attn_pool.q", np.broadcast_to(sd["attn_pool.latent"], (b, 1, d)))
        q = q.reshape(b, 1, num_heads, hd).transpose(0, 2, 1, 3)
        kv = _t_linear(sd, "attn_pool.kv", tokens).reshape(b, n, 2, num_heads, hd)
        k, v = kv.transpose(2, 0, 3, 1, 4)
        y = _t_attention(q, k, v).transpose(0, 2, 1, 3).reshape(b, 1, d)
        y = _t_linear(sd, "attn_pool.proj", y)
        y = y + _t_mlp(sd, "attn_pool.mlp", _t_norm(sd, "attn_pool.norm", y, eps), act)
        x = y[:, 0]
    elif global_pool == "token":
        x = x[:, 0]
    else:  # "avg": the patch tokens only
        x = x[:, n_prefix:].mean(axis=1)
    if "fc_norm.weight" in sd:
        x = _t_norm(sd, "fc_norm", x, eps)
    logits = _t_linear(sd, "head", x) if "head.weight" in sd else None
    return logits, x
