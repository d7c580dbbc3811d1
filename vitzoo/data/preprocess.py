"""Preprocessing described as data, shared by every data source.

Two records, one for each question:

* :class:`Preprocessing` is a fact about a *checkpoint*: how the pixels it was trained and
  evaluated with were made (mean/std, resize interpolation, ``crop_pct``/``crop_mode``, and
  which resampler), the fields of timm's ``pretrained_cfg``. Release checkpoints (AugReg and
  the older collections) have :data:`VIT_JAX`; a timm-layout checkpoint has the one its
  ``config.json`` states (:meth:`Preprocessing.from_timm`). Which file decides is
  :func:`vitzoo.weights.facts.preprocessing_of`'s business.
* :class:`Preprocess` is one *recipe* at one resolution (resize, crop, flip, normalisation),
  derived from the checkpoint's :class:`Preprocessing` by :func:`train_recipe` /
  :func:`eval_recipe`. Runs store it in ``run.json`` as a plain dict and :func:`apply` turns
  it into TensorFlow ops. That way the recipe a run used is inspectable and reproducible, and
  the same code serves TFDS datasets and image folders.

All randomness is *stateless*: :func:`apply` takes an explicit ``seed`` pair, which
the pipeline derives from (run seed, global example position). The augmentation of
an example therefore never depends on how many batches were produced before it, which
is what makes a resumed run bit-identical to an uninterrupted one.

**One pixel path.** Every command makes its pixels here, so one file gives the same array in
``predict``, ``predict --attention``, ``evaluate``, the probe's extraction and fine-tuning's
evaluation: :func:`prepare_bytes` (formats TensorFlow cannot decode become an RGB PNG, through
Pillow), :func:`decode` (TensorFlow's decoders, ``channels=3``) and :func:`apply` (resize,
crop, flip, normalise). The dataset pipelines run these inside ``tf.data``; :func:`eval_pixels`
runs the same functions eagerly for one file.

**The vit_jax rule** (:data:`VIT_JAX`, release checkpoints): bilinear with half-pixel centres
and *no antialiasing* (``tf.image.resize(..., method="bilinear", antialias=False)``), to
``res x res`` without a crop at evaluation, then ``(x - 127.5) / 127.5``. That is the reference
evaluation of these checkpoints: vit_jax's input pipeline (``vit_jax/input_pipeline.py``)
evaluates with ``tf.image.resize(im, [crop, crop])``, whose defaults are exactly these; the
published accuracies were measured that way.

**The timm rule** (checkpoints in timm's layout): timm's evaluation transform
(``timm.data.transforms_factory.transforms_imagenet_eval``) on a PIL image: ``scale =
floor(res / crop_pct)``; ``crop_mode="center"`` resizes the shorter side to ``scale`` (the
longer to ``int(scale * long / short)``, torchvision's rule) and ``"squash"`` both sides; then
a centre crop of ``res`` at ``round((h - res) / 2)`` (torchvision's ``center_crop``), then
``(x / 255 - mean) / std`` per channel. PIL resamples with antialiased kernels, width first then
height, rounding to uint8 after each pass; :func:`apply` does exactly that with
``tf.image.resize(antialias=True)`` (``antialias=True`` in a recipe means this PIL emulation).
Measured against Pillow on random and smooth images: bicubic equal or one grey level apart,
bilinear at most two (Pillow's fixed-point weights), see ``tests/data/test_preprocessing.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from vitzoo.errors import VitzooError

#: The reference protocol resizes to 448 and crops 384: crop = resize * 384/448.
RESIZE_RATIO = 448 / 384
#: Interpolations :func:`apply` implements (the ones timm's ViT configurations use).
INTERPOLATIONS = ("bilinear", "bicubic")
#: timm's crop modes that keep the whole recipe a resize and a centre crop.
CROP_MODES = ("center", "squash")
Triple = tuple[float, float, float]


def _triple(value: Any, name: str, where: str) -> Triple:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise VitzooError(f"{where}: {name} must be three numbers (R, G, B), got {value!r}",
                          f"fix {name} in the file")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint's input pixels are made, at any resolution (timm's ``pretrained_cfg``).

    ``antialias`` False is the vit_jax resize (TensorFlow, no smoothing when shrinking), True
    Pillow's (timm). ``origin`` says where the fact came from (shown with every result; not
    part of equality).
    """

    mean: Triple = (0.5, 0.5, 0.5)
    std: Triple = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "squash"
    antialias: bool = False
    origin: str = field(default="the vit_jax rule of release checkpoints", compare=False)

    def __post_init__(self) -> None:
        where = self.origin
        if self.interpolation not in INTERPOLATIONS:
            raise VitzooError(f"{where}: interpolation {self.interpolation!r} is not one vitzoo "
                              f"resizes with ({', '.join(INTERPOLATIONS)})",
                              "set interpolation to bicubic or bilinear")
        if self.crop_mode not in CROP_MODES:
            raise VitzooError(f"{where}: crop_mode {self.crop_mode!r} is not supported "
                              f"({', '.join(CROP_MODES)})", "set crop_mode to center or squash")
        if not 0.0 < self.crop_pct <= 1.0:
            raise VitzooError(f"{where}: crop_pct must be in (0, 1], got {self.crop_pct}",
                              "e.g. crop_pct 0.875 (resize to res / 0.875, crop res)")
        if min(self.std) <= 0:
            raise VitzooError(f"{where}: std must be positive, got {list(self.std)}",
                              "fix std in the file")

    @classmethod
    def from_timm(cls, config: Mapping[str, Any], where: str) -> Preprocessing:
        """The preprocessing a timm ``config.json`` states (its ``pretrained_cfg``).

        Fields it leaves out take the defaults of timm's ``PretrainedCfg``
        (``timm/models/_pretrained.py``: bicubic, crop_pct 0.875, centre crop, ImageNet mean/std),
        as timm itself would.
        """
        cfg = config.get("pretrained_cfg")
        if cfg is None:
            cfg, origin = {}, f"timm's defaults ({where} has no pretrained_cfg)"
        elif not isinstance(cfg, Mapping):
            raise VitzooError(f"{where}: pretrained_cfg is not an object", "fix or remove the file")
        else:
            origin = f"timm pretrained_cfg of {where}"
        try:
            crop_pct = float(cfg.get("crop_pct") or TIMM_DEFAULTS.crop_pct)
        except (TypeError, ValueError):
            raise VitzooError(f"{where}: crop_pct must be a number, got {cfg.get('crop_pct')!r}",
                              "e.g. crop_pct 0.875") from None
        return cls(mean=_triple(cfg.get("mean", TIMM_DEFAULTS.mean), "mean", where),
                   std=_triple(cfg.get("std", TIMM_DEFAULTS.std), "std", where),
                   interpolation=str(cfg.get("interpolation") or TIMM_DEFAULTS.interpolation),
                   crop_pct=crop_pct, crop_mode=str(cfg.get("crop_mode") or "center"),
                   antialias=True, origin=origin)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str | None = None) -> Preprocessing:
        """The inverse of :meth:`as_dict` (a record in ``run.json``)."""
        where = origin or str(data.get("origin") or "a recorded preprocessing")
        return cls(mean=_triple(data.get("mean"), "mean", where),
                   std=_triple(data.get("std"), "std", where),
                   interpolation=str(data.get("interpolation")),
                   crop_pct=float(data.get("crop_pct", 1.0)),
                   crop_mode=str(data.get("crop_mode")), antialias=bool(data.get("antialias")),
                   origin=where)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def timm_fields(self) -> dict[str, Any]:
        """The ``pretrained_cfg`` fields timm reads this rule from (the inverse of :meth:`from_timm`)."""
        return {"mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    def describe(self) -> str:
        """One line for people: what happens to an image, and where that was read."""
        if self == VIT_JAX:
            steps = "resize to the input size (bilinear, no antialiasing), pixels to [-1, 1]"
        else:
            side = "shorter side" if self.crop_mode == "center" else "both sides"
            resampler = "PIL-style antialiased" if self.antialias else "unsmoothed"
            steps = (f"{side} to res/{self.crop_pct:g}, centre crop ({self.interpolation}, "
                     f"{resampler}), mean {_short(self.mean)} std {_short(self.std)}")
        return f"{steps} ({self.origin})"


def _short(values: Triple) -> str:
    return "/".join(f"{v:.3g}" for v in values)


#: Release checkpoints: vit_jax's evaluation (module doc).
VIT_JAX = Preprocessing()
#: What a timm ``pretrained_cfg`` means where it says nothing (timm's ``PretrainedCfg`` defaults).
TIMM_DEFAULTS = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                              interpolation="bicubic", crop_pct=0.875, crop_mode="center",
                              antialias=True, origin="timm's PretrainedCfg defaults")


