"""Vision Transformer and R+ViT hybrids (vit_jax ``models_vit``), Flax Linen.

Module names are the release names, with one deliberate difference: the encoder
blocks are a single scanned module ``Transformer/encoderblock`` whose parameters
carry a leading layer axis (the release stores ``encoderblock_{i}`` one by one).
``vitzoo.weights.release`` converts between the two.

The same module runs DeiT, DeiT III, DINO, DINOv2, MAE, CLIP and SigLIP through the
switches of :class:`vitzoo.models.configs.ModelConfig` (their defaults give vit_jax's
model unchanged). New parameters take big_vision's names where it has them (``MAPHead_0``)
and otherwise a short one: ``dist`` and ``reg`` tokens, ``ls1``/``ls2`` layer scales,
``Transformer/norm_pre``, ``fc_norm``, ``head_dist``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitzoo.errors import VitzooError
from vitzoo.kernels import matmul as cpu_matmul
from vitzoo.models.configs import ModelConfig
from vitzoo.models.layers import LN_EPS, DropPath, MlpBlock, layer_norm, scan_layers
from vitzoo.models.resnet import resnet_stem

Dtype = Any


class _Projection(nn.Module):
    """The ``kernel``/``bias`` of one ``nn.DenseGeneral``, returned instead of applied.

    Same shapes and initialisation as the Dense layers inside Flax's
    ``MultiHeadDotProductAttention`` (xavier on the flattened kernel, zero bias), so the
    parameter tree, and with it checkpoint loading, is unchanged.
    """

    kernel_shape: tuple[int, ...]
    fan_in_dims: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        shape, k = self.kernel_shape, self.fan_in_dims

        def init(rng: jax.Array, _: Any, dtype: Dtype = jnp.float32) -> jax.Array:
            flat = (math.prod(shape[:k]), math.prod(shape[k:]))
            return nn.initializers.xavier_uniform()(rng, flat, dtype).reshape(shape)

        kernel = self.param("kernel", init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, shape[k:], jnp.float32)
        return kernel, bias


def attention_weights(q: jax.Array, k: jax.Array) -> jax.Array:
    """Softmax(q k^T / sqrt(d)) ``[B, H, T, T]`` in float32, from ``[B, T, H, Dh]``."""
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    scores = cpu_matmul.attention_einsum("bqhe,bkhe->bhqk", q, k).astype(jnp.float32)
    return jax.nn.softmax(scores, axis=-1)


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     dropout: tuple[jax.Array, float] | None = None) -> jax.Array:
    """Softmax(q k^T / sqrt(d)) v over ``[B, T, H, Dh]``; softmax in float32; optional dropout."""
    dtype = q.dtype
    weights = attention_weights(q, k)
    if dropout is not None:
        rng, rate = dropout
        mask = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
        weights = jnp.where(mask, weights / (1.0 - rate), 0.0)
    return cpu_matmul.attention_einsum("bhqk,bkhe->bqhe", weights.astype(dtype), v)


def _project(spec: str, x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
    """The einsum ``spec`` that contracts ``x``'s trailing dims with ``kernel``'s leading ones
    (``btd,dhe->bthe``, ``bqhe,hed->bqd``): one oneDNN product when that backend is active for
    ``dtype``, else the einsum itself, so the XLA path traces exactly as it always did."""
    if cpu_matmul.active(dtype):
        lhs, rhs = spec.split("->")[0].split(",")
        contracted = sum(axis in rhs for axis in lhs)  # the axes the two operands share
        return cpu_matmul.contract(x.astype(dtype), kernel, contracted)
    return jnp.einsum(spec, x, kernel)


attend = einsum_attention  # the formulation SelfAttention uses (benchmarks/levers.py swaps it)


class SelfAttention(nn.Module):
    """Multi-head self-attention with Flax ``MultiHeadDotProductAttention``'s parameters.

    Computed differently, because XLA:CPU runs Flax's version slowly: query, key and value
    come from one fused matrix product (their kernels stacked), the scores are one einsum
    per batch, and the softmax runs in float32 whatever the compute dtype.
    """

    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, return_weights: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The attention output; with ``return_weights`` also the softmax ``[B, H, T, T]``."""
        width = x.shape[-1]
        heads, depth = self.num_heads, width // self.num_heads
        qkv = [_Projection((width, heads, depth), 1, name=n)() for n in ("query", "key", "value")]
        out_kernel, out_bias = _Projection((heads, depth, width), 2, name="out")()
        kernel = jnp.stack([k for k, _ in qkv]).astype(self.dtype)  # [3, D, H, Dh]
        bias = jnp.stack([b for _, b in qkv]).astype(self.dtype)  # [3, H, Dh]
        if cpu_matmul.active(self.dtype):  # one oneDNN product over the stacked kernels
            stacked = jnp.moveaxis(kernel, 0, 1)  # [D, 3, H, Dh]
            y = cpu_matmul.contract(x.astype(self.dtype), stacked, 1)  # [B, T, 3, H, Dh]
            q, k, v = (y[:, :, i] + bias[i] for i in range(3))
        else:
            q, k, v = jnp.einsum("btd,pdhe->pbthe", x, kernel) + bias[:, None, None]
        dropout = None
        if not self.deterministic and self.dropout_rate > 0.0:
            dropout = (self.make_rng("dropout"), self.dropout_rate)
        heads_out = attend(q, k, v, dropout)
        out = (_project("bqhe,hed->bqd", heads_out, out_kernel.astype(self.dtype), self.dtype)
               + out_bias.astype(self.dtype))
        if return_weights:  # attention maps: the same weights, recomputed (XLA folds the repeat)
            return out, attention_weights(q, k)
        return out


