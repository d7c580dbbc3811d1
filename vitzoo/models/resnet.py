"""The ResNet stem of the R+ViT hybrids (vit_jax ``models_resnet``), Flax Linen.

Root 7x7/2 weight-standardised conv -> GroupNorm -> ReLU -> 3x3/2 SAME max-pool, then
bottleneck stages (ResNet v1.5: the stride sits on the 3x3 conv). ``R+Ti/16`` uses the
root alone (``blocks == ()``). Module names are the release names (``conv_root``,
``gn_root``, ``block{s}/unit{u}/conv1..3``, ``gn1..3``, ``conv_proj``, ``gn_proj``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

#: vit_jax adds this to the standard deviation of the kernel (docs/CHECKPOINT_LAYOUT.md §3).
STD_CONV_EPS = 1e-5
GN_EPS = 1e-6
GN_GROUPS = 32

Dtype = Any


def standardize(kernel: jax.Array, eps: float = STD_CONV_EPS) -> jax.Array:
    """Per output channel over (kh, kw, in): ``(w - mean) / (std + eps)``."""
    mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    centred = kernel - mean
    std = jnp.std(kernel, axis=(0, 1, 2), keepdims=True)
    return centred / (std + eps)


class StdConv(nn.Module):
    """Bias-free SAME conv whose stored kernel is standardised at every call."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        kernel = standardize(kernel).astype(self.dtype)
        return jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel, self.strides, "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def group_norm(name: str, dtype: Dtype, **kw: Any) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=GN_GROUPS, epsilon=GN_EPS, dtype=dtype, name=name, **kw)


class ResidualUnit(nn.Module):
    """Bottleneck unit with a projection shortcut where shape or stride changes."""

    features: int
    strides: tuple[int, int] = (1, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.features * 4
        residual = x
        if x.shape[-1] != out or self.strides != (1, 1):
            residual = StdConv(out, (1, 1), self.strides, self.dtype, name="conv_proj")(x)
            residual = group_norm("gn_proj", self.dtype)(residual)
        y = StdConv(self.features, (1, 1), dtype=self.dtype, name="conv1")(x)
        y = nn.relu(group_norm("gn1", self.dtype)(y))
        y = StdConv(self.features, (3, 3), self.strides, self.dtype, name="conv2")(y)
        y = nn.relu(group_norm("gn2", self.dtype)(y))
        y = StdConv(out, (1, 1), dtype=self.dtype, name="conv3")(y)
        y = group_norm("gn3", self.dtype, scale_init=nn.initializers.zeros)(y)
        return nn.relu(residual + y)


class ResNetStage(nn.Module):
    """``units`` bottleneck units; the first one carries the stage's stride."""

    units: int
    features: int
    first_stride: tuple[int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ResidualUnit(self.features, self.first_stride, self.dtype, name="unit1")(x)
        for u in range(2, self.units + 1):
            x = ResidualUnit(self.features, dtype=self.dtype, name=f"unit{u}")(x)
        return x


def resnet_stem(x: jax.Array, *, blocks: tuple[int, ...], width: int, dtype: Dtype) -> jax.Array:
    """Apply the hybrid stem; call inside a compact method so modules land at its top level.

    That is where the release files keep them (``conv_root``, ``block1``... next to
    ``embedding``), so no renaming is needed for the ResNet part.
    """
    x = StdConv(width, (7, 7), (2, 2), dtype, name="conv_root")(x)
    x = nn.relu(group_norm("gn_root", dtype)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for s, units in enumerate(blocks, start=1):
        stride = (1, 1) if s == 1 else (2, 2)
        x = ResNetStage(units, width * 2 ** (s - 1), stride, dtype, name=f"block{s}")(x)
    return x
