"""``vitzoo evaluate``: top-1, top-5, loss and per-class accuracy of a checkpoint on a dataset.

Uses the same pieces as training (dataset sources, the eval recipe, the pmapped masked
eval step), so a number from ``evaluate`` and the final ``eval_accuracy`` of a run agree
exactly. The whole split is covered once: the last batch is padded and masked.
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
    from vitzoo import runtime

    runtime.configure()  # XLA flags, host devices, compile cache: before JAX starts
    runtime.require_accelerator()  # a GPU/TPU JAX cannot use stops here (--allow-cpu)
    import jax
    import jax.numpy as jnp

    from vitzoo.adapt.devices import replicate
    from vitzoo.adapt.eval_sums import eval_means, eval_totals
    from vitzoo.adapt.steps import make_eval_step
    from vitzoo.data import Layout, eval_recipe, open_dataset
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.models import build_model
    from vitzoo.weights.facts import dataset_disagreement, find_labels
    from vitzoo.weights.release import load_checkpoint, load_for_finetune

    if batch < 1:
        raise VitzooError(f"--batch must be positive, got {batch}")
    data = open_dataset(dataset, eval_split=split, data_dir=data_dir, manual_dir=manual_dir,
                        val_fraction=val_fraction, need_train=False,
                        stream=True if stream else None, gcs_auth=gcs_auth)
    path = resolve_checkpoint(checkpoint)
    config, info, params = load_checkpoint(path)
    if info["num_classes"] != data.num_classes:
        raise VitzooError(
            f"{path.name} has a {info['num_classes']}-class head but {dataset} has "
            f"{data.num_classes} classes", "evaluate a checkpoint fine-tuned on this dataset")
    labels = find_labels(path, data.num_classes)  # a names file that does not fit fails now
    resolution = res or info["resolution"]
    if resolution != info["resolution"]:
        config, params = load_for_finetune(path, num_classes=data.num_classes,
                                           resolution=resolution, keep_representation=True)
    module = build_model(config, data.num_classes,
                         dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    devices = jax.local_devices()
    global_batch = max(len(devices), batch - batch % len(devices))
    layout = Layout(global_batch, local_devices=len(devices))
    step = make_eval_step(module.apply, num_classes=data.num_classes)
    batches = data.eval.eval_batches(eval_recipe(resolution), layout)
    host = eval_totals(step, replicate(params, devices), batches, devices)
    means = eval_means(host, data.num_classes)
    notes = list(data.notes)
    if (note := dataset_disagreement(labels, data.name, data.class_names)) is not None:
        notes.append(note)
    classes = []
    if per_class:
        for i, name in enumerate(data.class_names):
            n = int(host["class_count"][i])
            classes.append({"index": i, "class": name, "examples": n,
                            "accuracy": float(host["class_hits"][i]) / n if n else None})
    return EvalReport(
        checkpoint=str(path), architecture=config.name, dataset=data.name, split=data.eval_split,
        resolution=resolution, examples=means["eval_examples"], top1=means["eval_accuracy"],
        top5=means["eval_top5"], loss=means["eval_loss"], per_class=classes,
        notes=notes)