class Encoder1DBlock(nn.Module):
    """Pre-LN transformer block; returns ``(x, weights or None)`` so that it can be scanned.

    With ``return_attention`` the second value is this layer's attention softmax, which
    the scan stacks over layers; otherwise ``None`` and nothing extra is computed.
    """

    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    deterministic: bool = True
    return_attention: bool = False
    activation: str = "gelu_tanh"
    layer_norm_eps: float = LN_EPS
    layer_scale: bool = False

    def _scaled(self, name: str, y: jax.Array) -> jax.Array:
        """``y`` times a learned per-channel scale (layer scale), if the model has one."""
        if not self.layer_scale:
            return y
        gamma = self.param(name, nn.initializers.constant(1e-5), (y.shape[-1],), jnp.float32)
        return y * gamma.astype(y.dtype)

    @nn.compact
    def __call__(self, x: jax.Array, _: Any = None) -> tuple[jax.Array, jax.Array | None]:
        det = self.deterministic
        eps = self.layer_norm_eps
        y = layer_norm("LayerNorm_0", self.dtype, eps)(x)
        y = SelfAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.attention_dropout_rate,
            deterministic=det,
            name="MultiHeadDotProductAttention_1",
        )(y, return_weights=self.return_attention)
        weights = None
        if self.return_attention:
            y, weights = y
        y = nn.Dropout(self.dropout_rate)(y, deterministic=det)
        x = x + DropPath(self.stochastic_depth, det)(self._scaled("ls1", y))
        y = layer_norm("LayerNorm_2", self.dtype, eps)(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, det, act=self.activation,
                     name="MlpBlock_3")(y)
        return x + DropPath(self.stochastic_depth, det)(self._scaled("ls2", y)), weights


