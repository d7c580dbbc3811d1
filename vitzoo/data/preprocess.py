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
    checkpoint was trained with.
    """

    resize: int
    crop: int | None = None
    flip: bool = False
    value_range: tuple[float, float] = (-1.0, 1.0)

    @property
    def size(self) -> int:
        """Side of the output images."""
        return self.crop or self.resize

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(resize=int(data["resize"]), crop=data.get("crop"), flip=bool(data.get("flip")),
                   value_range=tuple(data.get("value_range", (-1.0, 1.0))))  # type: ignore[arg-type]


def train_recipe(resolution: int) -> Preprocess:
    """The paper's fine-tuning augmentation: resize to res*448/384, random crop res, flip."""
    return Preprocess(resize=round(resolution * RESIZE_RATIO), crop=resolution, flip=True)


def eval_recipe(resolution: int) -> Preprocess:
    """Evaluation: a plain resize to the resolution (as the reference trainer does)."""
    return Preprocess(resize=resolution)


def decode(data: Any) -> Any:
    """Encoded bytes (JPEG/PNG/BMP/GIF) -> uint8 ``[H, W, 3]``; GIF gives its first frame.

    ``channels=3`` turns grayscale, palette and RGBA into RGB inside the native decoders.
    Formats TensorFlow cannot read (WebP, CMYK JPEG, ...) are converted to PNG by the
    folder scanner before they reach this function.
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

    image = tf.image.resize(image, [recipe.resize, recipe.resize], method="bilinear",
                            antialias=False)
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
