"""Tiny checkpoints in the EXACT release layout, for tests (importable helper, not a test).

The arrays are named and shaped as in ``docs/CHECKPOINT_LAYOUT.md`` (pre-Linen
names ``MultiHeadDotProductAttention_1`` / ``LayerNorm_2`` / ``MlpBlock_3``, per-layer
``encoderblock_{i}``, GroupNorm ``scale``/``bias`` as ``[1, 1, 1, C]``) and written the
way vit_jax's own test helper does (sorted names, plain uncompressed ``np.savez``).
This module deliberately does not use vitzoo's own conversion code, so tests that load
these files check that code against the layout document.

Values are random from a seeded numpy generator; they are test data, not weights.

Typical use::

    from tests.support.ckpt_factory import write_tiny_vit
    path = write_tiny_vit(tmp_path / "tiny.npz", num_classes=10, image_size=32, patch=8)
    # -> ViT with hidden 32, 2 layers, 2 heads, mlp 64; 16 patch tokens + cls

Stride of the hybrids: the stem alone downsamples 4x, each stage after the first 2x,
then the ``patch`` embedding; ``image_size`` must be a multiple of that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]


class _Gen:
    """Seeded random arrays with roughly unit-scale activations."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def kernel(self, *shape: int, fan_in: int | None = None) -> np.ndarray:
        fan_in = fan_in or int(np.prod(shape[:-1]))
        return (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def bias(self, *shape: int, scale: float = 0.1) -> np.ndarray:
        return (scale * self.rng.standard_normal(shape)).astype(np.float32)

    def norm_scale(self, *shape: int) -> np.ndarray:
        return (1.0 + 0.1 * self.rng.standard_normal(shape)).astype(np.float32)


def _write(path: str | Path, arrays: Arrays) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **{k: arrays[k] for k in sorted(arrays)})
    return path


def _encoder(g: _Gen, arrays: Arrays, *, tokens: int, hidden: int, depth: int, heads: int,
             mlp: int) -> None:
    d = hidden // heads
    arrays["Transformer/posembed_input/pos_embedding"] = g.bias(1, tokens, hidden, scale=0.5)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        arrays[f"{b}/LayerNorm_0/scale"] = g.norm_scale(hidden)
        arrays[f"{b}/LayerNorm_0/bias"] = g.bias(hidden)
        for name in ("query", "key", "value"):
            arrays[f"{b}/MultiHeadDotProductAttention_1/{name}/kernel"] = g.kernel(
                hidden, heads, d, fan_in=hidden)
            arrays[f"{b}/MultiHeadDotProductAttention_1/{name}/bias"] = g.bias(heads, d)
        arrays[f"{b}/MultiHeadDotProductAttention_1/out/kernel"] = g.kernel(
            heads, d, hidden, fan_in=hidden)
        arrays[f"{b}/MultiHeadDotProductAttention_1/out/bias"] = g.bias(hidden)
        arrays[f"{b}/LayerNorm_2/scale"] = g.norm_scale(hidden)
        arrays[f"{b}/LayerNorm_2/bias"] = g.bias(hidden)
        arrays[f"{b}/MlpBlock_3/Dense_0/kernel"] = g.kernel(hidden, mlp)
        arrays[f"{b}/MlpBlock_3/Dense_0/bias"] = g.bias(mlp)
        arrays[f"{b}/MlpBlock_3/Dense_1/kernel"] = g.kernel(mlp, hidden)
        arrays[f"{b}/MlpBlock_3/Dense_1/bias"] = g.bias(hidden)
    arrays["Transformer/encoder_norm/scale"] = g.norm_scale(hidden)
    arrays["Transformer/encoder_norm/bias"] = g.bias(hidden)


def _head(g: _Gen, arrays: Arrays, *, hidden: int, num_classes: int,
          representation_size: int | None) -> None:
    width = hidden
    if representation_size:
        arrays["pre_logits/kernel"] = g.kernel(hidden, representation_size)
        arrays["pre_logits/bias"] = g.bias(representation_size)
        width = representation_size
    if num_classes:
        arrays["head/kernel"] = g.kernel(width, num_classes)
        arrays["head/bias"] = g.bias(num_classes)


