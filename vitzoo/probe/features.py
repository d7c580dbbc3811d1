"""Pre-logit features of a checkpoint on a dataset split, data-parallel, into the cache.

The feature is the vector the classification head reads (the "pre-logits"):

* ViT/R+ViT with a representation layer (the 2020 ImageNet-21k releases): the output of
  ``pre_logits`` (tanh of a Dense on the class token), as in the ViT paper's few-shot
  evaluation;
* ViT/R+ViT without one: the class token after the final LayerNorm (``gap`` models: the
  mean of the tokens);
* Mixer: the mean of the tokens after the final LayerNorm.

The model returns it as an output (``out["pre_logits"]``, :mod:`vitzoo.models`), so the
model code stays the single definition of the forward pass: ``features @ head.kernel +
head.bias`` is exactly the logits the model computes.

Extraction runs through the backbone layer (:mod:`vitzoo.backbone`), like ``evaluate``:
the checkpoint's evaluation recipe (:meth:`vitzoo.backbone.Backbone.eval_recipe`: for release
checkpoints a plain resize to the resolution, pixels in [-1, 1]; timm's ``pretrained_cfg``
for checkpoints in its layout), a global batch
split over all devices of all processes, the last batch padded and cut. Rows are written
to the cache chunk by chunk; chunks already there are not recomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.backbone import Backbone
from vitzoo.errors import VitzooError
from vitzoo.probe.cache import FeatureEntry, checkpoint_sha256, chunk_layout, split_fingerprint


def load_backbone(path: Path, *, resolution: int | None = None) -> Backbone:
    """``path`` with its representation layer kept, at ``resolution``, its content hash recorded."""
    from vitzoo.backbone import load

    backbone = load(path, resolution=resolution, representation=True)
    backbone.sha256 = checkpoint_sha256(backbone.path)
    return backbone


def feature_spec(backbone: Backbone, dtype: str) -> dict[str, Any]:
    """What the features of ``backbone`` depend on (besides the split): the cache key's part."""
    return {"checkpoint_sha256": backbone.sha256, "resolution": backbone.resolution,
            "preprocess": backbone.eval_recipe().as_dict(),
            "representation": backbone.representation, "dtype": dtype}


def refuse_streamed_across_processes(splits: list[Any], processes: int) -> None:
    """One line, before any extraction, when a streamed split would be read by several processes.

    Each process would have to read its own shard of the stream and the gathered rows be put
    back in the split's order, labels included; that is not built, so such a split is refused
    here rather than after the other splits were extracted.
    """
    if processes > 1 and any(s is not None and s.streamed for s in splits):
        raise VitzooError(f"a streamed TFDS split is extracted by one process, not {processes}",
                          "drop --coordinator/--num-processes, or hold the splits in memory "
                          "(no --stream; a larger VITZOO_MEMORY_BUDGET)")


