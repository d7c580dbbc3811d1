"""Pre-logit features of a checkpoint on a dataset split, data-parallel, into the cache.

The feature is the vector the classification head reads (the "pre-logits"):

* ViT/R+ViT with a representation layer (the 2020 ImageNet-21k releases): the output of
  ``pre_logits`` (tanh of a Dense on the class token), as in the ViT paper's few-shot
  evaluation;
* ViT/R+ViT without one: the class token after the final LayerNorm (``gap`` models: the
  mean of the tokens);
* Mixer: the mean of the tokens after the final LayerNorm.

It is captured by intercepting the call of the ``head`` module and returning its input, so
the model code stays the single definition of the forward pass: ``features @ head.kernel +
head.bias`` is exactly the logits the model computes.

Extraction runs the same way as ``evaluate``: the evaluation recipe (plain resize to the
resolution, pixels in [-1, 1]), a global batch split over all local devices with
``jax.pmap``, the last batch padded and masked. Rows are written to the cache chunk by
chunk; chunks already there are not recomputed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.errors import VitzooError
from vitzoo.probe.cache import FeatureEntry, checkpoint_sha256, chunk_layout, split_fingerprint


def representation_of(config: Any) -> str:
    """Which vector the head reads, in words (recorded with every probe result)."""
    if config.family == "mixer":
        return "mean of the tokens after the final LayerNorm (Mixer has no pre-logits layer)"
    if config.representation_size:
        return (f"pre_logits layer: tanh(Dense {config.representation_size}) of the class token "
                "(the checkpoint's representation layer)")
    if config.classifier == "token":
        return "class token after the final LayerNorm (no pre-logits layer in this checkpoint)"
    return "mean of the tokens after the final LayerNorm (no pre-logits layer)"


@dataclass
class Backbone:
    """A loaded checkpoint ready to produce features at ``resolution``."""

    path: Path
    sha256: str
    config: Any
    params: Any
    resolution: int
    num_classes: int  # of the checkpoint's own head (0: none)
    representation: str

    def spec(self, dtype: str) -> dict[str, Any]:
        from vitzoo.data import eval_recipe

        return {"checkpoint_sha256": self.sha256, "resolution": self.resolution,
                "preprocess": eval_recipe(self.resolution).as_dict(),
                "representation": self.representation, "dtype": dtype}


def load_backbone(path: Path, *, resolution: int | None = None) -> Backbone:
    """Load ``path`` with its representation layer kept, position embedding at ``resolution``."""
    from vitzoo.weights.release import load_checkpoint, load_for_finetune

    config, info, params = load_checkpoint(path)
    res = int(resolution or info["resolution"])
    if res != info["resolution"]:
        config, params = load_for_finetune(path, num_classes=max(1, info["num_classes"]),
                                           resolution=res, keep_representation=True)
    return Backbone(path=Path(path), sha256=checkpoint_sha256(path), config=config,
                    params=params, resolution=res, num_classes=int(info["num_classes"]),
                    representation=representation_of(config))


def feature_function(config: Any, dtype: str = "float32") -> Callable[[Any, Any], Any]:
    """``f(params, images) -> [B, D]`` float32: the input of the model's ``head``."""
    import flax.linen as nn
    import jax.numpy as jnp

    from vitzoo.models import build_model

    module = build_model(config, 1, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)

    def head_input(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if context.module.name == "head" and context.method_name == "__call__":
            return args[0].astype(jnp.float32)
        return next_fun(*args, **kwargs)

    def features(params: Any, images: Any) -> Any:
        with nn.intercept_methods(head_input):
            return module.apply({"params": params}, images, train=False)

    return features


@dataclass
class Throughput:
    """Forward-pass speed measured on this machine (decoding excluded)."""

    img_per_sec: float
    batch: int
    dtype: str
    device: str
    devices: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Extractor:
    """A backbone compiled for data-parallel feature extraction over the local devices."""

    def __init__(self, backbone: Backbone, *, batch: int = 64, dtype: str = "float32",
                 chunk_rows: int = 512) -> None:
        import jax

        from vitzoo.adapt.devices import replicate
        from vitzoo.adapt.steps import AXIS

        if batch < 1:
            raise VitzooError(f"--batch must be positive, got {batch}", "e.g. --batch 64")
        if dtype not in ("float32", "bfloat16"):
            raise VitzooError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
        if jax.process_count() > 1:
            raise VitzooError("probe extracts features on one host",
                              "run it without --coordinator/--num-processes")
        self.backbone = backbone
        self.dtype = dtype
        self.devices = jax.local_devices()
        n = len(self.devices)
        self.global_batch = max(n, batch - batch % n)
        self.chunk_rows = chunk_rows
        self._step = jax.pmap(feature_function(backbone.config, dtype), axis_name=AXIS)
        self._params = replicate(backbone.params, self.devices)

    def _layout(self) -> Any:
        from vitzoo.data.pipeline import Layout

        return Layout(self.global_batch, local_devices=len(self.devices))

    def _forward(self, images: np.ndarray) -> np.ndarray:
        from vitzoo.adapt.devices import shard

        out = self._step(self._params, shard(images, self.devices))
        return np.asarray(out).reshape(-1, out.shape[-1])

    def entry(self, source: Any, fingerprint: dict[str, Any]) -> FeatureEntry:
        spec = {**self.backbone.spec(self.dtype), "split": fingerprint}
        return FeatureEntry(spec, len(source), chunk_layout(len(source), self.global_batch,
                                                              self.chunk_rows))

    def extract(self, source: Any, fingerprint: dict[str, Any] | None = None,
                progress: Callable[[int, int], None] | None = None) -> FeatureEntry:
        """Fill the cache entry of ``source`` (Examples or a streamed split); returns it."""
        from filelock import FileLock

        entry = self.entry(source, fingerprint or split_fingerprint(source))
        if not entry.missing():
            return entry
        entry.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{entry.dir}.lock"):  # a second process waits, then finds the chunks
            todo = entry.missing()
            if todo:
                self._fill(source, entry, todo, progress)
        return entry

    def _fill(self, source: Any, entry: FeatureEntry, todo: list[int],
              progress: Callable[[int, int], None] | None) -> None:
        entry.start({"checkpoint": str(self.backbone.path),
                     "architecture": self.backbone.config.name})
        done = entry.num_chunks - len(todo)
        from vitzoo.data.pipeline import Examples

        if isinstance(source, Examples):
            for index in todo:
                start, stop = entry.rows_of(index)
                feats, labels = self._rows(source.subset(np.arange(start, stop)))
                entry.write_chunk(index, feats, labels)
                done += 1
                if progress:
                    progress(done, entry.num_chunks)
        else:
            self._stream(source, entry, set(todo), progress, done)

    def _rows(self, examples: Any) -> tuple[np.ndarray, np.ndarray]:
        from vitzoo.data import eval_recipe

        feats, labels = [], []
        for batch in examples.eval_batches(eval_recipe(self.backbone.resolution), self._layout(),
                                           cache=False):
            mask = batch["mask"].reshape(-1)
            feats.append(self._forward(batch["image"])[mask])
            labels.append(batch["label"].reshape(-1)[mask])
        return np.concatenate(feats), np.concatenate(labels)

    def _stream(self, source: Any, entry: FeatureEntry, todo: set[int],
                progress: Callable[[int, int], None] | None, done: int) -> None:
        """A streamed split is read front to back; batches of finished chunks skip the forward."""
        from vitzoo.data import eval_recipe

        feats: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        row = 0
        for batch in source.eval_batches(eval_recipe(self.backbone.resolution), self._layout(),
                                         cache=False):
            mask = batch["mask"].reshape(-1)
            count = int(mask.sum())
            index = row // entry.chunk_rows
            if index in todo:
                feats.append(self._forward(batch["image"])[mask])
                labels.append(batch["label"].reshape(-1)[mask])
            row += count
            chunk_end = entry.rows_of(index)[1]
            if row >= chunk_end or row >= entry.num_rows:
                if index in todo:
                    entry.write_chunk(index, np.concatenate(feats), np.concatenate(labels))
                    done += 1
                    if progress:
                        progress(done, entry.num_chunks)
                feats, labels = [], []

    def throughput(self, repeats: int = 3) -> Throughput:
        """img/s of the compiled forward on one global batch (after a warm-up call)."""
        import jax

        res = self.backbone.resolution
        images = np.random.default_rng(0).uniform(
            -1, 1, (len(self.devices), self.global_batch // len(self.devices), res, res, 3)
        ).astype(np.float32)
        from vitzoo.adapt.devices import shard

        device_images = shard(images, self.devices)
        jax.block_until_ready(self._step(self._params, device_images))
        start = time.perf_counter()
        for _ in range(repeats):
            out = self._step(self._params, device_images)
        jax.block_until_ready(out)
        elapsed = time.perf_counter() - start
        device = self.devices[0]
        return Throughput(img_per_sec=repeats * self.global_batch / max(elapsed, 1e-9),
                          batch=self.global_batch, dtype=self.dtype,
                          device=str(getattr(device, "device_kind", device.platform)),
                          devices=len(self.devices))
