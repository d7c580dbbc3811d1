"""Building blocks shared by ViT and Mixer (Flax Linen).

Numerics follow vit_jax on purpose, so the released weights reproduce the released
accuracy: tanh-approximate GELU (``nn.gelu`` default), LayerNorm epsilon 1e-6. Both are
defaults only: the other ViT families choose theirs (:class:`vitzoo.models.configs.ModelConfig`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitzoo.kernels.matmul import dense_dot_general
from vitzoo.models.configs import ACTIVATIONS

LN_EPS = 1e-6

Dtype = Any


def layer_norm(name: str, dtype: Dtype, eps: float = LN_EPS) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name)


def activation(name: str, x: jax.Array) -> jax.Array:
    """The MLP non-linearity called ``name`` (one of :data:`vitzoo.models.configs.ACTIVATIONS`)."""
    if name == "gelu_tanh":
        return nn.gelu(x)  # approximate=True, as in vit_jax
    if name == "gelu":
        return nn.gelu(x, approximate=False)
    if name == "quick_gelu":
        return x * nn.sigmoid(1.702 * x)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


class MlpBlock(nn.Module):
    """Dense -> GELU -> (dropout) -> Dense -> (dropout); output width = input width."""

    mlp_dim: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    deterministic: bool = True
    xavier: bool = True  # vit_jax ViT MLPs use xavier_uniform; Mixer uses Flax defaults
    act: str = "gelu_tanh"  # see vitzoo.models.configs.ACTIVATIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense_kw: dict[str, Any] = {"dtype": self.dtype}
        routed = dense_dot_general(self.dtype)  # oneDNN for bf16 on CPUs with bf16 units
        if routed is not None:
            dense_kw["dot_general"] = routed
        if self.xavier:
            dense_kw |= {"kernel_init": nn.initializers.xavier_uniform(),
                         "bias_init": nn.initializers.normal(stddev=1e-6)}
        width = x.shape[-1]
        y = nn.Dense(self.mlp_dim, name="Dense_0", **dense_kw)(x)
        y = activation(self.act, y)
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


def unroll_on_this_backend() -> bool:
    """Unroll the layer stack on CPU, keep the loop on accelerators.

    A scanned stack makes XLA keep each layer's activations in stacked buffers that it
    zero-fills, copies and updates slice by slice: on XLA:CPU that was 35-40% of a ViT-Ti
    train step's op time (benchmarks/RESULTS.md, "Train-step profile"). Unrolled, the
    buffers go away; on GPU/TPU the loop compiles faster and costs nothing at run time.
    """
    return jax.default_backend() == "cpu"


def scan_layers(block: type[nn.Module], num_layers: int, *, remat: bool,
                unroll: bool | None = None) -> type[nn.Module]:
    """Wrap a ``carry -> (carry, None)`` block into one scanned module.

    The parameters of all layers are stacked on a leading axis (the layout vitzoo's
    checkpoints convert to and from). ``unroll`` (default: on CPU only, see
    :func:`unroll_on_this_backend`) emits the layers one after another instead of a
    loop; the parameters stay stacked either way. ``remat`` recomputes activations in
    the backward pass to save memory.
    """
    if remat:
        block = nn.remat(block, prevent_cse=False)
    if unroll is None:
        unroll = unroll_on_this_backend()
    return nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        length=num_layers,
        unroll=num_layers if unroll else 1,
    )