@dataclass(frozen=True)
class Preprocess:
    """One recipe: resize, then a crop (random or centred) and a flip, then normalise.

    ``resize`` is the side both edges get, or with ``keep_aspect`` the shorter edge's (the
    longer keeps the aspect ratio). ``crop`` is the side of the square crop taken from the
    middle (``center_crop``) or at a seeded random place; none when None. Pixels become
    ``(x / 255 - mean) / std`` per channel. ``method`` and ``antialias`` name the resize
    (module doc); they are recorded so a run.json says exactly how its pixels were made.
    """

    resize: int
    crop: int | None = None
    flip: bool = False
    mean: Triple = (0.5, 0.5, 0.5)
    std: Triple = (0.5, 0.5, 0.5)
    method: str = "bilinear"
    antialias: bool = False
    keep_aspect: bool = False
    center_crop: bool = False

    def __post_init__(self) -> None:
        if self.method not in INTERPOLATIONS:
            raise ValueError(f"vitzoo resizes with {' or '.join(INTERPOLATIONS)}, not {self.method}")

    @property
    def size(self) -> int:
        """Side of the output images."""
        return self.crop or self.resize

    @property
    def mean_std(self) -> tuple[float, float]:
        """``(mean, std)`` when every channel has the same ones (0.5, 0.5 for pixels in [-1, 1])."""
        if len(set(self.mean)) != 1 or len(set(self.std)) != 1:
            raise ValueError("this recipe normalises each channel differently: use mean and std")
        return self.mean[0], self.std[0]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """The inverse of :meth:`as_dict`; also reads records that stored a ``value_range``."""
        mean, std = data.get("mean"), data.get("std")
        if mean is None and "value_range" in data:  # before per-channel normalisation
            lo, hi = data["value_range"]
            mean, std = (-lo / (hi - lo),) * 3, (1.0 / (hi - lo),) * 3
        return cls(resize=int(data["resize"]), crop=data.get("crop"), flip=bool(data.get("flip")),
                   mean=tuple(mean or (0.5,) * 3), std=tuple(std or (0.5,) * 3),  # type: ignore[arg-type]
                   method=str(data.get("method", "bilinear")),
                   antialias=bool(data.get("antialias", False)),
                   keep_aspect=bool(data.get("keep_aspect", False)),
                   center_crop=bool(data.get("center_crop", False)))


