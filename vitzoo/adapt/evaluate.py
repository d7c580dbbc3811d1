"""``vitzoo evaluate``: top-1, top-5, loss and per-class accuracy of a checkpoint on a dataset.

The checkpoint is loaded through the backbone layer (:mod:`vitzoo.backbone`) and scored by
the same evaluator as a fine-tune's periodic evaluation
(:class:`vitzoo.evaluators.classification.Classification`), so a number from ``evaluate``
and the final ``eval_accuracy`` of a run agree exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vitzoo.errors import VitzooError


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
    from vitzoo.evaluators.classification import Classification
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
    with _tuned_products(backbone, data.eval, batch, dtype, placement) as matmul:
        if data.task == "multilabel":
            report = _multilabel(backbone, data, head.threshold, dtype=dtype,
                                 placement=placement, layout=layout, per_class=per_class)
            report.matmul = matmul
            return report
        evaluator = Classification(data.eval_split, backbone.module(dtype).apply, data.eval,
                                   recipe=backbone.eval_recipe(), layout=layout,
                                   devices=placement.devices, num_classes=data.num_classes)
        metrics = dict(evaluator.run(placement.replicate(backbone.params)))
    notes = list(data.notes)
    if (note := dataset_disagreement(names, data.name, data.class_names)) is not None:
        notes.append(note)
    return EvalReport(
        checkpoint=str(backbone.path), architecture=backbone.config.name, dataset=data.name,
        split=data.eval_split, resolution=backbone.resolution, examples=metrics["examples"],
        top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"],
        per_class=per_class_rows(evaluator.sums, data.class_names) if per_class else [],
        notes=notes, matmul=matmul)


@contextlib.contextmanager
def _tuned_products(backbone: Any, examples: Any, batch: int, dtype: str,
                    placement: Any) -> Iterator[dict[str, Any]]:
    """Trace the evaluator with the matrix-product backend measured fastest for this forward.

    The forward autotune (:mod:`vitzoo.backbone.forward_tune`) decides on the backbone's
    own forward at these shapes (a remembered answer, or a trial when the split is worth
    it); the evaluator's program is the same model, so it takes the same backend. Yields
    the record the report keeps.
    """
    from vitzoo.backbone import Forward

    try:
        batches = math.ceil(len(examples) / placement.layout(batch).global_batch)
    except TypeError:  # a streamed split of unknown length: large enough
        batches = None
    tuning = Forward(backbone, batch=batch, dtype=dtype, placement=placement,
                     batches=batches).tune()  # the probe's forward: dropped once decided
    with tuning.applied(dtype):
        yield tuning.record(dtype)


def _multilabel(backbone: Any, data: Any, threshold: float, *, dtype: str, placement: Any,
                layout: Any, per_class: bool) -> EvalReport:
    """mAP, F1 at the recorded ``threshold``, loss; per class AP and F1 with ``per_class``."""
    from vitzoo.evaluators.multilabel import MultiLabel
    from vitzoo.evaluators.multilabel import per_class as per_class_rows

    evaluator = MultiLabel(data.eval_split, backbone.module(dtype).apply, data.eval,
                           recipe=backbone.eval_recipe(), layout=layout,
                           devices=placement.devices, threshold=threshold)
    metrics = dict(evaluator.run(placement.replicate(backbone.params)))
    rows = per_class_rows(evaluator.probabilities, evaluator.targets, data.class_names,
                          threshold) if per_class else []
    return EvalReport(
        checkpoint=str(backbone.path), architecture=backbone.config.name, dataset=data.name,
        split=data.eval_split, resolution=backbone.resolution, examples=metrics["examples"],
        top1=None, top5=None, loss=metrics["loss"], per_class=rows, notes=list(data.notes),
        task="multilabel", map=metrics["map"], f1=metrics["f1"], macro_f1=metrics["macro_f1"],
        threshold=metrics["threshold"])
