"""Preprocessing described as data, shared by every data source.

A :class:`Preprocess` is a small frozen record (resize, random crop, flip, value
range). The training loop never builds image ops itself: it asks for the recipe of
the paper's protocol (:func:`train_recipe` / :func:`eval_recipe`), stores it in
``run.json`` as a plain dict, and :func:`apply` turns it into TensorFlow ops. That way
the recipe a run used is inspectable and reproducible, and the same code serves TFDS
datasets and image folders.

All randomness is *stateless*: :func:`apply` takes an explicit ``seed`` pair, which
the pipeline derives from (run seed, global example position). The augmentation of
an example therefore never depends on how many batches were produced before it, which
is what makes a resumed run bit-identical to an uninterrupted one.

**One pixel path.** Every command makes its pixels here, so one file gives the same array in
``predict``, ``predict --attention``, ``evaluate``, the probe's extraction and fine-tuning's
evaluation: :func:`prepare_bytes` (formats TensorFlow cannot decode become an RGB PNG, through
Pillow), :func:`decode` (TensorFlow's decoders, ``channels=3``) and :func:`apply` (resize,
crop, flip, scale). The dataset pipelines run these inside ``tf.data``; :func:`eval_pixels`
runs the same functions eagerly for one file.

**Resize rule**: bilinear with half-pixel centres and *no antialiasing*
(``tf.image.resize(..., method="bilinear", antialias=False)``), to ``res x res`` without a
crop at evaluation. That is the reference evaluation of these checkpoints: vit_jax's input
pipeline (``vit_jax/input_pipeline.py``) evaluates with ``tf.image.resize(im, [crop, crop])``,
whose defaults are exactly these, then ``(im - 127.5) / 127.5``; the published accuracies were
measured that way. PIL's or torchvision's bilinear smooths when shrinking (antialiasing), which
gives other pixels for any image larger than the input, so it is not used anywhere here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: The reference protocol resizes to 448 and crops 384: crop = resize * 384/448.
RESIZE_RATIO = 448 / 384


@dataclass(frozen=True)
class Preprocess:
    """One recipe: resize to ``resize``x``resize``, optional random ``crop``, optional flip.

    ``value_range`` maps uint8 [0, 255] linearly onto it; (-1, 1) is what every zoo
    checkpoint was trained with. ``method`` and ``antialias`` name the resize (the module's
    one rule); they are recorded so a run.json says exactly how its pixels were made.
    """

    resize: int
    crop: int | None = None
    flip: bool = False
    value_range: tuple[float, float] = (-1.0, 1.0)
    method: str = "bilinear"
    antialias: bool = False

    def __post_init__(self) -> None:
        if (self.method, self.antialias) != ("bilinear", False):
            raise ValueError("vitzoo resizes one way: bilinear without antialiasing")

    @property
    def size(self) -> int:
        """Side of the output images."""
        return self.crop or self.resize

    @property
    def mean_std(self) -> tuple[float, float]:
        """``value_range`` in the libraries' terms: ``(x / 255 - mean) / std`` (0.5, 0.5 for (-1, 1))."""
        lo, hi = self.value_range
        return -lo / (hi - lo), 1.0 / (hi - lo)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(resize=int(data["resize"]), crop=data.get("crop"), flip=bool(data.get("flip")),
                   value_range=tuple(data.get("value_range", (-1.0, 1.0))),  # type: ignore[arg-type]
                   method=str(data.get("method", "bilinear")),
                   antialias=bool(data.get("antialias", False)))


def train_recipe(resolution: int) -> Preprocess:
    """The paper's fine-tuning augmentation: resize to res*448/384, random crop res, flip."""
    return Preprocess(resize=round(resolution * RESIZE_RATIO), crop=resolution, flip=True)


def eval_recipe(resolution: int) -> Preprocess:
    """Evaluation: a plain resize to the resolution, no crop (vit_jax's evaluation, see above)."""
    return Preprocess(resize=resolution)


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

    if recipe.crop is not None or recipe.flip:
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

    image = tf.image.resize(image, [recipe.resize, recipe.resize], method=recipe.method,
                            antialias=recipe.antialias)
    if recipe.crop is not None or recipe.flip:
        if seed is None:
            raise ValueError("a random recipe needs a seed")
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    if recipe.crop is not None and recipe.crop != recipe.resize:
        image = tf.image.stateless_random_crop(image, [recipe.crop, recipe.crop, 3],
                                               seed=seeds[0])
    if recipe.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    lo, hi = recipe.value_range
    return image * ((hi - lo) / 255.0) + lo