def train_recipe(resolution: int, preprocessing: Preprocessing = VIT_JAX) -> Preprocess:
    """The paper's fine-tuning augmentation: resize to res*448/384, random crop res, flip.

    The geometry is the same for every checkpoint; the resampler and the normalisation are the
    checkpoint's own, so training pixels look like the ones it will be evaluated on.
    """
    p = preprocessing
    return Preprocess(resize=round(resolution * RESIZE_RATIO), crop=resolution, flip=True,
                      mean=p.mean, std=p.std, method=p.interpolation, antialias=p.antialias)


def eval_recipe(resolution: int, preprocessing: Preprocessing = VIT_JAX) -> Preprocess:
    """Evaluation at ``resolution`` by the checkpoint's rule (module doc).

    ``VIT_JAX`` gives a plain resize to the resolution, no crop (vit_jax's evaluation).
    """
    p = preprocessing
    scale = math.floor(resolution / p.crop_pct)  # timm's transforms_imagenet_eval
    squash = p.crop_mode == "squash"
    cropped = not squash or scale != resolution
    return Preprocess(resize=scale, crop=resolution if cropped else None, mean=p.mean, std=p.std,
                      method=p.interpolation, antialias=p.antialias, keep_aspect=not squash,
                      center_crop=cropped)


def run_record(preprocessing: Preprocessing, resolution: int, *,
               train: bool = True) -> dict[str, Any]:
    """``run.json``'s ``preprocessing``: the checkpoint's rule, and the recipes made from it.

    ``checkpoint`` is what :func:`vitzoo.weights.facts.preprocessing_of` reads back for the
    weights the run leaves, so they are fed as the checkpoint they came from was.
    """
    out = {"checkpoint": preprocessing.as_dict()}
    if train:
        out["train"] = train_recipe(resolution, preprocessing).as_dict()
    return {**out, "eval": eval_recipe(resolution, preprocessing).as_dict()}


