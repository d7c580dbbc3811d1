"""Splits held in memory (:class:`Examples`) and their tf.data pipelines, a pure function of (seed, step).

Training order: for epoch ``e`` the example indices are a stateless permutation seeded
by ``(seed, e)``; global position ``g`` (= step * global_batch + slot) maps to epoch
``g // n`` and place ``g % n``. Augmentation is seeded by ``(seed, g)``. Resuming at
step ``s`` therefore just starts the index stream at ``s * global_batch``: no shuffle
buffer to refill, no iterator state to pickle, and a resumed run sees exactly the batches
an uninterrupted one would. A full permutation of indices is also a better shuffle than a
bounded buffer, at 8 bytes per example of host memory.

Multi-process: every process walks the same index stream and keeps the slots of each
global batch that belong to it (``slot // local_batch == process_index``), then reads
and decodes only those: each process reads its own shard.

Evaluation walks the split once, pads the last global batch by repeating the last
example and returns a ``mask`` so padded rows never count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitzoo.data.preprocess import Preprocess, apply, decode
from vitzoo.data.tfdata import EvalBatches, Layout, device_batches, pipeline_options, tf_cpu

__all__ = ["EvalBatches", "Examples", "Layout", "tf_cpu", "train_batches"]


@dataclass
class Examples:
    """A split in memory: encoded images (``bytes``) or file paths (``str``), int32 labels.

    Random access by index is what lets the training order be a permutation per epoch.
    Implements :class:`vitzoo.data.source.Split`.
    """

    payload: list[Any]
    labels: np.ndarray
    from_files: bool = False

    @property
    def streamed(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.payload)

    def subset(self, indices: np.ndarray) -> Examples:
        return Examples([self.payload[int(i)] for i in indices],
                        np.asarray(self.labels)[indices].astype(np.int32), self.from_files)

    def read_mode(self, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"train_streaming": False}

    def reading_note(self, layout: Layout, start_step: int,
                     read_mode: dict[str, Any]) -> str | None:
        return None

    def train_batches(self, recipe: Preprocess, layout: Layout, *, seed: int,
                      start_step: int = 0, read_mode: dict[str, Any] | None = None
                      ) -> Iterator[dict[str, np.ndarray]]:
        return train_batches(self, recipe, layout, seed=seed, start_step=start_step)

    def eval_batches(self, recipe: Preprocess, layout: Layout, *, cache: bool = True) -> EvalBatches:
        return eval_batches(self, recipe, layout, cache=cache)


def _loader(examples: Examples, recipe: Preprocess, seed: int | None) -> Any:
    tf = tf_cpu()
    payload = tf.constant(np.asarray(examples.payload, dtype=object), dtype=tf.string)
    labels = tf.constant(np.asarray(examples.labels, np.int32))
    from_files = examples.from_files

    def load(position: Any, index: Any) -> tuple[Any, Any]:
        data = tf.gather(payload, index)
        if from_files:
            data = tf.io.read_file(data)
        image = decode(data)
        aug_seed = None if seed is None else tf.stack([tf.constant(seed, tf.int64), position])
        return apply(recipe, image, aug_seed), tf.gather(labels, index)

    return load


def _shard(ds: Any, layout: Layout) -> Any:
    if layout.process_count == 1:
        return ds
    b, local, me = layout.global_batch, layout.local_batch, layout.process_index
    return ds.filter(lambda pos, *_: (pos % b) // local == me)


def train_batches(examples: Examples, recipe: Preprocess, layout: Layout, *, seed: int,
                  start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches from ``start_step``: ``image [dev, per_dev, H, W, 3]``, ``label``."""
    tf = tf_cpu()
    n = len(examples)
    start = start_step * layout.global_batch
    first_epoch = start // n

    def epoch(e: Any) -> Any:
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices((e * n + tf.range(n, dtype=tf.int64), perm))

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
    ds = ds.skip(start - first_epoch * n)
    ds = _shard(ds, layout)
    ds = ds.map(_loader(examples, recipe, seed), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(layout.local_batch, drop_remainder=True).prefetch(2)
    ds = ds.with_options(pipeline_options(tf))
    iterator = ds.as_numpy_iterator()  # created now: decoding starts while the step compiles
    return device_batches(iterator, layout)


def eval_batches(examples: Examples, recipe: Preprocess, layout: Layout, *,
                 cache: bool = True) -> EvalBatches:
    """The split once, in index order; the last global batch padded with its last example."""
    tf = tf_cpu()
    n = len(examples)
    num_batches = math.ceil(n / layout.global_batch)
    load = _loader(examples, recipe, None)
    ds = _shard(tf.data.Dataset.range(num_batches * layout.global_batch), layout)
    ds = ds.map(lambda pos: (*load(pos, tf.minimum(pos, n - 1)), pos < n),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return EvalBatches(ds, layout, num_examples=n, num_batches=num_batches, images=n,
                       size=recipe.size, cache=cache)
