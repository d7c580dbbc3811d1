"""What a dataset hands to training: two splits behind one interface, plus its decisions.

A split is either held in memory (:class:`~vitzoo.data.pipeline.Examples`: encoded images
addressable by index, so the training order is a permutation per epoch) or read as a
stream (:class:`~vitzoo.data.stream.StreamSplit`: a TFDS split too large for memory).
Training never asks which: both implement :class:`Split`, and each knows how it produces
training batches from a step, evaluation batches, and how its reading must be recorded
for an exact resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from vitzoo.data.preprocess import Preprocess
from vitzoo.data.tfdata import EvalBatches, Layout
from vitzoo.errors import VitzooError


class Split(Protocol):
    """One split of a dataset, in memory or streamed: what the trainer and evaluator use."""

    @property
    def streamed(self) -> bool:
        """True when the split is read sequentially rather than held in memory."""
        ...

    def __len__(self) -> int: ...

    def read_mode(self, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
        """How training reads the split, for the checkpoint; ``recorded`` is a resumed run's."""
        ...

    def reading_note(self, layout: Layout, start_step: int,
                     read_mode: dict[str, Any]) -> str | None:
        """A line for the user about how the split is read (None when nothing to say)."""
        ...

    def train_batches(self, recipe: Preprocess, layout: Layout, *, seed: int,
                      start_step: int = 0, read_mode: dict[str, Any] | None = None
                      ) -> Iterator[dict[str, np.ndarray]]:
        """Endless training batches from ``start_step``: a pure function of (seed, step)."""
        ...

    def eval_batches(self, recipe: Preprocess, layout: Layout, *, cache: bool = True) -> EvalBatches:
        """Batches covering the split exactly once (padded rows masked); ``cache=False`` for one pass."""
        ...


@dataclass
class DataSplits:
    """A dataset ready for training/evaluation, plus what was decided on the way.

    ``notes`` are the human-readable decisions (a carved validation split, converted
    files); ``skipped`` lists ``(file, reason)`` for images that could not be read.
    ``train`` is None when only evaluation was asked for.
    """

    name: str
    kind: Literal["tfds", "folder"]
    class_names: list[str]
    train: Split | None
    eval: Split
    train_split: str | None
    eval_split: str
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: ``multiclass`` (integer labels) or ``multilabel`` (``int32 [N, K]`` multi-hot labels).
    task: str = "multiclass"
    #: Where a choice is made without the evaluation split: a multi-label run's F1 threshold
    #: (when that is not ``eval`` itself), or, when asked for (``open_dataset(validation=True)``),
    #: the dataset's own validation split that the probe chooses candidates on.
    validation: Split | None = None
    #: The name of ``validation`` when it is the dataset's own split (``validation``, ``val``).
    validation_split: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for run.json."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "task": self.task,
            "train_split": self.train_split,
            "eval_split": self.eval_split,
            "train_examples": len(self.train) if self.train is not None else None,
            "eval_examples": len(self.eval),
            "streaming": {"train": self.train is not None and self.train.streamed,
                          "eval": self.eval.streamed},
            "notes": list(self.notes),
            "skipped_files": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def carve(n: int, fraction: float, labels: np.ndarray | None = None,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index split; stratified per class when labels are given.

    Independent of the run seed on purpose: the validation set must not change when
    the user changes ``--seed``. Each class with at least two examples gives at least
    one to validation and keeps at least one for training.
    """
    if not 0.0 < fraction < 1.0:
        raise VitzooError(f"validation fraction must be between 0 and 1, got {fraction}",
                          "use e.g. --val-fraction 0.1")
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        k = max(1, round(n * fraction)) if n > 1 else 0
        return np.sort(order[k:]), np.sort(order[:k])
    train, val = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        k = round(len(members) * fraction)
        k = min(max(k, 1), len(members) - 1) if len(members) >= 2 else 0
        val.extend(members[:k].tolist())
        train.extend(members[k:].tolist())
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64))
