"""Building blocks shared by ViT and Mixer (Flax Linen).

Numerics follow vit_jax on purpose, so the released weights reproduce the released
accuracy: tanh-approximate GELU (``nn.gelu`` default), LayerNorm epsilon 1e-6.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-6

Dtype = Any


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name=name)


class MlpBlock(nn.Module):
    """Dense -> GELU -> (dropout) -> Dense -> (dropout); output width = input width."""

    mlp_dim: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    deterministic: bool = True
    xavier: bool = True  # vit_jax ViT MLPs use xavier_uniform; Mixer uses Flax defaults

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense_kw: dict[str, Any] = {"dtype": self.dtype}
        if self.xavier:
            dense_kw |= {"kernel_init": nn.initializers.xavier_uniform(),
                         "bias_init": nn.initializers.normal(stddev=1e-6)}
        width = x.shape[-1]
        y = nn.Dense(self.mlp_dim, name="Dense_0", **dense_kw)(x)
        y = nn.gelu(y)  # approximate=True, as in vit_jax
        y = nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        y = nn.Dense(width, name="Dense_1", **dense_kw)(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole examples, rescale the rest."""

    rate: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def scan_layers(block: type[nn.Module], num_layers: int, *, remat: bool) -> type[nn.Module]:
    """Wrap a ``carry -> (carry, None)`` block into one scanned module.

    The parameters of all layers are stacked on a leading axis and XLA compiles the
    block once instead of ``num_layers`` times, which is most of the compile time of
    a 12/24-layer update on CPU. ``remat`` recomputes activations in the backward
    pass to save memory.
    """
    if remat:
        block = nn.remat(block, prevent_cse=False)
    return nn.scan(
        block,
        variable_axes={"params": 0, "intermediates": 0},  # hook: sown attention, per layer
        split_rngs={"params": True, "dropout": True},
        length=num_layers,
    )
