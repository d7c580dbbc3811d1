"""A multi-label classifier on a split: mAP, F1 at a threshold chosen on validation, loss.

Average precision ranks every image of the split per class, so, unlike top-1, it cannot
be summed batch by batch: the step gathers each batch's logits from every device (and
process) and the host scores the whole split at once (:mod:`.multilabel_metrics`). The
logits of a split are ``examples x classes`` floats, small beside the images.

The F1 threshold is chosen on ``validation`` when the evaluator has one (a fine-tune: the
held-out training images), else taken as given (``evaluate``: the threshold the run
recorded). When the split reported is the validation split itself, the F1 is the one
the threshold was chosen on, and the run's notes say so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vitzoo.evaluators.multilabel_metrics import (
    DEFAULT_THRESHOLD,
    choose_threshold,
    multilabel_metrics,
    sigmoid,
)

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.data import Layout, Preprocess, Split


def make_logits_step(apply_fn: Callable[..., Any], *, pmap: bool = True) -> Callable[..., Any]:
    """``step(params, batch) -> {"logits", "label", "mask"}`` of the global batch (all-gathered)."""
    import jax
    import jax.numpy as jnp

    from vitzoo.backbone.devices import AXIS

    def logits_of(params: Any, batch: dict[str, Any]) -> dict[str, Any]:
        logits = apply_fn({"params": params}, batch["image"], train=False).astype(jnp.float32)
        rows = {"logits": logits, "label": batch["label"], "mask": batch["mask"]}
        return jax.lax.all_gather(rows, AXIS, tiled=True) if pmap else rows

    return jax.pmap(logits_of, axis_name=AXIS) if pmap else jax.jit(logits_of)


def split_logits(step: Callable[..., Any], params: Any, batches: Iterable[dict[str, np.ndarray]],
                 devices: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, K], targets [N, K])`` of every real (unmasked) example of the split."""
    from vitzoo.backbone.devices import shard, unreplicate

    logits, targets = [], []
    for batch in batches:
        rows = {k: np.asarray(unreplicate(v)) for k, v in step(params, shard(batch, devices)).items()}
        keep = rows["mask"].astype(bool)
        logits.append(rows["logits"][keep])
        targets.append(rows["label"][keep])
    return np.concatenate(logits), np.concatenate(targets)


class MultiLabel:
    """``map``, ``f1``, ``threshold``, ``loss`` and ``examples`` of a multi-label classifier.

    ``validation``: the split whose F1 chooses the threshold (None: use ``threshold``).
    :attr:`probabilities` keeps the last run's sigmoid scores (``evaluate``'s per-class rows).
    ``step``: the step to run instead of a fresh :func:`make_logits_step` of ``apply_fn``
    (``evaluate`` passes a matrix-product race over such steps,
    :mod:`vitzoo.backbone.forward_tune`); it must return the same rows.
    """

    def __init__(self, name: str, apply_fn: Callable[..., Any], split: Split, *,
                 recipe: Preprocess, layout: Layout, devices: Sequence[Any],
                 validation: Split | None = None, threshold: float = DEFAULT_THRESHOLD,
                 step: Callable[..., Any] | None = None) -> None:
        self.name = name
        self.devices = list(devices)
        self.threshold = threshold
        self._step = step if step is not None else make_logits_step(apply_fn)
        self._batches = split.eval_batches(recipe, layout)
        self._validation = (None if validation is None or validation is split
                            else validation.eval_batches(recipe, layout))
        self._choose_on_eval = validation is split
        self.probabilities = np.zeros((0, 0))
        self.targets = np.zeros((0, 0))

    def run(self, params: Any) -> Iterator[tuple[str, float | int | None]]:
        logits, targets = split_logits(self._step, params, self._batches, self.devices)
        if self._validation is not None:
            self.threshold = choose_threshold(
                *_probabilities(split_logits(self._step, params, self._validation, self.devices)))
        elif self._choose_on_eval:
            self.threshold = choose_threshold(sigmoid(logits), targets)
        self.probabilities, self.targets = sigmoid(logits), targets
        yield from multilabel_metrics(logits, targets, self.threshold).items()


class MultiLabelHeadOnFeatures:
    """A multi-label head ``(kernel [D, K], bias [K])`` on one split's cached features: the
    :class:`MultiLabel` metrics at a given ``threshold``, without a forward pass (the logits
    are :class:`~vitzoo.evaluators.features.HeadOnFeatures`'s float32 head)."""

    def __init__(self, name: str, features: np.ndarray, targets: np.ndarray,
                 threshold: float) -> None:
        from vitzoo.evaluators.features import HeadOnFeatures

        self.name, self.threshold = name, threshold
        self._head = HeadOnFeatures(name, features, targets, np.shape(targets)[1])

    def run(self, head: tuple[Any, Any]) -> Iterator[tuple[str, float | int | None]]:
        yield from multilabel_metrics(self._head.logits(head), self._head.labels,
                                      self.threshold).items()


def _probabilities(pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return sigmoid(pair[0]), pair[1]


def per_class(probabilities: np.ndarray, targets: np.ndarray, class_names: list[str],
              threshold: float) -> list[dict[str, Any]]:
    """Per class: positives, average precision and F1 at ``threshold`` (None where undefined)."""
    from vitzoo.evaluators.multilabel_metrics import average_precision, f1_score

    return [{"index": k, "class": name, "positives": int(targets[:, k].sum()),
             "ap": average_precision(probabilities[:, k], targets[:, k]),
             "f1": f1_score(probabilities[:, k], targets[:, k], threshold)}
            for k, name in enumerate(class_names)]