#: (format, mode) pairs that ``tf.io.decode_image(channels=3)`` turns into correct RGB.
NATIVE = {
    "JPEG": frozenset({"L", "RGB"}),
    "PNG": frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"}),
    "GIF": frozenset({"L", "P", "RGB", "RGBA"}),
    "BMP": frozenset({"RGB", "RGBA"}),
}


def is_native(fmt: str | None, mode: str) -> bool:
    """Whether TensorFlow's decoders read this (Pillow format, mode) correctly as it is."""
    return fmt in NATIVE and mode in NATIVE[fmt]


def to_rgb_png(data: bytes) -> bytes:
    """Any Pillow-readable image (first frame) as an RGB PNG, for formats TF cannot decode.

    Alpha and palette images go through RGBA, so a palette's transparency is dropped the way
    Pillow drops it; the colour channels are kept as they are (no compositing on a background),
    which is what ``decode(channels=3)`` does for the native RGBA formats too.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        rgb = image.convert("RGBA").convert("RGB") if "A" in image.mode or image.mode == "P" \
            else image.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def prepare_bytes(data: bytes) -> tuple[bytes, bool]:
    """Encoded bytes as :func:`decode` should get them, and whether they were converted.

    Raises Pillow's errors (``OSError`` and others) for bytes that are not an image.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        fmt, mode = image.format, image.mode
    if is_native(fmt, mode):
        return data, False
    return to_rgb_png(data), True


def eval_pixels(data: bytes, recipe: Preprocess) -> Any:
    """One encoded image through the evaluation path: float32 ``[size, size, 3]`` (NumPy).

    The functions the ``tf.data`` pipelines map over every example, run eagerly on the CPU,
    so ``predict`` gives the pixels ``evaluate`` and the probe give for the same file.
    """
    import numpy as np

    from vitzoo.data.tfdata import tf_cpu

    if recipe.flip or (recipe.crop is not None and not recipe.center_crop):
        raise ValueError("eval_pixels takes an evaluation recipe (no random crop or flip)")
    tf = tf_cpu()
    prepared, _ = prepare_bytes(data)
    return np.asarray(apply(recipe, decode(tf.constant(prepared))), dtype=np.float32)


