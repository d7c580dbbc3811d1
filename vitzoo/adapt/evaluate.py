"""``vitzoo evaluate``: top-1, top-5, loss and per-class accuracy of a checkpoint on a dataset.

The checkpoint is loaded through the backbone layer (:mod:`vitzoo.backbone`) and scored by
the same evaluator as a fine-tune's periodic evaluation
(:class:`vitzoo.evaluators.classification.Classification`), so a number from ``evaluate``
and the final ``eval_accuracy`` of a run agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.backbone.forward_tune import Tuning


@dataclass
class EvalReport:
    checkpoint: str
    architecture: str
    dataset: str
    split: str
    resolution: int
    examples: int
    top1: float | None  # None for a multi-label head
    top5: float | None  # None for five classes or fewer, or a multi-label head
    loss: float
    per_class: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    task: str = "multiclass"
    map: float | None = None  # multi-label: mean average precision
    f1: float | None = None  # multi-label: micro F1 at ``threshold``
    macro_f1: float | None = None  # multi-label: mean per-class F1 at ``threshold``
    threshold: float | None = None
    #: The matrix-product backend of the evaluation and why (the forward autotune's record).
    matmul: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def evaluate(checkpoint: str, dataset: str, *, split: str | None = None, res: int | None = None,
             batch: int = 64, per_class: bool = False, data_dir: str | None = None,
             manual_dir: str | None = None, val_fraction: float = 0.1,
             dtype: str = "float32", stream: bool = False, gcs_auth: bool = False,
             task: str = "multiclass", labels: str | None = None) -> EvalReport:
    """Evaluate ``checkpoint`` (path or catalog/local-run name) on ``dataset``'s ``split``.

    ``split`` None means the held-out split a fine-tune would use (test, validation, or
    the carved validation split). ``res`` defaults to the checkpoint's own resolution.
    A TFDS split larger than the memory budget is streamed (``stream=True`` forces it).

    A multi-label head (recorded beside the checkpoint, or ``task="multilabel"``) is scored
    by mAP and by F1 at the threshold its fine-tune chose on validation (:func:`_multilabel`).
    """
    from vitzoo.backbone import Placement, check_dtype, load, start

    start()  # XLA flags, host devices, compile cache: before JAX starts
    from vitzoo.data import check_named, open_dataset
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.evaluators.classification import Classification, make_eval_step
    from vitzoo.evaluators.metrics import per_class as per_class_rows
    from vitzoo.weights.facts import dataset_disagreement, find_labels
    from vitzoo.weights.task import head_task

    check_dtype(dtype)
    placement = Placement.here()
    layout = placement.layout(batch)
    check_named(dataset, data_dir=data_dir, gcs_auth=gcs_auth)  # a typo: before the download
    path = resolve_checkpoint(checkpoint)  # its head's task decides how the dataset is read
    head = head_task(path)
    data = open_dataset(dataset, eval_split=split, data_dir=data_dir, manual_dir=manual_dir,
                        val_fraction=val_fraction, need_train=False,
                        stream=True if stream else None, gcs_auth=gcs_auth,
                        task=head.task if head.multilabel else task, labels=labels)
    backbone = load(path, resolution=res)
    if backbone.num_classes != data.num_classes:
        raise VitzooError(
            f"{backbone.path.name} has a {backbone.num_classes}-class head but {dataset} has "
            f"{data.num_classes} classes", "evaluate a checkpoint fine-tuned on this dataset")
    names = find_labels(backbone.path, data.num_classes)  # a names file that does not fit fails now
    if data.task == "multilabel":
        return _multilabel(backbone, data, head.threshold, dtype=dtype, placement=placement,
                           layout=layout, per_class=per_class)
    apply = backbone.module(dtype).apply
    step, tuning = _tuned_step(
        "evaluate", lambda: make_eval_step(apply, num_classes=data.num_classes),
        backbone, data.eval, dtype=dtype, placement=placement, layout=layout)
    evaluator = Classification(data.eval_split, apply, data.eval,
                               recipe=backbone.eval_recipe(), layout=layout,
                               devices=placement.devices, num_classes=data.num_classes, step=step)
    with tuning.applied(dtype):  # without a race, the step is traced here at its first batch
        metrics = dict(evaluator.run(placement.replicate(backbone.params)))
    notes = list(data.notes)
    if (note := dataset_disagreement(names, data.name, data.class_names)) is not None:
        notes.append(note)
    return EvalReport(
        checkpoint=str(backbone.path), architecture=backbone.config.name, dataset=data.name,
        split=data.eval_split, resolution=backbone.resolution, examples=metrics["examples"],
        top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"],
        per_class=per_class_rows(evaluator.sums, data.class_names) if per_class else [],
        notes=notes, matmul=tuning.record(dtype))


def _tuned_step(program: str, make_step: Callable[[], Callable[..., Any]], backbone: Any,
                examples: Any, *, dtype: str, placement: Any, layout: Any
                ) -> tuple[Callable[..., Any], Tuning]:
    """The evaluator's own step, and the matrix-product backend it runs with.

    The forward autotune (:mod:`vitzoo.backbone.forward_tune`) decides on this program at
    these shapes: a remembered answer or a rule (the step is traced inside
    :meth:`~vitzoo.backbone.forward_tune.Tuning.applied` at its first batch), or a race
    that computes the split's first batches with each backend in turn and keeps the
    winner's compiled step. The trial is the evaluation's own work, at the price of one
    more compile, and no other forward (nor a second copy of the parameters on the
    devices) is built for it. The returned :class:`Tuning` is filled in once the run ends
    (a split too short to finish the race leaves it ``pending``).
    """
    from vitzoo.backbone import forward_tune

    try:
        batches = math.ceil(len(examples) / layout.global_batch)
    except TypeError:  # a split of unknown length: large enough
        batches = None
    job = forward_tune.Job(program, backbone.config, backbone.resolution, layout.per_device,
                           layout.local_devices, dtype, placement.process_count)
    tuning, race = forward_tune.decide(job, make_step, batches=batches)
    return (race if race is not None else make_step()), tuning


def _multilabel(backbone: Any, data: Any, threshold: float, *, dtype: str, placement: Any,
                layout: Any, per_class: bool) -> EvalReport:
    """mAP, F1 at the recorded ``threshold``, loss; per class AP and F1 with ``per_class``."""
    from vitzoo.evaluators.multilabel import MultiLabel, make_logits_step
    from vitzoo.evaluators.multilabel import per_class as per_class_rows

    apply = backbone.module(dtype).apply
    step, tuning = _tuned_step("evaluate multilabel", lambda: make_logits_step(apply),
                               backbone, data.eval, dtype=dtype, placement=placement,
                               layout=layout)
    evaluator = MultiLabel(data.eval_split, apply, data.eval, recipe=backbone.eval_recipe(),
                           layout=layout, devices=placement.devices, threshold=threshold,
                           step=step)
    with tuning.applied(dtype):  # without a race, the step is traced here at its first batch
        metrics = dict(evaluator.run(placement.replicate(backbone.params)))
    rows = per_class_rows(evaluator.probabilities, evaluator.targets, data.class_names,
                          threshold) if per_class else []
    return EvalReport(
        checkpoint=str(backbone.path), architecture=backbone.config.name, dataset=data.name,
        split=data.eval_split, resolution=backbone.resolution, examples=metrics["examples"],
        top1=None, top5=None, loss=metrics["loss"], per_class=rows, notes=list(data.notes),
        task="multilabel", map=metrics["map"], f1=metrics["f1"], macro_f1=metrics["macro_f1"],
        threshold=metrics["threshold"], matmul=tuning.record(dtype))
