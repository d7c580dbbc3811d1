"""Vision Transformer and R+ViT hybrids (vit_jax ``models_vit``), Flax Linen.

Module names are the release names, with one deliberate difference: the encoder
blocks are a single scanned module ``Transformer/encoderblock`` whose parameters
carry a leading layer axis (the release stores ``encoderblock_{i}`` one by one).
``vitzoo.weights.release`` converts between the two.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitzoo.models.layers import DropPath, MlpBlock, layer_norm, scan_layers
from vitzoo.models.resnet import resnet_stem

Dtype = Any


class Encoder1DBlock(nn.Module):
    """Pre-LN transformer block; returns ``(x, None)`` so that it can be scanned."""

    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    deterministic: bool = True
    sow_attention: bool = False  # hook (attention maps): sow weights into "intermediates"

    @nn.compact
    def __call__(self, x: jax.Array, _: Any = None) -> tuple[jax.Array, None]:
        det = self.deterministic
        y = layer_norm("LayerNorm_0", self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            broadcast_dropout=False,
            dropout_rate=self.attention_dropout_rate,
            deterministic=det,
            name="MultiHeadDotProductAttention_1",
        )(y, y, sow_weights=self.sow_attention)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=det)
        x = x + DropPath(self.stochastic_depth, det)(y)
        y = layer_norm("LayerNorm_2", self.dtype)(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, det, name="MlpBlock_3")(y)
        return x + DropPath(self.stochastic_depth, det)(y), None


class AddPositionEmbs(nn.Module):
    """Learned position embedding ``[1, tokens, D]``; its length fixes the resolution."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                            (1, x.shape[1], x.shape[2]), jnp.float32)
        return x + posemb.astype(x.dtype)


class Encoder(nn.Module):
    """Position embedding, scanned blocks, final LayerNorm."""

    num_layers: int
    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    remat: bool = False
    sow_attention: bool = False  # hook (attention maps)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = AddPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        blocks = scan_layers(Encoder1DBlock, self.num_layers, remat=self.remat)
        x, _ = blocks(
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth,
            deterministic=not train,
            sow_attention=self.sow_attention,
            name="encoderblock",
        )(x, None)
        return layer_norm("encoder_norm", self.dtype)(x)


class VisionTransformer(nn.Module):
    """ViT (``resnet_blocks is None``) or R+ViT hybrid; images ``[B,H,W,3]`` in [-1, 1]."""

    num_classes: int
    hidden_size: int
    mlp_dim: int
    num_heads: int
    num_layers: int
    patch_size: int
    resnet_blocks: tuple[int, ...] | None = None
    resnet_width: int = 64
    classifier: str = "token"
    representation_size: int | None = None
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    remat: bool = False
    #: hook (attention maps, vitzoo.attention): True sows every layer's attention weights
    #: ``[layers, B, heads, tokens, tokens]`` into the "intermediates" collection.
    sow_attention: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        x = images.astype(self.dtype)
        if self.resnet_blocks is not None:
            x = resnet_stem(x, blocks=self.resnet_blocks, width=self.resnet_width,
                            dtype=self.dtype)
        p = self.patch_size
        x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID",
                    dtype=self.dtype, name="embedding")(x)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        if self.classifier == "token":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c), jnp.float32)
            x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (b, 1, 1)), x], axis=1)
        x = Encoder(
            num_layers=self.num_layers, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
            dtype=self.dtype, dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth, remat=self.remat,
            sow_attention=self.sow_attention, name="Transformer",
        )(x, train=train)
        x = x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
        if self.representation_size is not None:
            x = jnp.tanh(nn.Dense(self.representation_size, dtype=self.dtype,
                                  name="pre_logits")(x))
        return nn.Dense(self.num_classes, dtype=jnp.float32, name="head",
                        kernel_init=nn.initializers.zeros)(x.astype(jnp.float32))
