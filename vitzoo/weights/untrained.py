"""Untrained checkpoints: an architecture with random weights, for trying every command offline.

Why: without the network there is no released checkpoint to start from, and a newcomer should
not have to read test code to find one. ``random:ARCH`` (e.g. ``random:Ti/16``), given wherever
a checkpoint is taken, builds ``ARCH`` with the model's own initialisers (as timm's
``pretrained=False``), a 1000-class head at 224 px, seed :data:`SEED` (so two machines get the
same file), and writes it once in the release layout under ``VITZOO_HOME/untrained/``. Every
command then treats it as a checkpoint file, and says it is untrained: ``run.json``
(``source.untrained: true``), probe tables (the candidate is named ``random:ARCH``), exports
(``"untrained": true`` in their config) and ``predict``'s notes. Its accuracy is chance.

The file's facts travel in a sidecar ``<file>.json`` (``{"untrained": true, ...}``), so a copy
moved elsewhere with its sidecar stays labelled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitzoo import config
from vitzoo.atomic import atomic_write, output_dir
from vitzoo.errors import VitzooError

#: The spelling that asks for random weights: ``random:Ti/16``.
PREFIX = "random:"
#: The seed of every untrained checkpoint (``jax.random.PRNGKey(SEED)``).
SEED = 0
#: Head and resolution of the file (the release's ImageNet-1k fine-tune shape).
NUM_CLASSES = 1000
RESOLUTION = 224
WHAT = "the untrained-checkpoint folder (VITZOO_HOME/untrained)"


def requested_arch(name: str) -> str | None:
    """``random:Ti/16`` -> ``Ti/16``; None for any other checkpoint argument."""
    text = str(name).strip()
    if not text.lower().startswith(PREFIX):
        return None
    arch = text[len(PREFIX):].strip()
    if not arch:
        raise VitzooError(f"{name!r} names no architecture", "e.g. random:Ti/16")
    return arch


def folder() -> Path:
    return config.vitzoo_home() / "untrained"


def sidecar(npz: Path) -> Path:
    return npz.with_name(npz.name + ".json")


def facts(npz: str | Path) -> dict[str, Any] | None:
    """The untrained file's record (``untrained``, ``architecture``, ``seed``...), or None."""
    try:
        record = json.loads(sidecar(Path(npz)).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no sidecar, unreadable, or not a file name at all
        return None
    return record if isinstance(record, dict) and record.get("untrained") is True else None


def is_untrained(npz: str | Path) -> bool:
    return facts(npz) is not None


def label(npz: str | Path, fallback: str) -> str:
    """How tables name a candidate: ``random:ARCH`` for an untrained file, else ``fallback``."""
    record = facts(npz)
    return f"{PREFIX}{record['architecture']}" if record else fallback


def checkpoint(arch: str) -> Path:
    """The untrained ``arch`` checkpoint file, built on first use (needs jax, not the network)."""
    from vitzoo.models import get_config

    model_config = get_config(arch)
    file_arch = model_config.name.replace("/", "_").replace("+", "_")
    npz = folder() / f"{file_arch}-untrained-seed{SEED}.npz"
    if npz.is_file() and is_untrained(npz):
        return npz
    output_dir(folder(), WHAT)
    _build(model_config, npz)
    record = {"untrained": True, "architecture": model_config.name, "seed": SEED,
              "num_classes": NUM_CLASSES, "resolution": RESOLUTION,
              "init": "the model's own Flax initialisers (as timm's pretrained=False)",
              "note": "random weights: accuracy is chance; for trying commands, not for results"}
    with atomic_write(sidecar(npz), "w") as handle:
        handle.write(json.dumps(record, indent=1) + "\n")
    return npz


def _build(model_config: Any, npz: Path) -> None:
    import jax
    import jax.numpy as jnp

    from vitzoo.models import build_model
    from vitzoo.weights.release import params_to_release, save_npz

    model = build_model(model_config, NUM_CLASSES)
    images = jnp.zeros((1, RESOLUTION, RESOLUTION, 3), jnp.float32)
    params = jax.jit(lambda key: model.init(key, images, train=False))(jax.random.PRNGKey(SEED))
    save_npz(npz, params_to_release(jax.device_get(params["params"]), model_config))
