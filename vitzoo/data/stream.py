"""TFDS splits too large for memory, read as a deterministic stream.

The in-memory path (:mod:`vitzoo.data.pipeline`) permutes indices; a split that does not
fit cannot be indexed, so it is read front to back instead, and every source of order is
pinned so that the stream is still a pure function of (seed, position):

* epoch ``e`` reads the split with ``shuffle_files=True`` and a file-shuffle seed derived
  from ``(seed, e)``, interleaving files deterministically;
* a bounded shuffle buffer (seeded from ``(seed, e)`` too) mixes examples across files;
  its size comes from the memory budget and the average encoded example size, and is
  recorded in the checkpoint because a different size would be a different order;
* local position ``p`` of a process is example ``p % n`` of epoch ``p // n`` (``n`` the
  examples of that process's sub-split), and its augmentation is seeded by
  ``(seed, p * processes + process)``.

Resume at step ``s`` starts at ``p = s * local_batch``: whole epochs before it are never
read (their order does not depend on them), and the ``p % n`` examples of the current
epoch are skipped as encoded records, before decoding. That costs reading up to one epoch
of records, but it is exact.

Multi-process: each process streams its own even sub-split
(``tfds.split_for_jax_process``) and forms its ``local_batch`` rows of each global batch.
The order is reproducible for the same process count (and the same TFDS version and
files); a different count gives different sub-splits, hence a different order.

Evaluation reads the split once in file order (no shuffling), pads each process's stream
with masked blank images up to the same number of batches everywhere, and caches the
preprocessed images when they fit the budget, like the in-memory path.

A multi-label split (``multi_hot`` classes, e.g. ``voc``'s ``Sequence(ClassLabel)``) streams
the same way: its label sequence becomes a 0/1 row inside the tf.data map
(:func:`label_row`, the one definition the in-memory reader uses too), so batches carry
``label [..., classes]`` exactly as from memory, and padding rows carry all-zero rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitzoo.data.memory import memory_budget
from vitzoo.data.preprocess import Preprocess, apply, decode
from vitzoo.data.tfdata import EvalBatches, Layout, device_batches, pipeline_options, skip_decoders, tf_cpu
from vitzoo.errors import VitzooError

log = logging.getLogger("vitzoo.data")

#: A streaming pipeline is rebuilt after this many epochs (at the next batch boundary),
#: so a long run on a small split never chains thousands of TFDS readers in one graph.
EPOCHS_PER_PIPELINE = 8
#: Share of the memory budget the training shuffle buffer may hold (encoded bytes).
BUFFER_SHARE = 0.5


@dataclass
class StreamSplit:
    """One TFDS split read sequentially: the builder, the split and what is known of it.

    ``num_examples`` and ``avg_bytes`` (encoded bytes per example) come from the split's
    metadata, or from a counting pass when the dataset has none (``counted``).
    Implements :class:`vitzoo.data.source.Split`.
    """

    builder: Any
    split: str
    image_key: str
    label_key: str
    num_examples: int
    avg_bytes: float
    counted: bool = False
    #: Multi-label: the number of classes of each 0/1 label row (0: one class index per image).
    multi_hot: int = 0

    @property
    def streamed(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.num_examples

    def read_mode(self, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
        """Streamed, with the shuffle buffer a resumed run recorded (another size, another order)."""
        buffer = (recorded or {}).get("shuffle_buffer") or shuffle_buffer_size(self)
        return {"train_streaming": True, "shuffle_buffer": int(buffer)}

    def reading_note(self, layout: Layout, start_step: int,
                     read_mode: dict[str, Any]) -> str | None:
        skipped = start_step * layout.local_batch % self.process_split(
            layout.process_index, layout.process_count)[1]
        return (f"streaming {self.split} with a shuffle buffer of {read_mode['shuffle_buffer']} "
                "examples" + (f"; resuming skips {skipped} encoded examples of the current epoch"
                              if skipped else ""))

    def train_batches(self, recipe: Preprocess, layout: Layout, *, seed: int,
                      start_step: int = 0, read_mode: dict[str, Any] | None = None
                      ) -> Iterator[dict[str, np.ndarray]]:
        buffer = (read_mode or self.read_mode())["shuffle_buffer"]
        return stream_train_batches(self, recipe, layout, seed=seed, shuffle_buffer=buffer,
                                    start_step=start_step)

    def eval_batches(self, recipe: Preprocess, layout: Layout, *, cache: bool = True) -> EvalBatches:
        return stream_eval_batches(self, recipe, layout, cache=cache)

    def process_split(self, index: int, count: int) -> tuple[str, int]:
        """This process's even sub-split of ``split`` and its number of examples."""
        if count == 1:
            return self.split, self.num_examples
        import tensorflow_datasets as tfds

        sub = tfds.split_for_jax_process(self.split, process_index=index, process_count=count)
        if not self.counted:
            try:
                return sub, int(self.builder.info.splits[sub].num_examples)
            except (KeyError, ValueError, TypeError):
                pass
        return sub, count_examples(self.builder, sub, self.label_key)

    def read(self, split: str, *, epoch_seed: int | None) -> Any:
        """``(encoded image, label)`` of ``split``; file order shuffled by ``epoch_seed``."""
        tf = tf_cpu()
        import tensorflow_datasets as tfds

        options = tf.data.Options()
        options.deterministic = True
        config = tfds.ReadConfig(shuffle_seed=epoch_seed, options=options, try_autocache=False,
                                 shuffle_reshuffle_each_iteration=False,
                                 interleave_cycle_length=16, interleave_block_length=16)
        decoders = skip_decoders(self.builder)
        try:
            ds = self.builder.as_dataset(split=split, shuffle_files=epoch_seed is not None,
                                         read_config=config, decoders=decoders)
        except Exception as exc:
            raise VitzooError(f"cannot read split {split!r} of {self.builder.name} "
                              f"({str(exc).splitlines()[0][:160]})",
                              "check the split name and slicing") from None
        image_key, label_key, multi_hot = self.image_key, self.label_key, self.multi_hot
        return ds.map(lambda ex: (ex[image_key], label_row(ex[label_key], multi_hot)))


