"""Classify images with a checkpoint: reference preprocessing, labels, top-k.

Preprocessing is the reference evaluation recipe (vit_jax / timm ``crop_pct=1``): RGB,
bilinear resize to ``res x res``, pixels scaled to [-1, 1] (``(x - 127.5) / 127.5``).

Labels, in order of preference: the fine-tune's own ``class_names`` (from a
``class_names.json`` or ``run.json`` next to the ``.npz``), ImageNet-1k or -21k names for 1000-
and 21843-class heads (WordNet lemmas with the id, ``Egyptian cat (n02124075)``,
from :mod:`vitzoo.labels`), otherwise class indices.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.errors import VitzooError

#: Files next to a checkpoint that may hold ``{"class_names": [...]}``, first wins.
CLASS_NAME_FILES = ("class_names.json", "run.json")


@dataclass(frozen=True)
class Labels:
    """Class names (or ``None`` for plain indices) and where they came from."""

    names: list[str] | None
    source: str

    def __call__(self, index: int) -> str:
        return self.names[index] if self.names is not None else str(index)


@dataclass
class Prediction:
    image: str
    top_k: list[dict[str, Any]]
    logits: list[float] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "top_k": self.top_k}
        if self.logits is not None:
            out["logits"] = self.logits
        return out


# --- images ------------------------------------------------------------------------------


def preprocess(image: str | os.PathLike[str] | Any, resolution: int) -> np.ndarray:
    """One image as ``[res, res, 3]`` float32 in [-1, 1] (path or PIL image)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise VitzooError(f"image {path} does not exist", "check the path")
        try:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise VitzooError(f"{path} is not a readable image ({exc})",
                              "pass JPEG/PNG (or other PIL-readable) files") from None
    else:
        img = image.convert("RGB")
    img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
    return (np.asarray(img, dtype=np.float32) - 127.5) / 127.5


# --- labels ------------------------------------------------------------------------------


def imagenet2012_labels() -> list[str] | None:
    """The TFDS ``imagenet2012`` label names (WordNet ids), in head order.

    Identical to ``tfds.builder('imagenet2012').info.features['label'].names``; shipped
    as data in :mod:`vitzoo.labels`, so neither TF nor tensorflow-datasets is needed.
    """
    from vitzoo.labels import imagenet_synsets

    synsets = imagenet_synsets(1000)
    return None if synsets is None else list(synsets)


def _names_from_file(path: Path, num_classes: int) -> list[str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VitzooError(f"cannot read class names from {path} ({exc})",
                          "fix or remove the file") from None
    names = data.get("class_names") if isinstance(data, dict) else None
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != num_classes:
        count = len(names) if isinstance(names, list) else "no list of"
        raise VitzooError(
            f"{path} has {count} class names but the checkpoint has {num_classes} classes",
            "the file belongs to another checkpoint; fix or remove it")
    return [str(n) for n in names]


def find_labels(checkpoint: Path | None, num_classes: int) -> Labels:
    """The best available class names for a checkpoint with ``num_classes`` outputs."""
    if checkpoint is not None:
        for filename in CLASS_NAME_FILES:
            path = checkpoint.parent / filename
            if path.is_file() and (names := _names_from_file(path, num_classes)) is not None:
                return Labels(names, f"class_names from {path}")
    from vitzoo.labels import DATASET_NAMES, imagenet_labels

    if (names := imagenet_labels(num_classes)) is not None:
        return Labels(names, f"{DATASET_NAMES[num_classes]} WordNet lemmas and ids (vitzoo.labels)")
    return Labels(None, "class indices (no class_names.json/run.json next to the checkpoint)")


# --- prediction --------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted.astype(np.float64))
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """A loaded checkpoint ready to classify images (model compiled once)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        *,
        resolution: int | None = None,
        arch: str | None = None,
    ) -> None:
        from vitzoo.models import infer_config
        from vitzoo.weights.release import load_for_finetune, load_npz

        self.path = Path(checkpoint)
        flat = load_npz(self.path)
        _, info = infer_config(flat, arch)
        self.num_classes = int(info["num_classes"])
        if self.num_classes == 0:
            raise VitzooError(f"{self.path} has no classification head",
                              "fine-tune it first: vitzoo finetune ... ")
        self.resolution = int(resolution or info["resolution"])
        self.config, self.params = load_for_finetune(
            flat, arch=arch, num_classes=self.num_classes, resolution=self.resolution,
            keep_representation=True)
        self.labels = find_labels(self.path, self.num_classes)
        self._apply = None
        self._device_params = None

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Float32 logits ``[B, K]`` for preprocessed images ``[B, res, res, 3]``."""
        if self._apply is None:
            from vitzoo import runtime

            runtime.configure(xla_flags=False)  # the compile cache; one device needs no flags
            runtime.require_accelerator()  # a GPU/TPU JAX cannot use stops here (--allow-cpu)
            import jax

            from vitzoo.models import build_model

            model = build_model(self.config, self.num_classes)
            self._apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
            # On the device once: host arrays would be copied in again on every call.
            self._device_params = jax.device_put(self.params)
        return np.asarray(self._apply(self._device_params, images))

    def predict(
        self, images: Sequence[str | os.PathLike[str]], *, top_k: int = 5,
        with_logits: bool = False, batch_size: int = 32,
    ) -> list[Prediction]:
        if top_k < 1:
            raise VitzooError(f"--top-k must be at least 1, got {top_k}", "e.g. --top-k 5")
        k = min(top_k, self.num_classes)
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            batch = np.stack([preprocess(p, self.resolution) for p in chunk])
            logits = self.logits(batch)
            probs = softmax(logits)
            for path, row_logits, row in zip(chunk, logits, probs, strict=True):
                order = np.argsort(-row, kind="stable")[:k]
                top = [{"index": int(i), "label": self.labels(int(i)),
                        "probability": float(row[i])} for i in order]
                out.append(Prediction(str(path), top,
                                      [float(v) for v in row_logits] if with_logits else None))
        return out


def predict(
    checkpoint: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    top_k: int = 5,
    resolution: int | None = None,
    with_logits: bool = False,
) -> list[Prediction]:
    """Classify ``images`` with a local ``.npz`` checkpoint; one :class:`Prediction` each.

    A catalog name or URL goes through :func:`vitzoo.download.resolve.resolve_checkpoint`
    first (``vitzoo predict`` does that).
    """
    return Predictor(checkpoint, resolution=resolution).predict(
        images, top_k=top_k, with_logits=with_logits)