class Extractor:
    """A backbone compiled for data-parallel feature extraction (:class:`vitzoo.backbone.Forward`).

    Over every local device, and over every process of a ``jax.distributed`` run: each
    process decodes and runs only its slice of every global batch, and every process
    receives (and writes to its cache) all rows. The processes agree on which chunks to
    compute by taking process 0's list, since one that skipped a forward would leave the
    others waiting in the gather. A streamed split is extracted by one process only.
    """

    def __init__(self, backbone: Backbone, *, batch: int = 64, dtype: str = "float32",
                 chunk_rows: int = 512) -> None:
        from vitzoo.backbone import Forward

        self.backbone = backbone
        self.forward = Forward(backbone, batch=batch, dtype=dtype)
        self.dtype = self.forward.dtype
        self.placement = self.forward.placement
        self.devices = self.placement.devices
        self.global_batch = self.forward.global_batch
        self.chunk_rows = chunk_rows

    def entry(self, source: Any, fingerprint: dict[str, Any]) -> FeatureEntry:
        spec = {**feature_spec(self.backbone, self.dtype), "split": fingerprint}
        return FeatureEntry(spec, len(source), chunk_layout(len(source), self.global_batch,
                                                              self.chunk_rows))

    def extract(self, source: Any, fingerprint: dict[str, Any] | None = None,
                progress: Callable[[int, int], None] | None = None) -> FeatureEntry:
        """Fill the cache entry of ``source`` (Examples or a streamed split); returns it."""
        from filelock import FileLock

        entry = self.entry(source, fingerprint or split_fingerprint(source))
        if self.placement.process_count > 1:
            self._fill(source, entry, self._agreed(entry.missing()), progress)
            return entry
        if not entry.missing():
            return entry
        entry.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{entry.dir}.lock"):  # a second process waits, then finds the chunks
            todo = entry.missing()
            if todo:
                self._fill(source, entry, todo, progress)
        return entry

    def _agreed(self, todo: list[int]) -> list[int]:
        """Process 0's missing chunks, on every process."""
        return _broadcast_indices(todo)

    def _fill(self, source: Any, entry: FeatureEntry, todo: list[int],
              progress: Callable[[int, int], None] | None) -> None:
        if not todo:
            return
        entry.start({"checkpoint": str(self.backbone.path),
                     "architecture": self.backbone.config.name})
        done = entry.num_chunks - len(todo)
        from vitzoo.data.pipeline import Examples

        if isinstance(source, Examples):
            for index in todo:
                start, stop = entry.rows_of(index)
                subset = source.subset(np.arange(start, stop))
                entry.write_chunk(index, self._rows(subset), subset.labels)
                done += 1
                if progress:
                    progress(done, entry.num_chunks)
        elif self.placement.process_count > 1:
            raise VitzooError("a streamed split is extracted by one process",
                              "run the extraction without --coordinator/--num-processes, or "
                              "hold the split in memory (no --stream)")
        else:
            self._stream(source, entry, set(todo), progress, done)

    def _rows(self, examples: Any) -> np.ndarray:
        """Features of ``examples`` in index order: all rows of each global batch, padding cut."""
        feats = [self.forward(batch["image"]) for batch in examples.eval_batches(
            self.backbone.eval_recipe(), self.forward.layout, cache=False)]
        return np.concatenate(feats)[:len(examples)]

    def _stream(self, source: Any, entry: FeatureEntry, todo: set[int],
                progress: Callable[[int, int], None] | None, done: int) -> None:
        """A streamed split is read front to back; batches of finished chunks skip the forward."""
        feats: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        row = 0
        for batch in source.eval_batches(self.backbone.eval_recipe(), self.forward.layout,
                                         cache=False):
            mask = batch["mask"].reshape(-1)
            count = int(mask.sum())
            index = row // entry.chunk_rows
            if index in todo:
                feats.append(self.forward(batch["image"])[mask])
                label = batch["label"]  # [..., K] multi-hot rows keep their class axis
                labels.append(label.reshape(len(mask), *label.shape[batch["mask"].ndim:])[mask])
            row += count
            chunk_end = entry.rows_of(index)[1]
            if row >= chunk_end or row >= entry.num_rows:
                if index in todo:
                    entry.write_chunk(index, np.concatenate(feats), np.concatenate(labels))
                    done += 1
                    if progress:
                        progress(done, entry.num_chunks)
                feats, labels = [], []


def _broadcast_indices(todo: list[int]) -> list[int]:
    """Process 0's list of chunk indices, on every process (a collective: all must call it)."""
    from jax.experimental import multihost_utils

    count = int(multihost_utils.broadcast_one_to_all(np.int32(len(todo))))
    padded = np.full(max(count, 1), -1, np.int32)
    padded[:min(count, len(todo))] = todo[:count]
    agreed = multihost_utils.broadcast_one_to_all(padded)
    return [int(i) for i in np.asarray(agreed)[:count]]
