"""What a data source hands to the pipeline: encoded examples addressable by index.

Both sources (TFDS, image folders) end up as :class:`Examples`: a list of encoded
images (bytes in memory when they fit, file paths otherwise) and integer labels. Random
access by index is what lets the pipeline make the training order a pure function of
(seed, step): a permutation of indices per epoch instead of a shuffle buffer whose
contents depend on everything read before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Examples:
    """Encoded images (``bytes``) or file paths (``str``), with int32 labels."""

    payload: list[Any]
    labels: np.ndarray
    from_files: bool = False

    def __len__(self) -> int:
        return len(self.payload)

    def subset(self, indices: np.ndarray) -> Examples:
        return Examples([self.payload[int(i)] for i in indices],
                        np.asarray(self.labels)[indices].astype(np.int32), self.from_files)


@dataclass
class DataSplits:
    """A dataset ready for training/evaluation, plus what was decided on the way.

    ``notes`` are the human-readable decisions (a carved validation split, converted
    files); ``skipped`` lists ``(file, reason)`` for images that could not be read.
    """

    name: str
    kind: str
    class_names: list[str]
    train: Any  # Examples, or a vitzoo.data.stream.StreamSplit when read sequentially
    eval: Any
    train_split: str | None
    eval_split: str
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for run.json."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "train_split": self.train_split,
            "eval_split": self.eval_split,
            "train_examples": len(self.train) if self.train is not None else None,
            "eval_examples": len(self.eval),
            "streaming": {"train": is_stream(self.train), "eval": is_stream(self.eval)},
            "notes": list(self.notes),
            "skipped_files": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def is_stream(source: Any) -> bool:
    """True for a split read sequentially (``StreamSplit``) rather than held in memory."""
    return source is not None and not isinstance(source, Examples)


def available_host_memory() -> int:
    """Bytes of host memory available now (MemAvailable), falling back to physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


#: Environment variable: bytes the data pipeline may hold (replaces the default quarter).
BUDGET_ENV = "VITZOO_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.25


def memory_budget(fraction: float = DEFAULT_FRACTION) -> int:
    """How much host memory a data cache may take: a fraction of what is available.

    ``VITZOO_MEMORY_BUDGET`` (bytes) pins the default budget, so a run (or a test) can
    force the streaming path or allow a bigger cache; other fractions scale with it.
    """
    pinned = os.environ.get(BUDGET_ENV, "").strip()
    if pinned:
        try:
            total = int(float(pinned))
        except ValueError:
            from vitzoo.errors import VitzooError

            raise VitzooError(f"{BUDGET_ENV}={pinned!r} is not a number of bytes",
                              f"e.g. {BUDGET_ENV}=8000000000, or unset it") from None
        return max(0, int(total * fraction / DEFAULT_FRACTION))
    return int(available_host_memory() * fraction)


def carve(n: int, fraction: float, labels: np.ndarray | None = None,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index split; stratified per class when labels are given.

    Independent of the run seed on purpose: the validation set must not change when
    the user changes ``--seed``. Each class with at least two examples gives at least
    one to validation and keeps at least one for training.
    """
    if not 0.0 < fraction < 1.0:
        from vitzoo.errors import VitzooError

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
