"""Evaluators: one protocol over a split, yielding named metrics.

Periodic evaluation during fine-tuning, ``vitzoo evaluate``, the head-only run's and the probe's
metrics are all evaluators (after big_vision's ``evaluators/common.py``): the caller does
not know what they compute, it iterates ``(name, value)`` pairs. The protocol is
:class:`Evaluator`::

    class Evaluator(Protocol):
        name: str                                    # which split, e.g. "eval" or "test"
        def run(self, subject) -> Iterator[tuple[str, float | int | None]]: ...

``subject`` is what is evaluated: replicated device parameters for a model evaluator
(:class:`~vitzoo.evaluators.classification.Classification`), a linear head
``(kernel, bias)`` for :class:`~vitzoo.evaluators.features.HeadOnFeatures`. The probe's
scores are "features -> named metrics" evaluators too
(:class:`vitzoo.probe.scores.ProbeScores`, one per side: the validation part that chooses
and the evaluation split that reports): built from cached features, ``run()`` takes no
subject and yields ``examples``, ``linear_top1``, ``knn_top1``, ``fewshot_K_top1``,
fractions like every other metric (a multi-label dataset's:
:class:`vitzoo.probe.multilabel.MultiLabelProbeScores`, ``linear_map`` and ``knn_map``).

A multi-label classifier is :class:`~vitzoo.evaluators.multilabel.MultiLabel`: its names are
``map``, ``f1``, ``macro_f1``, ``threshold``, ``loss``, ``examples`` (stored as ``eval_map``...),
and its facts (sigmoid loss, average precision, micro and macro F1 and the threshold chosen on
validation) live in :mod:`vitzoo.evaluators.multilabel_metrics`; a multi-label head on cached
features is :class:`~vitzoo.evaluators.multilabel.MultiLabelHeadOnFeatures`.

What is decided here, once (:mod:`vitzoo.evaluators.metrics`):

* the names: ``top1``, ``top5``, ``loss``, ``examples`` (:data:`METRICS`);
* the top-5 rule: ``top5`` is ``None`` (JSON null) for five classes or fewer, where it
  would be 1.0 by construction (:func:`top5_applies`);
* the units: fractions in [0, 1] (percentages only where a person reads them);
* the loss: mean softmax cross-entropy of the float32 logits (:func:`cross_entropy`);
* how metrics are stored in ``metrics.jsonl``/``run.json`` (``eval_accuracy``,
  ``eval_top5``, ``eval_loss``, ``eval_examples``: :func:`record_fields`), the keys that
  resume and the catalog read.
"""

from __future__ import annotations

from vitzoo.evaluators.metrics import (
    METRICS,
    Evaluator,
    cross_entropy,
    metrics_from_sums,
    numpy_sums,
    record_fields,
    run_all,
    top5_applies,
)

__all__ = ["METRICS", "Evaluator", "cross_entropy", "metrics_from_sums", "numpy_sums",
           "record_fields", "run_all", "top5_applies"]
