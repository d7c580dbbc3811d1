"""Attention maps: what a ViT looked at, by attention rollout (Abnar & Zuidema, 2020).

One layer's attention says where each token reads from *in the previous layer*, not in
the image; rollout follows the reads down to the patches. As in the ViT-pytorch
reference (jeonsworld/ViT-pytorch, ``visualize_attention_map.ipynb``):

1. per layer, average the heads: ``A_l = mean_h W_l[h]``;
2. account for the residual connection: ``A_l + I``, rows renormalised to sum to 1;
3. multiply through the layers: ``R_1 = A_1``, ``R_l = A_l @ R_{l-1}``. Every ``R_l`` is
   row-stochastic (a product of row-stochastic matrices);
4. the class token's row of ``R_L`` over the patch tokens is the map (for ``gap`` heads,
   which average all tokens, the mean of the patch rows), reshaped to the patch grid,
   divided by its maximum, resized bilinearly to the image and multiplied into it:
   bright where the model looked, dark elsewhere.

The image is the one given, at its own size; the map covers the region the model saw. A
checkpoint whose evaluation crops (timm's ``crop_pct`` < 1: shorter side to ``res / crop_pct``,
centre crop ``res``) saw only the centre of the image, so its map is placed over that box
(:func:`seen_box`) and the cut-off border, which the model never saw, is dark. The vit_jax
rule resizes the whole image: the map covers all of it.

Hybrids (R+ViT) work the same way: their tokens are cells of the ResNet feature map,
which tile the image like patches. MLP-Mixer has no attention, hence no map.

The weights come from the model itself (``apply(..., outputs=True, attention=True)``
returns each layer's softmax as ``out["attention"]``, :mod:`vitzoo.models`), so the map is
of exactly the computation that produced the logits.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from vitzoo.data.preprocess import Preprocess
    from vitzoo.models import ModelConfig
    from vitzoo.predict import Predictor

#: Attention weights one forward batch may hold on the host (float32 bytes).
BATCH_BYTES = 1 << 30


def require_attention(config: ModelConfig) -> None:
    """Refuse architectures without attention (MLP-Mixer) before any work is done."""
    if config.family == "mixer":
        raise VitzooError(f"--attention needs a ViT or R+ViT hybrid checkpoint; {config.name} "
                          "is an MLP-Mixer, which has no attention to show",
                          "drop --attention, or pass a ViT checkpoint")


def forward_with_attention(config: ModelConfig, num_classes: int
                           ) -> Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A compiled ``(params, images) -> (logits [B, K], weights [B, layers, heads, T, T])``."""
    require_attention(config)
    import jax

    from vitzoo.models import build_model

    model = build_model(config, num_classes)

    def run(params: Any, images: Any) -> tuple[Any, Any]:
        logits, out = model.apply({"params": params}, images, train=False, outputs=True,
                                  attention=True)
        return logits, out["attention"]

    compiled = jax.jit(run)

    def forward(params: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, weights = compiled(params, images)
        return np.asarray(logits), np.asarray(weights)

    return forward


def rollout(weights: np.ndarray) -> np.ndarray:
    """Joint attention after each layer: ``[..., L, H, T, T] -> [..., L, T, T]`` (row-stochastic).

    ``result[..., -1, :, :]`` is the rollout of the whole encoder.
    """
    weights = np.asarray(weights, np.float64)
    attention = weights.mean(axis=-3) + np.eye(weights.shape[-1])
    attention /= attention.sum(axis=-1, keepdims=True)
    joint = np.empty_like(attention)
    joint[..., 0, :, :] = attention[..., 0, :, :]
    for layer in range(1, attention.shape[-3]):
        joint[..., layer, :, :] = attention[..., layer, :, :] @ joint[..., layer - 1, :, :]
    return joint


def patch_map(joint: np.ndarray, classifier: str = "token", prefix_tokens: int | None = None
              ) -> np.ndarray:
    """The ``[grid, grid]`` map, maximum 1, from the encoder's rollout ``[T, T]``.

    ``token`` models read the class token's row (without the class token column); ``gap``
    (and ``map``) models pool the patch tokens, so their map is the mean patch row. Only the
    patch columns are kept: ``prefix_tokens`` (class, distillation, register tokens; default
    1 for ``token``, else 0) come first.
    """
    prefix = (1 if classifier == "token" else 0) if prefix_tokens is None else prefix_tokens
    row = joint[0, prefix:] if classifier == "token" else joint[prefix:, prefix:].mean(axis=0)
    grid = math.isqrt(row.size)
    if grid * grid != row.size:
        raise ValueError(f"{row.size} patch tokens do not form a square grid")
    mask = row.reshape(grid, grid)
    return mask / mask.max()


Box = tuple[int, int, int, int]


def seen_box(width: int, height: int, recipe: Preprocess) -> Box:
    """``(left, top, right, bottom)``: the part of a ``width x height`` image the model saw.

    The evaluation ``recipe``'s centre crop traced back through its resize (the geometry of
    :func:`vitzoo.data.preprocess.apply`: ``keep_aspect`` sets the shorter side to ``resize``
    and the longer to ``floor(resize * long / short)``; the crop starts at
    ``round((side - crop) / 2)``), in the image's pixels, rounded to whole pixels. A recipe
    without a centre crop saw the whole image.
    """
    if recipe.crop is None or not recipe.center_crop:
        return 0, 0, width, height
    if recipe.keep_aspect:
        longer = recipe.resize * max(width, height) // min(width, height)
        new_w, new_h = (longer, recipe.resize) if width >= height else (recipe.resize, longer)
    else:
        new_w = new_h = recipe.resize
    left, top = round((new_w - recipe.crop) / 2), round((new_h - recipe.crop) / 2)
    x, y = width / new_w, height / new_h  # resized -> original pixels
    return (round(left * x), round(top * y), round((left + recipe.crop) * x),
            round((top + recipe.crop) * y))


def overlay(image: Image.Image, mask: np.ndarray, box: Box | None = None) -> Image.Image:
    """``image`` (any mode/size) times ``mask`` resized bilinearly to ``box`` (default: the
    whole image, the reference overlay); outside ``box`` the weight is 0 (dark)."""
    from PIL import Image

    rgb = image.convert("RGB")
    left, top, right, bottom = box or (0, 0, *rgb.size)
    resized = Image.fromarray(mask.astype(np.float32)).resize(
        (max(1, right - left), max(1, bottom - top)), Image.Resampling.BILINEAR)
    weight = np.zeros((rgb.size[1], rgb.size[0], 1), np.float32)
    weight[top:bottom, left:right, 0] = np.clip(np.asarray(resized), 0.0, 1.0)
    return Image.fromarray((weight * np.asarray(rgb, np.float32)).astype(np.uint8))


#: How errors name the folder of the maps.
ATTENTION_WHAT = "the attention maps folder (--attention)"


def output_names(images: Sequence[str | os.PathLike[str]]) -> list[str]:
    """One file name per image, never shared by two different files: ``<stem>.png``, or
    ``<stem>-<hash>.png`` when another input has the same stem (in any case).

    ``<hash>`` is the first 8 hex digits of the SHA-256 of the image's resolved path (all 64 in
    the unlikely event two paths share 8), so ``a/x.jpg b/x.jpg x-2.jpg`` give ``x-1f0c....png``,
    ``x-9a2e....png`` and ``x-2.png``, the same names in any order. The same file given twice
    gets one name (and one map).
    """
    resolved = [str(Path(image).resolve()) for image in images]
    stems = [Path(image).stem or "image" for image in images]
    digests = [hashlib.sha256(path.encode()).hexdigest() for path in resolved]
    width = [0] * len(images)  # hex digits of the hash in the name; 0: none
    while True:
        names = [f"{stem}-{digest[:w]}.png" if w else f"{stem}.png"
                 for stem, digest, w in zip(stems, digests, width, strict=True)]
        owners: dict[str, set[str]] = {}
        for name, path in zip(names, resolved, strict=True):
            owners.setdefault(name.casefold(), set()).add(path)
        clashes = [i for i, name in enumerate(names) if len(owners[name.casefold()]) > 1]
        if not clashes:
            return names
        for i in clashes:
            width[i] = 8 if width[i] == 0 else 64


def batch_size(config: ModelConfig, resolution: int) -> int:
    """Images per forward pass so that their attention weights stay under :data:`BATCH_BYTES`."""
    tokens = (resolution // config.stride) ** 2 + 1
    per_image = config.num_layers * max(config.num_heads, 1) * tokens * tokens * 4
    return max(1, min(32, BATCH_BYTES // per_image))


def write_attention_maps(predictor: Predictor, images: Sequence[str | os.PathLike[str]],
                         out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write one rollout overlay PNG per image into ``out_dir`` (atomically); return the paths.

    Each PNG has the size of its input image, the map over the part the model saw
    (:func:`seen_box`: all of it, or the centre crop of a timm checkpoint's rule). Raises
    :class:`VitzooError` for Mixer checkpoints and unreadable images before anything is written.
    """
    from PIL import Image

    from vitzoo.atomic import atomic_path, output_dir

    require_attention(predictor.config)
    out = output_dir(out_dir, ATTENTION_WHAT, create=False)
    targets = [out / name for name in output_names(images)]
    step = batch_size(predictor.config, predictor.resolution)
    forward = forward_with_attention(predictor.config, predictor.num_classes)
    for start in range(0, len(images), step):
        chunk = list(images[start:start + step])
        batch = np.stack([predictor.pixels(path) for path in chunk])
        _, weights = forward(predictor.params, batch)
        joint = rollout(weights)[:, -1]
        for path, rolled, target in zip(chunk, joint, targets[start:start + step], strict=True):
            with Image.open(path) as original:
                mask = patch_map(rolled, predictor.config.classifier,
                                 predictor.config.num_prefix_tokens)
                picture = overlay(original, mask, seen_box(*original.size, predictor.recipe))
            with atomic_path(target) as tmp:
                picture.save(tmp, format="PNG")
    return targets
