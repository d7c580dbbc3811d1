"""MLP-Mixer (vit_jax ``models_mixer``), Flax Linen.

Release names, except that the blocks are one scanned module ``MixerBlock`` with a
leading layer axis (the release stores ``MixerBlock_{i}``). The token-mixing MLP is
sized by the number of patches, so a Mixer checkpoint only runs at its own resolution.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitzoo.models.layers import DropPath, MlpBlock, layer_norm, scan_layers

Dtype = Any


class MixerBlock(nn.Module):
    """Token mixing across patches, then channel mixing; returns ``(x, None)`` for scan."""

    tokens_mlp_dim: int
    channels_mlp_dim: int
    dtype: Dtype = jnp.float32
    stochastic_depth: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, _: Any = None) -> tuple[jax.Array, None]:
        det = self.deterministic
        y = layer_norm("LayerNorm_0", self.dtype)(x)
        y = jnp.swapaxes(y, 1, 2)
        y = MlpBlock(self.tokens_mlp_dim, self.dtype, xavier=False, name="token_mixing")(y)
        y = jnp.swapaxes(y, 1, 2)
        x = x + DropPath(self.stochastic_depth, det)(y)
        y = layer_norm("LayerNorm_1", self.dtype)(x)
        y = MlpBlock(self.channels_mlp_dim, self.dtype, xavier=False, name="channel_mixing")(y)
        return x + DropPath(self.stochastic_depth, det)(y), None


class MlpMixer(nn.Module):
    """Patch stem, scanned Mixer blocks, LayerNorm, global average pool, head."""

    num_classes: int
    hidden_size: int
    num_layers: int
    patch_size: int
    tokens_mlp_dim: int
    channels_mlp_dim: int
    dtype: Dtype = jnp.float32
    stochastic_depth: float = 0.0
    remat: bool = False
    unroll: bool | None = None  # None: unrolled on CPU only (layers.unroll_on_this_backend)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False, outputs: bool = False,
                 attention: bool = False) -> Any:
        """Logits ``[B, K]`` float32; with ``outputs``, ``(logits, {"pre_logits": ...})``."""
        if attention:
            raise ValueError("MLP-Mixer has no attention weights to return")
        p = self.patch_size
        x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID",
                    dtype=self.dtype, name="stem")(images.astype(self.dtype))
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        blocks = scan_layers(MixerBlock, self.num_layers, remat=self.remat,
                             unroll=self.unroll)
        x, _ = blocks(
            tokens_mlp_dim=self.tokens_mlp_dim,
            channels_mlp_dim=self.channels_mlp_dim,
            dtype=self.dtype,
            stochastic_depth=self.stochastic_depth,
            deterministic=not train,
            name="MixerBlock",
        )(x, None)
        x = layer_norm("pre_head_layer_norm", self.dtype)(x)
        pre_logits = jnp.mean(x, axis=1).astype(jnp.float32)
        logits = nn.Dense(self.num_classes, dtype=jnp.float32, name="head",
                          kernel_init=nn.initializers.zeros)(pre_logits)
        return (logits, {"pre_logits": pre_logits}) if outputs else logits
