"""Putting host values on the local devices the way ``jax.pmap`` expects them.

``jax.device_put_replicated`` / ``device_put_sharded`` are deprecated (pmap is built on
jit + shard_map since JAX 0.8): a replicated value is an array with a leading axis of
size ``len(devices)`` sharded over that axis, one copy per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

#: The name of the data-parallel axis of every pmapped step (train, eval, features).
AXIS = "batch"


def _sharding(devices: Sequence[Any]) -> Any:
    """The sharding ``jax.pmap`` gives its outputs: a 1-D mesh named after the pmap axis.

    Inputs must carry exactly this sharding, or the step sees a different input
    signature on its second call (its own output) and compiles a second time.
    """
    mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def replicate(tree: Any, devices: Sequence[Any] | None = None) -> Any:
    """One copy of every leaf per local device, stacked on a new leading axis."""
    devices = list(devices or jax.local_devices())
    sharding = _sharding(devices)

    def put(x: Any) -> Any:
        x = np.asarray(x)
        shards = [jax.device_put(x[None], d) for d in devices]
        return jax.make_array_from_single_device_arrays((len(devices), *x.shape), sharding,
                                                        shards)

    return jax.tree.map(put, tree)


def shard(tree: Any, devices: Sequence[Any] | None = None) -> Any:
    """Host arrays ``[devices, ...]`` -> device arrays, slice ``i`` on device ``i``."""
    devices = list(devices or jax.local_devices())
    sharding = _sharding(devices)

    def put(x: Any) -> Any:
        x = np.asarray(x)
        shards = [jax.device_put(x[i:i + 1], d) for i, d in enumerate(devices)]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, shards)

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of every leaf, as host numpy arrays."""
    def get(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array):  # read one shard: no gather program to compile
            shard = min(x.addressable_shards, key=lambda s: s.index[0].start or 0)
            return np.asarray(shard.data)[0]
        return np.asarray(x[0])

    return jax.tree.map(get, tree)
