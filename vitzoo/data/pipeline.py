"""tf.data pipelines whose output is a pure function of (seed, step).

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
from vitzoo.data.source import Examples, memory_budget


def tf_cpu() -> Any:
    """Import TensorFlow with every accelerator hidden, so it never takes GPU/TPU memory."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass
    return tf


@dataclass(frozen=True)
class Layout:
    """How a global batch is split: over processes, then local devices."""

    global_batch: int
    process_count: int = 1
    process_index: int = 0
    local_devices: int = 1

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count

    @property
    def per_device(self) -> int:
        return self.local_batch // self.local_devices


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


def _options(tf: Any) -> Any:
    """Keep tf.data to half the host's cores, so decoding never starves the XLA update.

    On a 2-core machine the default (all cores, autotuned) lets the first batches'
    prefetch compete with the first training steps; one decode thread still delivers
    far more images per second than the step consumes.
    """
    import os

    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, (os.cpu_count() or 2) // 2)
    options.threading.max_intra_op_parallelism = 1
    options.deterministic = True
    return options


def _shard(ds: Any, layout: Layout) -> Any:
    if layout.process_count == 1:
        return ds
    b, local, me = layout.global_batch, layout.local_batch, layout.process_index
    return ds.filter(lambda pos, *_: (pos % b) // local == me)


def _split_devices(array: np.ndarray, layout: Layout) -> np.ndarray:
    return array.reshape(layout.local_devices, layout.per_device, *array.shape[1:])


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
    ds = ds.with_options(_options(tf))
    iterator = ds.as_numpy_iterator()  # created now: decoding starts while the step compiles

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for images, labels in iterator:
            yield {"image": _split_devices(images, layout),
                   "label": _split_devices(labels, layout)}

    return batches()


class EvalBatches:
    """Re-iterable evaluation batches covering the split exactly once (pad + ``mask``).

    The preprocessed images are cached in memory after the first pass when they fit
    the host-memory budget, so periodic evaluation decodes each image once.
    """

    def __init__(self, examples: Examples, recipe: Preprocess, layout: Layout) -> None:
        tf = tf_cpu()
        n = len(examples)
        self.num_examples = n
        self.layout = layout
        self.num_batches = math.ceil(n / layout.global_batch)
        padded = self.num_batches * layout.global_batch
        load = _loader(examples, recipe, None)
        ds = tf.data.Dataset.range(padded)
        ds = _shard(ds, layout)
        ds = ds.map(lambda pos: (*load(pos, tf.minimum(pos, n - 1)), pos < n),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        self._finish(tf, ds, images=n, size=recipe.size)

    def _finish(self, tf: Any, ds: Any, *, images: int, size: int) -> None:
        """Cache the decoded images when they fit, then batch: shared by every eval source."""
        self.cached = images * size * size * 3 * 4 <= memory_budget(0.15)
        if self.cached:
            ds = ds.cache()
        self._ds = ds.batch(self.layout.local_batch).prefetch(2).with_options(_options(tf))

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for images, labels, mask in self._ds.as_numpy_iterator():
            yield {"image": _split_devices(images, self.layout),
                   "label": _split_devices(labels, self.layout),
                   "mask": _split_devices(mask, self.layout)}


def make_train_batches(source: Any, recipe: Preprocess, layout: Layout, *, seed: int,
                       start_step: int = 0, shuffle_buffer: int | None = None
                       ) -> Iterator[dict[str, np.ndarray]]:
    """Training batches from in-memory :class:`Examples` or a streamed TFDS split."""
    if isinstance(source, Examples):
        return train_batches(source, recipe, layout, seed=seed, start_step=start_step)
    from vitzoo.data.stream import shuffle_buffer_size, stream_train_batches

    buffer = shuffle_buffer or shuffle_buffer_size(source)
    return stream_train_batches(source, recipe, layout, seed=seed, shuffle_buffer=buffer,
                                start_step=start_step)


def make_eval_batches(source: Any, recipe: Preprocess, layout: Layout) -> Any:
    """Evaluation batches (exactly once, padded and masked) for either kind of source."""
    if isinstance(source, Examples):
        return EvalBatches(source, recipe, layout)
    from vitzoo.data.stream import StreamEvalBatches

    return StreamEvalBatches(source, recipe, layout)
