"""Classify images with a checkpoint: its own preprocessing, labels, top-k.

Pixels come from the one evaluation path of :mod:`vitzoo.data.preprocess` with the checkpoint's
rule (:func:`vitzoo.weights.facts.preprocessing_of`: bilinear resize to ``res x res`` without
antialiasing and pixels in [-1, 1] for release checkpoints, as vit_jax evaluates; timm's
``pretrained_cfg`` for checkpoints in its layout), so a file gets exactly the array ``evaluate``
and the probe give it.

Class names come from :func:`vitzoo.weights.facts.find_labels` (one precedence for predict,
evaluate and export): ``class_names.json``, then ``run.json`` next to the ``.npz``, then
ImageNet-1k or -21k names for 1000- and 21843-class heads (``Egyptian cat (n02124075)``),
otherwise class indices.

A multi-label head (:func:`vitzoo.weights.task.head_task`) scores classes independently: its
probabilities are sigmoids, and each prediction also lists every class at or above the
threshold the fine-tune chose on validation (``labels``), however many that is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitzoo.data.preprocess import Preprocess
from vitzoo.errors import VitzooError
from vitzoo.weights.facts import CLASS_NAME_FILES, Labels, facts_for, find_labels
from vitzoo.weights.task import head_task

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.backbone.forward_tune import Tuning

__all__ = ["CLASS_NAME_FILES", "Labels", "Prediction", "Predictor", "find_labels", "predict",
           "preprocess"]


@dataclass
class Prediction:
    image: str
    top_k: list[dict[str, Any]]
    logits: list[float] | None = field(default=None)
    #: multi-label heads: every class at or above ``threshold``, most probable first
    labels: list[dict[str, Any]] | None = field(default=None)
    threshold: float | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "top_k": self.top_k}
        if self.labels is not None:
            out.update(labels=self.labels, threshold=self.threshold)
        if self.logits is not None:
            out["logits"] = self.logits
        return out


# --- images ------------------------------------------------------------------------------


def _encoded(image: str | os.PathLike[str] | Any) -> tuple[bytes, str]:
    """The encoded bytes of a path (as read) or of a PIL image (lossless PNG), and a name."""
    if not isinstance(image, (str, os.PathLike)):
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "image"
    path = Path(image)
    if not path.is_file():
        raise VitzooError(f"image {path} does not exist", "check the path")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise VitzooError(f"cannot read {path} ({exc.strerror or exc})", "check the path") from None


def preprocess(image: str | os.PathLike[str] | Any, resolution: int | Preprocess) -> np.ndarray:
    """One image (path or PIL image) as float32 ``[size, size, 3]`` evaluation pixels.

    ``resolution``: an evaluation recipe (:func:`vitzoo.data.preprocess.eval_recipe` of a
    checkpoint's rule), or a size for the vit_jax rule (``[res, res, 3]`` in [-1, 1]). The
    evaluation pipeline's own functions (:func:`vitzoo.data.preprocess.eval_pixels`), so the
    same file gives the same pixels here as in ``evaluate``, the probe and fine-tuning.
    """
    from PIL import UnidentifiedImageError

    from vitzoo.data.preprocess import eval_pixels, eval_recipe

    data, name = _encoded(image)
    recipe = resolution if isinstance(resolution, Preprocess) else eval_recipe(resolution)
    try:
        return eval_pixels(data, recipe)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VitzooError(f"{name} is not a readable image ({exc})",
                          "pass JPEG/PNG (or other PIL-readable) files") from None
    except Exception as exc:  # TensorFlow's decoders raise InvalidArgumentError and kin
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VitzooError(f"{name} is not a readable image ({first})",
                          "pass JPEG/PNG (or other PIL-readable) files") from None


# --- labels ------------------------------------------------------------------------------


def imagenet2012_labels() -> list[str] | None:
    """The TFDS ``imagenet2012`` label names (WordNet ids), in head order.

    Identical to ``tfds.builder('imagenet2012').info.features['label'].names``; shipped
    as data in :mod:`vitzoo.labels`, so neither TF nor tensorflow-datasets is needed.
    """
    from vitzoo.labels import imagenet_synsets

    synsets = imagenet_synsets(1000)
    return None if synsets is None else list(synsets)


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
        from vitzoo.backbone import load

        self.backbone = load(Path(checkpoint), resolution=resolution, arch=arch)
        self.path = self.backbone.path
        self.num_classes = self.backbone.num_classes
        if self.num_classes == 0:
            raise VitzooError(f"{self.path} has no classification head",
                              "fine-tune it first: vitzoo finetune ... ")
        self.resolution = self.backbone.resolution
        self.config, self.params = self.backbone.config, self.backbone.params
        self.facts = facts_for(self.path, num_classes=self.num_classes, resolution=self.resolution)
        self.labels = self.facts.labels
        self.recipe = self.backbone.eval_recipe()  # the checkpoint's own preprocessing
        self.task = head_task(self.path)
        self._apply: Any = None
        self._device_params: Any = None
        self.tuning: Tuning | None = None  # the matrix-product backend, decided at the first call

    def pixels(self, image: str | os.PathLike[str] | Any) -> np.ndarray:
        """One image as this checkpoint's evaluation pixels (:func:`preprocess` with its recipe)."""
        return preprocess(image, self.recipe)

    def logits(self, images: np.ndarray, *, batches: int | None = None) -> np.ndarray:
        """Float32 logits ``[B, K]`` for preprocessed images ``[B, res, res, 3]``.

        ``batches``: how many such calls the job makes, known at the first call (None:
        enough). It decides whether the matrix-product backend is worth a trial
        (:mod:`vitzoo.backbone.forward_tune`): a predict of a few images uses a remembered
        answer or the rule's default instead, since a trial would cost more than it saves.
        """
        if self._apply is None:
            self._prepare(images.shape, batches)
        assert self.tuning is not None
        with self.tuning.applied("float32"):  # a (re)trace, e.g. the last smaller batch
            return np.asarray(self._apply(self._device_params, images))

    def _prepare(self, shape: tuple[int, ...], batches: int | None) -> None:
        """Decide the backend (or race for it on the job's first batches) at the first call."""
        from vitzoo.backbone import forward_tune, start

        start(xla_flags=False)  # the compile cache; one device needs no flags
        import jax

        model = self.backbone.module()

        def make_step() -> Any:
            return jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))

        # On the device once: host arrays would be copied in again on every call.
        self._device_params = jax.device_put(self.params)
        job = forward_tune.Job("logits", self.config, self.resolution, int(shape[0]), 1,
                               "float32")
        self.tuning, race = forward_tune.decide(job, make_step, batches=batches)
        self._apply = race or make_step()  # a race computes the first batches itself

    def matmul_record(self) -> dict[str, Any] | None:
        """The backend the model's products use, why, and the autotune (None: nothing run yet)."""
        return None if self.tuning is None else self.tuning.record("float32")

    def _entry(self, row: np.ndarray, index: int) -> dict[str, Any]:
        return {"index": int(index), "label": self.labels(int(index)),
                "probability": float(row[index])}

    def predict(
        self, images: Sequence[str | os.PathLike[str]], *, top_k: int = 5,
        with_logits: bool = False, batch_size: int = 32,
    ) -> list[Prediction]:
        if top_k < 1:
            raise VitzooError(f"--top-k must be at least 1, got {top_k}", "e.g. --top-k 5")
        k = min(top_k, self.num_classes)
        out: list[Prediction] = []
        batches = -(-len(images) // batch_size)
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            batch = np.stack([self.pixels(p) for p in chunk])
            logits = self.logits(batch, batches=batches)
            probs = sigmoid(logits) if self.task.multilabel else softmax(logits)
            for path, row_logits, row in zip(chunk, logits, probs, strict=True):
                order = np.argsort(-row, kind="stable")
                top = [self._entry(row, i) for i in order[:k]]
                above = ([self._entry(row, i) for i in order if row[i] >= self.task.threshold]
                         if self.task.multilabel else None)
                out.append(Prediction(str(path), top,
                                      [float(v) for v in row_logits] if with_logits else None,
                                      above, self.task.threshold if above is not None else None))
        return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, np.float64)))


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
