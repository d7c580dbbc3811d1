"""Reading, checking, converting and writing checkpoints in the release ``.npz`` layout.

The release layout (``docs/CHECKPOINT_LAYOUT.md``) is a flat ``.npz`` whose array
names are ``/``-joined parameter paths written by pre-Linen Flax. Our Linen models use
the same module names, so the only differences are handled here, in one place:

* encoder blocks: release ``Transformer/encoderblock_{i}/...`` (Mixer ``MixerBlock_{i}``)
  <-> one scanned module ``Transformer/encoderblock/...`` with a leading layer axis;
* GroupNorm ``scale``/``bias``: ``[1, 1, 1, C]`` in the hybrid files <-> ``[C]``.

Everything is numpy-level; jax is imported only to compute expected shapes.
Files are never unpickled.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from vitzoo.atomic import atomic_write
from vitzoo.errors import VitzooError
from vitzoo.fileformats import ZIP_MAGIC
from vitzoo.models.configs import SWITCH_PREFIX, ModelConfig, infer_config, recorded_switches
from vitzoo.text import and_more

Flat = dict[str, np.ndarray]
Params = dict[str, Any]
NpzInput = str | os.PathLike[str] | IO[bytes]

_GROUPNORM_MODULE = re.compile(r"^(gn\d+|gn_root|gn_proj)$")

# --- reading and writing files ------------------------------------------------------


def _describe_source(src: NpzInput) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return str(getattr(src, "name", "<file object>"))


def _sniff(head: bytes, what: str) -> None:
    """Refuse a file that is not a zip before numpy gives a confusing error."""
    if head.startswith(ZIP_MAGIC):
        return
    if not head:
        raise VitzooError(f"{what} is empty, not a checkpoint",
                          "delete it and download it again")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise VitzooError(
            f"{what} is an HTML page, not a checkpoint (probably an error page from the server)",
            "delete it and download it again; check the URL and your network/proxy")
    if text.startswith(b"<?xml") or text.startswith(b"<error"):
        raise VitzooError(
            f"{what} is an XML document, not a checkpoint (probably an error page from the "
            "server, e.g. AccessDenied or NoSuchKey)",
            "delete it and download it again; check that the object name is right")
    if text.startswith((b"{", b"[")):
        raise VitzooError(f"{what} is a JSON document, not a checkpoint",
                          "delete it and download it again")
    if head.startswith(b"\x93NUMPY"):
        raise VitzooError(f"{what} is a single .npy array, not an .npz checkpoint",
                          "save checkpoints with vitzoo.weights.release.save_npz")
    raise VitzooError(f"{what} is not an .npz checkpoint (no zip signature)",
                      "the file is corrupt or of another format; delete it and download it again")


def load_npz(src: NpzInput) -> Flat:
    """Load a release-layout checkpoint as ``{'/'-joined name: array}``.

    Checks the zip signature first, so an HTML/XML error page saved under a ``.npz``
    name is reported as what it is; never unpickles (a pickled object array is refused);
    a truncated or corrupt archive becomes a :class:`VitzooError`.
    """
    what = _describe_source(src)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise VitzooError(f"checkpoint {what} does not exist",
                              "check the path, or download the checkpoint first")
        with path.open("rb") as fh:
            return _load_open(fh, what)
    return _load_open(src, what)


def _load_open(fh: IO[bytes], what: str) -> Flat:
    head = fh.read(512)
    fh.seek(0)
    _sniff(head, what)
    try:
        with np.load(fh, allow_pickle=False) as archive:
            flat = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise VitzooError(
                f"{what} contains pickled Python objects; refusing to load it "
                "(unpickling can run arbitrary code)",
                "checkpoints must hold plain numeric arrays; re-export it with save_npz") from None
        raise VitzooError(f"{what} is corrupt: {exc}",
                          "delete it and download it again") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise VitzooError(f"{what} is truncated or corrupt ({exc})",
                          "delete it and download it again") from None
    if not flat:
        raise VitzooError(f"{what} holds no arrays", "delete it and download it again")
    for name, array in flat.items():
        if array.dtype.kind not in "fiub":
            raise VitzooError(f"{what}: array {name!r} has non-numeric dtype {array.dtype}",
                              "checkpoints must hold plain numeric arrays")
    return flat


def save_npz(path: str | os.PathLike[str], flat: Mapping[str, Any]) -> Path:
    """Write ``flat`` as an uncompressed ``.npz`` (the release's own format), atomically.

    The data goes to a temporary file in the target folder that replaces ``path`` only
    once complete, so a crash never leaves a half-written checkpoint behind.
    """
    target = Path(path)
    if target.suffix != ".npz":
        raise VitzooError(f"checkpoint path {target} must end in .npz",
                          "numpy would silently append .npz otherwise")
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(flat[name]) for name in sorted(flat)}
    for name, array in arrays.items():
        if array.dtype.kind not in "fiub":
            raise VitzooError(f"cannot save array {name!r} of dtype {array.dtype}",
                              "only numeric arrays can be stored in a checkpoint")
    with atomic_write(target, fsync=True) as handle:
        np.savez(handle, **arrays)
    return target


def npz_bytes(flat: Mapping[str, Any]) -> bytes:
    """The bytes :func:`save_npz` would write (for uploads and tests)."""
    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(flat[name]) for name in sorted(flat)})
    return buf.getvalue()


# --- release layout <-> Linen parameter tree (the one place of renaming) -----------


def _stack_prefixes(config: ModelConfig) -> tuple[str, str]:
    """(Linen scanned prefix, release per-layer prefix) for the repeated blocks."""
    if config.family == "mixer":
        return "MixerBlock/", "MixerBlock_"
    return "Transformer/encoderblock/", "Transformer/encoderblock_"


def _is_groupnorm(key: str) -> bool:
    parts = key.split("/")
    return len(parts) >= 2 and parts[-1] in ("scale", "bias") and bool(
        _GROUPNORM_MODULE.match(parts[-2]))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': x}}`` -> ``{'a/b': x}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{'a/b': x}`` -> ``{'a': {'b': x}}``."""
    tree: dict[str, Any] = {}
    for name in sorted(flat):
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = flat[name]
    return tree


def release_to_params(flat: Mapping[str, Any], config: ModelConfig) -> Params:
    """Release ``.npz`` arrays -> the nested parameter tree of :func:`vitzoo.models.build_model`.

    Stacks ``encoderblock_{i}`` / ``MixerBlock_{i}`` on a new leading axis and squeezes
    GroupNorm ``[1,1,1,C]`` to ``[C]``. Arrays are converted to float32 numpy arrays. The
    recorded switches (``vitzoo_config/*``) are part of ``config``, not parameters.
    """
    linen_prefix, release_prefix = _stack_prefixes(config)
    per_layer: dict[str, dict[int, np.ndarray]] = {}
    out: dict[str, np.ndarray] = {}
    pattern = re.compile(rf"^{re.escape(release_prefix)}(\d+)/(.+)$")
    for key, value in flat.items():
        if key.startswith(SWITCH_PREFIX):
            continue
        array = np.asarray(value, dtype=np.float32)
        if match := pattern.match(key):
            per_layer.setdefault(match.group(2), {})[int(match.group(1))] = array
            continue
        if _is_groupnorm(key):
            array = array.reshape(-1)
        out[key] = array
    for leaf, layers in per_layer.items():
        if sorted(layers) != list(range(config.num_layers)):
            missing = sorted(set(range(config.num_layers)) - set(layers))
            extra = sorted(set(layers) - set(range(config.num_layers)))
            raise VitzooError(
                f"parameter {leaf!r} is not present for every one of {config.num_layers} "
                f"layers (missing layers {missing}, unexpected layers {extra})",
                "the checkpoint does not match the architecture; let vitzoo infer it")
        out[linen_prefix + leaf] = np.stack([layers[i] for i in range(config.num_layers)])
    return unflatten(out)


def switch_arrays(config: ModelConfig) -> Flat:
    """``config``'s switches the arrays cannot show, as ``vitzoo_config/*`` arrays.

    Names as ASCII bytes (``uint8``), numbers as float64, flags as ``uint8``: plain numeric
    arrays, so the file stays loadable without pickle. Empty for vit_jax's defaults.
    """
    out: Flat = {}
    for name, value in recorded_switches(config).items():
        if isinstance(value, str):
            array = np.frombuffer(value.encode("ascii"), np.uint8).copy()
        elif isinstance(value, bool):
            array = np.asarray(value, np.uint8)
        else:
            array = np.asarray(value, np.float64)
        out[SWITCH_PREFIX + name] = array
    return out


def params_to_release(params: Mapping[str, Any], config: ModelConfig) -> Flat:
    """The inverse of :func:`release_to_params`: per-layer names, GroupNorm as ``[1,1,1,C]``.

    The switches the arrays cannot show are added (:func:`switch_arrays`), so a fine-tuned
    family checkpoint reloads with the same numerics.
    """
    linen_prefix, release_prefix = _stack_prefixes(config)
    out: Flat = switch_arrays(config)
    for key, value in flatten(params).items():
        array = np.asarray(value)
        if key.startswith(linen_prefix):
            leaf = key[len(linen_prefix):]
            for i in range(array.shape[0]):
                out[f"{release_prefix}{i}/{leaf}"] = array[i]
        elif _is_groupnorm(key):
            out[key] = array.reshape(1, 1, 1, -1)
        else:
            out[key] = array
    return out


# --- validation against the model -----------------------------------------------------


def expected_release_shapes(
    config: ModelConfig, num_classes: int, resolution: int
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every array a release file of this model must hold.

    Computed from the model itself with ``jax.eval_shape`` (no memory is allocated), so
    the check can never drift from the code. ``num_classes=0`` means "no head".
    """
    import jax
    import jax.numpy as jnp

    from vitzoo.models import build_model

    model = build_model(config, max(num_classes, 1))
    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)["params"]
    # zero-stride views stand in for the arrays so params_to_release can run on shapes
    stubs = jax.tree.map(lambda s: np.broadcast_to(np.zeros((), np.float32), s.shape), shapes)
    expected = {k: tuple(v.shape) for k, v in params_to_release(stubs, config).items()}
    if num_classes == 0:
        expected = {k: v for k, v in expected.items()
                    if not k.startswith(tuple(f"{h}/" for h in HEADS))}
    return expected


def check_release_layout(
    flat: Mapping[str, Any], config: ModelConfig, num_classes: int, resolution: int
) -> None:
    """Raise a :class:`VitzooError` naming missing/extra arrays and wrong shapes.

    GroupNorm parameters are accepted as ``[1,1,1,C]`` (release) or ``[C]`` (newer Flax).
    """
    expected = expected_release_shapes(config, num_classes, resolution)
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    wrong = []
    for key in sorted(set(expected) & set(flat)):
        shape = tuple(np.shape(flat[key]))
        if _is_groupnorm(key) and shape == expected[key][-1:]:
            continue
        if shape != expected[key]:
            wrong.append(f"{key} {shape} (expected {expected[key]})")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {and_more(missing)}")
    if extra:
        problems.append(f"unexpected {len(extra)}: {and_more(extra)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {and_more(wrong)}")
    if problems:
        raise VitzooError(
            f"checkpoint does not fit {config.name} ({num_classes} classes at {resolution} px): "
            + "; ".join(problems),
            "the file is incomplete, or not in the release layout; re-download or re-export it")


# --- adaptation: position embedding, head, representation layer ---------------------


def resize_posemb(
    posemb: np.ndarray, new_grid: int | tuple[int, int], has_class_token: bool | int = True
) -> np.ndarray:
    """Resize a ``[1, tokens, D]`` position embedding to a new token grid.

    Linear interpolation on the square grid (``scipy.ndimage.zoom(order=1)``, as vit_jax
    does when fine-tuning at a new resolution); the class token is kept as is.
    ``has_class_token`` may be a count: the prefix tokens the embedding covers
    (:attr:`ModelConfig.posemb_prefix_tokens`, e.g. 2 for DeiT's class + distillation).
    """
    from scipy import ndimage

    posemb = np.asarray(posemb, dtype=np.float32)
    gh, gw = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    prefix = posemb[:, :int(has_class_token)]
    grid = posemb[0, prefix.shape[1]:]
    old = int(np.sqrt(grid.shape[0]))
    if old * old != grid.shape[0]:
        raise VitzooError(f"position embedding has {grid.shape[0]} grid tokens, not a square",
                          "only square token grids can be resized")
    if (gh, gw) == (old, old):
        return posemb
    grid = grid.reshape(old, old, -1)
    zoomed = ndimage.zoom(grid, (gh / old, gw / old, 1), order=1)
    if zoomed.shape[:2] != (gh, gw):  # zoom rounds the output size; never expected
        raise AssertionError(f"zoom gave {zoomed.shape[:2]}, wanted {(gh, gw)}")
    return np.concatenate([prefix, zoomed.reshape(1, gh * gw, -1)], axis=1).astype(np.float32)


def _feature_dim(params: Mapping[str, Any]) -> int:
    """Width of the vector the head sees: the representation layer's, else the model's."""
    if "pre_logits" in params:
        return int(np.shape(params["pre_logits"]["kernel"])[1])
    stem = params.get("embedding", params.get("stem"))
    if stem is None:
        raise VitzooError("parameters have neither 'embedding' nor 'stem'",
                          "pass a ViT/hybrid/Mixer parameter tree")
    return int(np.shape(stem["kernel"])[-1])


#: The classification heads a model may have: every one is sized by the class count.
HEADS = ("head", "head_dist")


def replace_head(params: Mapping[str, Any], num_classes: int) -> Params:
    """A copy of ``params`` with a fresh zero-initialised ``num_classes`` head.

    Zeros, as vit_jax and big_vision do: the new logits start at 0 (uniform softmax) and
    the first updates are not disturbed by a random projection.
    """
    width = _feature_dim(params)
    out = dict(params)
    for head in HEADS:  # DeiT's distillation head is replaced with the class head
        if head == "head" or head in params:
            out[head] = {"kernel": np.zeros((width, num_classes), np.float32),
                         "bias": np.zeros((num_classes,), np.float32)}
    return out


def drop_representation(params: Mapping[str, Any]) -> Params:
    """Remove the ``pre_logits`` layer of the 2020 in21k checkpoints (vit_jax's "drop-head").

    The head was trained on the tanh of that layer, so it is meaningless without it
    and is re-initialised too (zero, sized to the model width).
    """
    if "pre_logits" not in params:
        return dict(params)
    out = {k: v for k, v in params.items() if k != "pre_logits"}
    if "head" in out:
        out = replace_head(out, int(np.shape(params["head"]["bias"])[0]))
    return out


# --- one-call loaders ----------------------------------------------------------------


def load_checkpoint(
    src: NpzInput | Mapping[str, Any], *, arch: str | None = None
) -> tuple[ModelConfig, dict[str, Any], Params]:
    """Load, recognise and validate a release-layout checkpoint as it is.

    Returns ``(config, info, params)`` where ``info`` is :func:`infer_config`'s facts
    (``num_classes``, ``resolution``...). Nothing is resized or replaced.
    """
    flat = dict(src) if isinstance(src, Mapping) else load_npz(src)
    config, info = infer_config(flat, arch)
    check_release_layout(flat, config, info["num_classes"], info["resolution"])
    return config, info, release_to_params(flat, config)


def load_for_finetune(
    src: NpzInput | Mapping[str, Any],
    *,
    arch: str | None = None,
    num_classes: int,
    resolution: int | None = None,
    keep_representation: bool = False,
) -> tuple[ModelConfig, Params]:
    """Everything fine-tuning needs from a checkpoint, in one call.

    Infers (and, with ``arch``, checks) the architecture, validates every array,
    resizes the position embedding to ``resolution`` (default: the checkpoint's own),
    drops a ``pre_logits`` layer unless ``keep_representation``, and gives a zero head
    when the class count differs. Returns the config to pass to ``build_model`` and
    the parameter tree (numpy float32).
    """
    config, info, params = load_checkpoint(src, arch=arch)
    if resolution is not None and resolution != info["resolution"]:
        if config.family == "mixer":
            raise VitzooError(
                f"{config.name} checkpoints only run at their own resolution "
                f"{info['resolution']} (the token-mixing layers are sized by the patch count)",
                f"fine-tune at --res {info['resolution']}")
        grid = config.grid(resolution)
        transformer = dict(params["Transformer"])
        posemb = transformer["posembed_input"]["pos_embedding"]
        transformer["posembed_input"] = {
            "pos_embedding": resize_posemb(posemb, grid, config.posemb_prefix_tokens)}
        params = {**params, "Transformer": transformer}
    if info["has_representation"] and not keep_representation:
        params = drop_representation(params)  # also zeroes the head
        config = replace(config, representation_size=None)
    if num_classes != info["num_classes"]:
        params = replace_head(params, num_classes)
    return config, params
