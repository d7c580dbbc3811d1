"""A linear head on cached features: the head-only run's metrics, without a forward pass.

``features @ kernel + bias`` in float32 is exactly what the model's own ``head`` computes
on its pre-logits (:mod:`vitzoo.models`), so these numbers are what ``vitzoo evaluate``
reports for the exported checkpoint, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from vitzoo.evaluators.metrics import metrics_from_sums, numpy_sums


class HeadOnFeatures:
    """Evaluates a head ``(kernel [D, K], bias [K])`` on one split's features and labels."""

    def __init__(self, name: str, features: np.ndarray, labels: np.ndarray,
                 num_classes: int) -> None:
        self.name = name
        self.features = np.asarray(features, np.float32)
        self.labels = np.asarray(labels)
        self.num_classes = num_classes

    def logits(self, head: tuple[Any, Any]) -> np.ndarray:
        kernel, bias = head
        return self.features @ np.asarray(kernel, np.float32) + np.asarray(bias, np.float32)

    def run(self, head: tuple[Any, Any]) -> Iterator[tuple[str, float | int | None]]:
        sums = numpy_sums(self.logits(head), self.labels, self.num_classes)
        yield from metrics_from_sums(sums, self.num_classes).items()
