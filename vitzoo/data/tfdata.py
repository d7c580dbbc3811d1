"""tf.data and TFDS helpers shared by the in-memory and the streamed pipelines.

Both pipelines split a global batch the same way (:class:`Layout`), run TensorFlow on the
CPU only, keep tf.data to half the host's cores, read TFDS images still encoded, and
finish evaluation the same way (:class:`EvalBatches`: cache when it fits, batch, split
over devices). Those shared pieces live here, below both pipelines, so neither pipeline
imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitzoo.data.memory import memory_budget

#: Share of the memory budget the preprocessed evaluation images may take when cached.
EVAL_CACHE_SHARE = 0.15


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


def pipeline_options(tf: Any) -> Any:
    """Keep tf.data to half the host's cores, so decoding never starves the XLA update.

    On a 2-core machine the default (all cores, autotuned) lets the first batches'
    prefetch compete with the first training steps; one decode thread still delivers
    far more images per second than the step consumes.
    """
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, (os.cpu_count() or 2) // 2)
    options.threading.max_intra_op_parallelism = 1
    options.deterministic = True
    return options


def split_devices(array: np.ndarray, layout: Layout) -> np.ndarray:
    """A process's ``[local_batch, ...]`` rows as ``[local_devices, per_device, ...]``."""
    return array.reshape(layout.local_devices, layout.per_device, *array.shape[1:])


def device_batches(iterator: Any, layout: Layout) -> Iterator[dict[str, np.ndarray]]:
    """``(images, labels)`` numpy batches as ``{"image", "label"}`` split over local devices."""
    for images, labels in iterator:
        yield {"image": split_devices(images, layout), "label": split_devices(labels, layout)}


def skip_decoders(builder: Any) -> dict[str, Any]:
    """TFDS decoders that leave every image feature encoded (decoded later, in parallel)."""
    import tensorflow_datasets as tfds

    return {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
            if isinstance(f, tfds.features.Image)}


class EvalBatches:
    """Re-iterable evaluation batches covering a split exactly once (pad + ``mask``).

    Built from a dataset of ``(image, label, mask)`` rows of this process, already padded
    to ``num_batches * local_batch`` rows. The preprocessed images are cached in memory
    after the first pass when they fit the budget, so periodic evaluation decodes each
    image once; ``cache=False`` (a single pass, like the probe's feature extraction) never
    keeps them.
    """

    def __init__(self, ds: Any, layout: Layout, *, num_examples: int, num_batches: int,
                 images: int, size: int, cache: bool = True) -> None:
        """``images`` of side ``size`` are this process's real rows (what a cache would hold)."""
        tf = tf_cpu()
        self.layout = layout
        self.num_examples = num_examples
        self.num_batches = num_batches
        self.cached = cache and images * size * size * 3 * 4 <= memory_budget(EVAL_CACHE_SHARE)
        if self.cached:
            ds = ds.cache()
        self._ds = ds.batch(layout.local_batch).prefetch(2).with_options(pipeline_options(tf))

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for images, labels, mask in self._ds.as_numpy_iterator():
            yield {"image": split_devices(images, self.layout),
                   "label": split_devices(labels, self.layout),
                   "mask": split_devices(mask, self.layout)}
