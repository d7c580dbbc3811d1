"""Resumable training checkpoints: one atomic ``.npz`` holding state + metadata.

The file holds every leaf of the train state (parameters, optimizer state, step) under
its tree path, plus a JSON ``__meta__`` record: the run's identity (the settings that
must match to resume), the step, the data-order seed and the dropout key. The data
iterator position needs no separate state: the pipeline's order is a pure function of
(seed, step), so the step *is* the position.

Written to a temporary file in the same folder and renamed over the old one, so a
SIGKILL at any moment leaves either the previous or the new checkpoint, never half of
one. bfloat16 leaves (the momentum buffer) are stored as their uint16 bit patterns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.atomic import atomic_write
from vitzoo.errors import VitzooError

META_KEY = "__meta__"
FILENAME = "checkpoint.npz"


def _path_name(path: Any) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p))))
                    for p in path) or "leaf"


def save(directory: str | os.PathLike[str], state: Any, meta: dict[str, Any]) -> Path:
    """Write ``state`` (host arrays) and ``meta`` to ``directory/checkpoint.npz`` atomically."""
    import jax

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for i, (path, leaf) in enumerate(leaves):
        name = f"{i:05d}:{_path_name(path)}"
        array = np.asarray(leaf)
        dtypes[name] = str(array.dtype)
        if array.dtype.name == "bfloat16":
            array = array.view(np.uint16)
        arrays[name] = array
    record = {**meta, "dtypes": dtypes}
    arrays[META_KEY] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    target = directory / FILENAME
    with atomic_write(target, fsync=True) as handle:
        np.savez(handle, **arrays)
    return target


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of the checkpoint in ``directory``, or None when there is none."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(bytes(data[META_KEY]).decode())
    except Exception as exc:
        raise VitzooError(f"the checkpoint {path} is unreadable ({exc})",
                          "delete it to start the run from scratch") from None


def restore(directory: str | os.PathLike[str], template: Any) -> tuple[Any, dict[str, Any]]:
    """Load the checkpoint into the structure of ``template``; shapes and dtypes must match."""
    import jax
    import ml_dtypes

    path = Path(directory) / FILENAME
    meta = read_meta(directory)
    if meta is None:
        raise VitzooError(f"no checkpoint in {directory}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    with np.load(path, allow_pickle=False) as data:
        names = sorted(k for k in data.files if k != META_KEY)
        if len(names) != len(leaves):
            raise VitzooError(f"the checkpoint {path} holds {len(names)} arrays but this run "
                              f"needs {len(leaves)}", "use a new --workdir for a different model")
        for name, (_, leaf) in zip(names, leaves, strict=True):
            array = data[name]
            dtype = meta["dtypes"][name]
            if dtype == "bfloat16":
                array = array.view(ml_dtypes.bfloat16)
            want = np.shape(leaf)
            if array.shape != tuple(want):
                raise VitzooError(f"checkpoint array {name} has shape {array.shape}, this run "
                                  f"needs {tuple(want)}", "use a new --workdir")
            out.append(array)
    return jax.tree_util.tree_unflatten(treedef, out), meta