def label_row(label: Any, multi_hot: int) -> Any:
    """A TFDS label as vitzoo's int32 label (a tf op): the class index, or with ``multi_hot``
    classes a sequence of class indices scattered into a 0/1 row (repeats count once)."""
    tf = tf_cpu()
    if not multi_hot:
        return tf.cast(label, tf.int32)
    return tf.minimum(tf.reduce_sum(
        tf.one_hot(tf.cast(label, tf.int32), multi_hot, dtype=tf.int32), 0), 1)


def count_examples(builder: Any, split: str, label_key: str) -> int:
    """Examples in ``split`` by reading it once (images left encoded): for missing metadata."""
    tf = tf_cpu()
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=skip_decoders(builder))
    return int(ds.map(lambda ex: ex[label_key]).reduce(
        tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())


def epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed for epoch ``epoch`` of a run seeded ``seed`` (platform independent)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(1)[0] >> 1)


def shuffle_buffer_size(source: StreamSplit, budget: int | None = None) -> int:
    """Examples the training shuffle buffer holds: half the memory budget, at most one epoch."""
    budget = memory_budget() if budget is None else budget
    fits = int(budget * BUFFER_SHARE // max(source.avg_bytes, 1.0))
    return max(1, min(source.num_examples, fits))


def _loader(recipe: Preprocess, seed: int | None, layout: Layout) -> Any:
    tf = tf_cpu()
    processes, me = layout.process_count, layout.process_index

    def load(position: Any, data: Any, label: Any) -> tuple[Any, Any]:
        aug_seed = None
        if seed is not None:
            uid = position * processes + me
            aug_seed = tf.stack([tf.constant(seed, tf.int64), uid])
        return apply(recipe, decode(data), aug_seed), label

    return load


def _epochs(source: StreamSplit, split: str, n: int, *, seed: int, buffer: int,
            start: int, stop: int) -> Any:
    """Examples at local positions ``[start, stop)``: ``(position, encoded, label)``."""
    tf = tf_cpu()
    first, last = start // n, (stop - 1) // n
    ds = None
    for epoch in range(first, last + 1):
        es = epoch_seed(seed, epoch)
        part = source.read(split, epoch_seed=es).take(n)
        part = part.shuffle(buffer, seed=es, reshuffle_each_iteration=False)
        part = tf.data.Dataset.zip(
            (tf.data.Dataset.range(epoch * n, (epoch + 1) * n), part)).map(
            lambda pos, ex: (pos, ex[0], ex[1]))
        ds = part if ds is None else ds.concatenate(part)
    assert ds is not None
    return ds.skip(start - first * n).take(stop - start)


def stream_train_batches(source: StreamSplit, recipe: Preprocess, layout: Layout, *, seed: int,
                         shuffle_buffer: int, start_step: int = 0
                         ) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches from ``start_step``, shaped like ``pipeline.train_batches``.

    The stream is cut into pipelines of about :data:`EPOCHS_PER_PIPELINE` epochs that end
    on a batch boundary; a cut changes nothing about which example lands at which
    position, so the batches are the same however the stream is cut (or resumed).
    """
    tf = tf_cpu()
    split, n = source.process_split(layout.process_index, layout.process_count)
    if n < 1:
        raise VitzooError(f"process {layout.process_index} has no training examples in "
                          f"{source.split}", "use fewer processes or a larger split")
    b = layout.local_batch
    start = start_step * b
    if start % n:
        log.info("streaming %s: resuming at position %d skips %d encoded examples of epoch %d",
                 split, start, start % n, start // n)
    load = _loader(recipe, seed, layout)

    def pipeline(begin: int) -> tuple[Any, int]:
        epoch_end = (begin // n + EPOCHS_PER_PIPELINE) * n
        end = math.ceil(epoch_end / b) * b
        ds = _epochs(source, split, n, seed=seed, buffer=shuffle_buffer, start=begin, stop=end)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(b, drop_remainder=True).prefetch(2).with_options(pipeline_options(tf))
        return ds.as_numpy_iterator(), end

    iterator, end = pipeline(start)  # created now: reading starts while the step compiles

    def batches() -> Iterator[dict[str, np.ndarray]]:
        nonlocal iterator, end
        while True:
            yield from device_batches(iterator, layout)
            iterator, end = pipeline(end)

    return batches()


def stream_eval_batches(source: StreamSplit, recipe: Preprocess, layout: Layout, *,
                        cache: bool = True) -> EvalBatches:
    """The split once in file order; each process pads with masked blank images to the same count."""
    tf = tf_cpu()
    counts = [source.process_split(p, layout.process_count)[1]
              for p in range(layout.process_count)]
    split, n = source.process_split(layout.process_index, layout.process_count)
    num_batches = max(1, math.ceil(max(counts) / layout.local_batch))
    pad = num_batches * layout.local_batch - n
    size = recipe.size
    load = _loader(recipe, None, layout)
    ds = source.read(split, epoch_seed=None).take(n)
    ds = tf.data.Dataset.zip((tf.data.Dataset.range(n), ds)).map(
        lambda pos, ex: (*load(pos, ex[0], ex[1]), tf.constant(True)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    no_label = tf.zeros([source.multi_hot] if source.multi_hot else [], tf.int32)
    blank = tf.data.Dataset.from_tensors(
        (tf.zeros([size, size, 3], tf.float32), no_label, tf.constant(False))).repeat(pad)
    return EvalBatches(ds.concatenate(blank), layout, num_examples=sum(counts),
                       num_batches=num_batches, images=n, size=size, cache=cache)