class AddPositionEmbs(nn.Module):
    """Learned position embedding ``[1, tokens, D]``; its length fixes the resolution."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                            (1, x.shape[1], x.shape[2]), jnp.float32)
        return x + posemb.astype(x.dtype)


class Encoder(nn.Module):
    """Prefix tokens, position embedding, (pre-norm,) scanned blocks, final LayerNorm.

    ``prefix`` (class/distillation/register tokens) is prepended before the position
    embedding is added, or after it with ``no_embed_class``. Returns ``(tokens, attention)``:
    ``attention`` is ``[layers, B, heads, T, T]`` with ``return_attention``, else ``None``.
    """

    num_layers: int
    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    remat: bool = False
    unroll: bool | None = None  # None: unrolled on CPU only (layers.unroll_on_this_backend)
    return_attention: bool = False  # attention maps (vitzoo.attention)
    activation: str = "gelu_tanh"
    layer_norm_eps: float = LN_EPS
    layer_scale: bool = False
    no_embed_class: bool = False
    norm_pre: bool = False
    final_norm: bool = True  # False with fc_norm (the norm then follows the pooling)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, prefix: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        if prefix is not None and not self.no_embed_class:
            x = jnp.concatenate([prefix, x], axis=1)
        x = AddPositionEmbs(name="posembed_input")(x)
        if prefix is not None and self.no_embed_class:
            x = jnp.concatenate([prefix, x], axis=1)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        if self.norm_pre:
            x = layer_norm("norm_pre", self.dtype, self.layer_norm_eps)(x)
        blocks = scan_layers(Encoder1DBlock, self.num_layers, remat=self.remat,
                             unroll=self.unroll)
        x, attention = blocks(
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth,
            deterministic=not train,
            return_attention=self.return_attention,
            activation=self.activation,
            layer_norm_eps=self.layer_norm_eps,
            layer_scale=self.layer_scale,
            name="encoderblock",
        )(x, None)
        if not self.final_norm:
            return x, attention
        return layer_norm("encoder_norm", self.dtype, self.layer_norm_eps)(x), attention


class CrossAttention(nn.Module):
    """Multi-head attention of ``queries`` over ``inputs``, with Flax MHDPA's parameters."""

    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, queries: jax.Array, inputs: jax.Array) -> jax.Array:
        width = inputs.shape[-1]
        heads, depth = self.num_heads, width // self.num_heads

        def project(name: str, y: jax.Array) -> jax.Array:
            kernel, bias = _Projection((width, heads, depth), 1, name=name)()
            return (_project("btd,dhe->bthe", y, kernel.astype(self.dtype), self.dtype)
                    + bias.astype(self.dtype))

        q, k, v = project("query", queries), project("key", inputs), project("value", inputs)
        out_kernel, out_bias = _Projection((heads, depth, width), 2, name="out")()
        return (_project("bqhe,hed->bqd", einsum_attention(q, k, v),
                         out_kernel.astype(self.dtype), self.dtype) + out_bias.astype(self.dtype))


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision ``MAPHead``, timm ``AttentionPoolLatent``).

    A learned probe token attends over the tokens (no residual), then a residual MLP after
    a LayerNorm; returns the probe's output ``[B, D]``. SigLIP's representation.
    """

    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    activation: str = "gelu_tanh"
    layer_norm_eps: float = LN_EPS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]),
                           jnp.float32)
        probe = jnp.tile(probe.astype(self.dtype), (x.shape[0], 1, 1))
        y = CrossAttention(self.num_heads, self.dtype, name="MultiHeadDotProductAttention_0")(
            probe, x)
        z = layer_norm("LayerNorm_0", self.dtype, self.layer_norm_eps)(y)
        y = y + MlpBlock(self.mlp_dim, self.dtype, act=self.activation, name="MlpBlock_0")(z)
        return y[:, 0]


class VisionTransformer(nn.Module):
    """ViT (``config.resnet_blocks is None``) or R+ViT hybrid; images ``[B,H,W,3]`` in [-1, 1].

    The architecture is ``config`` itself (a frozen, hashable :class:`ModelConfig`), read
    where it is used, so a switch added to the config needs no copy here or in
    :func:`vitzoo.models.build_model`. The other fields are how this instance runs, not
    what network it is: head size, compute dtype, regularisation and the layer loop.
    """

    config: ModelConfig
    num_classes: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    remat: bool = False
    unroll: bool | None = None

    def _prefix(self, b: int, c: int, dtype: Dtype) -> tuple[jax.Array | None, int]:
        """The class, distillation and register tokens ``[B, P, D]`` (timm's order), and P."""
        cfg = self.config
        tokens = []
        if cfg.has_class_token:
            tokens.append(self.param("cls", nn.initializers.zeros, (1, 1, c), jnp.float32))
        if cfg.distilled:
            tokens.append(self.param("dist", nn.initializers.zeros, (1, 1, c), jnp.float32))
        if cfg.num_registers:
            tokens.append(self.param("reg", nn.initializers.zeros, (1, cfg.num_registers, c),
                                     jnp.float32))
        if not tokens:
            return None, 0
        prefix = tokens[0] if len(tokens) == 1 else jnp.concatenate(tokens, axis=1)
        return jnp.tile(prefix.astype(dtype), (b, 1, 1)), prefix.shape[1]

    def _pool(self, x: jax.Array, num_prefix: int) -> jax.Array:
        """The pooled representation ``[B, D]`` (before any ``fc_norm``)."""
        cfg = self.config
        if cfg.classifier == "token":
            return x[:, 0]
        patches = x[:, num_prefix:] if num_prefix else x
        if cfg.classifier == "map":
            return MAPHead(cfg.mlp_dim, cfg.num_heads, self.dtype, cfg.activation,
                           cfg.layer_norm_eps, name="MAPHead_0")(patches)
        return jnp.mean(patches, axis=1)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False, outputs: bool = False,
                 attention: bool = False) -> Any:
        """Logits ``[B, K]`` float32; with ``outputs``, ``(logits, out)`` (see :mod:`vitzoo.models`)."""
        cfg = self.config
        if cfg.family == "mixer":
            raise VitzooError(f"{cfg.name} is an MLP-Mixer, which VisionTransformer cannot build",
                              "build it with vitzoo.models.build_model, which picks the module")
        x = images.astype(self.dtype)
        if cfg.resnet_blocks is not None:
            x = resnet_stem(x, blocks=cfg.resnet_blocks, width=cfg.resnet_width,
                            dtype=self.dtype)
        p = cfg.patch_size
        x = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID",
                    use_bias=cfg.patch_bias, dtype=self.dtype, name="embedding")(x)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        prefix, num_prefix = self._prefix(b, c, x.dtype)
        x, weights = Encoder(
            num_layers=cfg.num_layers, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads,
            dtype=self.dtype, dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth, remat=self.remat, unroll=self.unroll,
            return_attention=attention, activation=cfg.activation,
            layer_norm_eps=cfg.layer_norm_eps, layer_scale=cfg.layer_scale,
            no_embed_class=cfg.no_embed_class, norm_pre=cfg.norm_pre,
            final_norm=not cfg.fc_norm, name="Transformer",
        )(x, train=train, prefix=prefix)
        if cfg.distilled:  # DeiT: class and distillation tokens, one head each, averaged
            cls_out, dist_out = x[:, 0].astype(jnp.float32), x[:, 1].astype(jnp.float32)
            head = nn.Dense(self.num_classes, dtype=jnp.float32, name="head",
                            kernel_init=nn.initializers.zeros)
            head_dist = nn.Dense(self.num_classes, dtype=jnp.float32, name="head_dist",
                                 kernel_init=nn.initializers.zeros)
            pre_logits = (cls_out + dist_out) / 2
            logits = (head(cls_out) + head_dist(dist_out)) / 2
        else:
            x = self._pool(x, num_prefix)
            if cfg.fc_norm:
                x = layer_norm("fc_norm", self.dtype, cfg.layer_norm_eps)(x)
            if cfg.representation_size is not None:
                x = jnp.tanh(nn.Dense(cfg.representation_size, dtype=self.dtype,
                                      name="pre_logits")(x))
            pre_logits = x.astype(jnp.float32)
            logits = nn.Dense(self.num_classes, dtype=jnp.float32, name="head",
                              kernel_init=nn.initializers.zeros)(pre_logits)
        if not outputs:
            return logits
        out = {"pre_logits": pre_logits}
        if attention:  # scan stacks layers first: [L, B, H, T, T] -> [B, L, H, T, T]
            out["attention"] = jnp.swapaxes(weights, 0, 1)
        return logits, out