def tiny_vit_arrays(
    *,
    num_classes: int = 10,
    image_size: int = 32,
    patch: int = 8,
    hidden: int = 32,
    depth: int = 2,
    heads: int = 2,
    mlp: int = 64,
    seed: int = 0,
    representation_size: int | None = None,
    classifier: str = "token",
) -> Arrays:
    """Arrays of a plain ViT checkpoint (``classifier`` 'token' adds ``cls``; 'gap' doesn't)."""
    if image_size % patch:
        raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
    g = _Gen(seed)
    arrays: Arrays = {
        "embedding/kernel": g.kernel(patch, patch, 3, hidden),
        "embedding/bias": g.bias(hidden),
    }
    has_cls = classifier == "token"
    if has_cls:
        arrays["cls"] = g.bias(1, 1, hidden, scale=0.5)
    tokens = (image_size // patch) ** 2 + int(has_cls)
    _encoder(g, arrays, tokens=tokens, hidden=hidden, depth=depth, heads=heads, mlp=mlp)
    _head(g, arrays, hidden=hidden, num_classes=num_classes,
          representation_size=representation_size)
    return arrays


def write_tiny_vit(path: str | Path, **kwargs: object) -> Path:
    """Write :func:`tiny_vit_arrays` (same keyword arguments) to ``path``; returns the path."""
    return _write(path, tiny_vit_arrays(**kwargs))  # type: ignore[arg-type]


def _gn(g: _Gen, arrays: Arrays, name: str, channels: int) -> None:
    arrays[f"{name}/scale"] = g.norm_scale(1, 1, 1, channels)
    arrays[f"{name}/bias"] = g.bias(1, 1, 1, channels)


def tiny_hybrid_arrays(
    *,
    blocks: tuple[int, ...] = (),
    width: int = 32,
    num_classes: int = 10,
    image_size: int = 64,
    patch: int | None = None,
    hidden: int = 32,
    depth: int = 2,
    heads: int = 2,
    mlp: int = 64,
    seed: int = 0,
) -> Arrays:
    """Arrays of an R+ViT hybrid: ``blocks=()`` is the stem-only R+Ti layout.

    ``width`` is the root width (64 in the release; must be a multiple of 32 for the
    32-group GroupNorm). ``patch`` defaults to 2 for stem-only (R+Ti uses 8) and 1 with
    stages (as R26/R50 do).
    """
    patch = patch if patch is not None else (2 if not blocks else 1)
    stride = 4 * 2 ** max(len(blocks) - 1, 0) * patch
    if image_size % stride:
        raise ValueError(f"image_size {image_size} must be a multiple of the stride {stride}")
    g = _Gen(seed)
    arrays: Arrays = {"conv_root/kernel": g.kernel(7, 7, 3, width)}
    _gn(g, arrays, "gn_root", width)
    c_in = width
    for s, units in enumerate(blocks, start=1):
        f = width * 2 ** (s - 1)
        for u in range(1, units + 1):
            p = f"block{s}/unit{u}"
            cin = c_in if u == 1 else 4 * f
            arrays[f"{p}/conv1/kernel"] = g.kernel(1, 1, cin, f)
            _gn(g, arrays, f"{p}/gn1", f)
            arrays[f"{p}/conv2/kernel"] = g.kernel(3, 3, f, f)
            _gn(g, arrays, f"{p}/gn2", f)
            arrays[f"{p}/conv3/kernel"] = g.kernel(1, 1, f, 4 * f)
            _gn(g, arrays, f"{p}/gn3", 4 * f)
            if u == 1:
                arrays[f"{p}/conv_proj/kernel"] = g.kernel(1, 1, cin, 4 * f)
                _gn(g, arrays, f"{p}/gn_proj", 4 * f)
        c_in = 4 * f
    arrays["embedding/kernel"] = g.kernel(patch, patch, c_in, hidden)
    arrays["embedding/bias"] = g.bias(hidden)
    arrays["cls"] = g.bias(1, 1, hidden, scale=0.5)
    tokens = (image_size // stride) ** 2 + 1
    _encoder(g, arrays, tokens=tokens, hidden=hidden, depth=depth, heads=heads, mlp=mlp)
    _head(g, arrays, hidden=hidden, num_classes=num_classes, representation_size=None)
    return arrays


def write_tiny_hybrid(path: str | Path, **kwargs: object) -> Path:
    """Write :func:`tiny_hybrid_arrays` (same keyword arguments) to ``path``."""
    return _write(path, tiny_hybrid_arrays(**kwargs))  # type: ignore[arg-type]


def tiny_mixer_arrays(
    *,
    num_classes: int = 10,
    image_size: int = 32,
    patch: int = 8,
    hidden: int = 32,
    depth: int = 2,
    tokens_mlp: int = 16,
    channels_mlp: int = 64,
    seed: int = 0,
) -> Arrays:
    """Arrays of an MLP-Mixer checkpoint (``stem``, ``MixerBlock_{i}``, ``pre_head_layer_norm``)."""
    g = _Gen(seed)
    s = (image_size // patch) ** 2
    arrays: Arrays = {"stem/kernel": g.kernel(patch, patch, 3, hidden), "stem/bias": g.bias(hidden)}
    for i in range(depth):
        b = f"MixerBlock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            arrays[f"{b}/{ln}/scale"] = g.norm_scale(hidden)
            arrays[f"{b}/{ln}/bias"] = g.bias(hidden)
        arrays[f"{b}/token_mixing/Dense_0/kernel"] = g.kernel(s, tokens_mlp)
        arrays[f"{b}/token_mixing/Dense_0/bias"] = g.bias(tokens_mlp)
        arrays[f"{b}/token_mixing/Dense_1/kernel"] = g.kernel(tokens_mlp, s)
        arrays[f"{b}/token_mixing/Dense_1/bias"] = g.bias(s)
        arrays[f"{b}/channel_mixing/Dense_0/kernel"] = g.kernel(hidden, channels_mlp)
        arrays[f"{b}/channel_mixing/Dense_0/bias"] = g.bias(channels_mlp)
        arrays[f"{b}/channel_mixing/Dense_1/kernel"] = g.kernel(channels_mlp, hidden)
        arrays[f"{b}/channel_mixing/Dense_1/bias"] = g.bias(hidden)
    arrays["pre_head_layer_norm/scale"] = g.norm_scale(hidden)
    arrays["pre_head_layer_norm/bias"] = g.bias(hidden)
    _head(g, arrays, hidden=hidden, num_classes=num_classes, representation_size=None)
    return arrays


def write_tiny_mixer(path: str | Path, **kwargs: object) -> Path:
    """Write :func:`tiny_mixer_arrays` (same keyword arguments) to ``path``."""
    return _write(path, tiny_mixer_arrays(**kwargs))  # type: ignore[arg-type]
