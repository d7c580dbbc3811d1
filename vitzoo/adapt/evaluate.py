"""``vitzoo evaluate``: top-1, top-5, loss and per-class accuracy of a checkpoint on a dataset.

The checkpoint is loaded through the backbone layer (:mod:`vitzoo.backbone`) and scored by
the same evaluator as a fine-tune's periodic evaluation
(:class:`vitzoo.evaluators.classification.Classification`), so a number from ``evaluate``
and the final ``eval_accuracy`` of a run agree exactly.
"""

from __future__ import annotations

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
    top1: float
    top5: float | None  # None for five classes or fewer
    loss: float
    per_class: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def evaluate(checkpoint: str, dataset: str, *, split: str | None = None, res: int | None = None,
             batch: int = 64, per_class: bool = False, data_dir: str | None = None,
             manual_dir: str | None = None, val_fraction: float = 0.1,
             dtype: str = "float32", stream: bool = False, gcs_auth: bool = False) -> EvalReport:
    """Evaluate ``checkpoint`` (path or catalog/local-run name) on ``dataset``'s ``split``.

    ``split`` None means the held-out split a fine-tune would use (test, validation, or
    the carved validation split). ``res`` defaults to the checkpoint's own resolution.
    A TFDS split larger than the memory budget is streamed (``stream=True`` forces it).
    """
    from vitzoo.backbone import Placement, check_dtype, load, start

    start()  # XLA flags, host devices, compile cache: before JAX starts
    from vitzoo.data import open_dataset
    from vitzoo.evaluators.classification import Classification
    from vitzoo.evaluators.metrics import per_class as per_class_rows
    from vitzoo.weights.facts import dataset_disagreement, find_labels

    check_dtype(dtype)
    placement = Placement.here()
    layout = placement.layout(batch)
    data = open_dataset(dataset, eval_split=split, data_dir=data_dir, manual_dir=manual_dir,
                        val_fraction=val_fraction, need_train=False,
                        stream=True if stream else None, gcs_auth=gcs_auth)
    backbone = load(checkpoint, resolution=res)
    if backbone.num_classes != data.num_classes:
        raise VitzooError(
            f"{backbone.path.name} has a {backbone.num_classes}-class head but {dataset} has "
            f"{data.num_classes} classes", "evaluate a checkpoint fine-tuned on this dataset")
    labels = find_labels(backbone.path, data.num_classes)  # a names file that does not fit fails now
    evaluator = Classification(data.eval_split, backbone.module(dtype).apply, data.eval,
                               resolution=backbone.resolution, layout=layout,
                               devices=placement.devices, num_classes=data.num_classes)
    metrics = dict(evaluator.run(placement.replicate(backbone.params)))
    notes = list(data.notes)
    if (note := dataset_disagreement(labels, data.name, data.class_names)) is not None:
        notes.append(note)
    return EvalReport(
        checkpoint=str(backbone.path), architecture=backbone.config.name, dataset=data.name,
        split=data.eval_split, resolution=backbone.resolution, examples=metrics["examples"],
        top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"],
        per_class=per_class_rows(evaluator.sums, data.class_names) if per_class else [],
        notes=notes)