def decode(data: Any) -> Any:
    """Encoded bytes (JPEG/PNG/BMP/GIF) -> uint8 ``[H, W, 3]``; GIF gives its first frame.

    ``channels=3`` turns grayscale, palette and RGBA into RGB inside the native decoders.
    Formats TensorFlow cannot read (WebP, CMYK JPEG, ...) are converted to PNG by
    :func:`prepare_bytes` before they reach this function.
    """
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def apply(recipe: Preprocess, image: Any, seed: Any = None) -> Any:
    """Run ``recipe`` on one uint8 image tensor; ``seed`` is an int32/int64 ``[2]`` tensor.

    Random steps (crop, flip) need ``seed``; each derives its own sub-seed from it so the
    two decisions are independent.
    """
    import tensorflow as tf

    image = _resize(recipe, image)
    if recipe.crop is not None and recipe.center_crop:
        image = _center_crop(image, recipe.crop)
    elif recipe.crop is not None or recipe.flip:
        if seed is None:
            raise ValueError("a random recipe needs a seed")
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        if recipe.crop is not None and recipe.crop != recipe.resize:
            image = tf.image.stateless_random_crop(image, [recipe.crop, recipe.crop, 3],
                                                   seed=seeds[0])
        if recipe.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return _normalise(recipe, image)


def _normalise(recipe: Preprocess, image: Any) -> Any:
    """``(x / 255 - mean) / std`` as ``x * scale + offset``.

    For mean = std = 0.5 that is ``x * (2 / 255) - 1``, the very float32 operations of the
    recipes that stored a value range, so release checkpoints keep their bits.
    """
    import tensorflow as tf

    scale = [1.0 / (255.0 * s) for s in recipe.std]
    offset = [-m / s for m, s in zip(recipe.mean, recipe.std, strict=True)]
    if len(set(scale)) == 1 and len(set(offset)) == 1:
        return image * scale[0] + offset[0]
    return image * tf.constant(scale, tf.float32) + tf.constant(offset, tf.float32)


def _resize(recipe: Preprocess, image: Any) -> Any:
    """The resize step: to ``resize`` on both sides, or on the shorter one (``keep_aspect``)."""
    import tensorflow as tf

    if not recipe.keep_aspect and not recipe.antialias:  # the vit_jax rule, as it always was
        return tf.image.resize(image, [recipe.resize, recipe.resize], method=recipe.method,
                               antialias=False)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if recipe.keep_aspect:  # torchvision: long = int(size * long / short)
        short, long = tf.minimum(height, width), tf.maximum(height, width)
        scaled = tf.cast(tf.math.floor(tf.cast(recipe.resize * long, tf.float64)
                                       / tf.cast(short, tf.float64)), tf.int32)
        wide = width >= height
        new_h = tf.where(wide, recipe.resize, scaled)
        new_w = tf.where(wide, scaled, recipe.resize)
    else:
        new_h = new_w = tf.constant(recipe.resize, tf.int32)
    if not recipe.antialias:
        return tf.image.resize(image, tf.stack([new_h, new_w]), method=recipe.method)
    return _pil_resize(image, new_h, new_w, recipe.method)


def _pil_resize(image: Any, new_h: Any, new_w: Any, method: str) -> Any:
    """Pillow's ``Image.resize``: antialiased, width then height, uint8 after each pass.

    A pass whose size does not change is skipped, as Pillow skips it.
    """
    import tensorflow as tf

    def one_pass(x: Any, size: Any) -> Any:
        resized = tf.image.resize(x, size, method=method, antialias=True)
        return tf.clip_by_value(tf.round(resized), 0.0, 255.0)

    x = tf.cast(image, tf.float32)
    height, width = tf.shape(x)[0], tf.shape(x)[1]
    x = tf.cond(tf.equal(width, new_w), lambda: x,
                lambda: one_pass(x, tf.stack([height, new_w])))
    return tf.cond(tf.equal(height, new_h), lambda: x,
                   lambda: one_pass(x, tf.stack([new_h, new_w])))


def _center_crop(image: Any, size: int) -> Any:
    """torchvision's ``center_crop``: the ``size`` square at ``round((h - size) / 2)``.

    ``tf.round`` rounds half to even, as Python's ``round`` does.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float32) / 2.0), tf.int32)
    out = image[top:top + size, left:left + size]
    out.set_shape([size, size, 3])
    return tf.cast(out, tf.float32)
