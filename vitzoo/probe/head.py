"""``vitzoo finetune --head-only``: a new head on the frozen backbone, from cached features.

The head is the full-train linear probe of :mod:`vitzoo.probe.scores` (regularised least
squares to {-1, 1}^K targets, the regulariser chosen on a held-out 10 % per class of the
training split), rewritten as ``features @ kernel + bias`` on the raw pre-logit features,
then scaled by one softmax temperature fitted on that same held-out part (against
0.1-smoothed targets) so that
``predict``'s probabilities mean something (the scale does not change any argmax). No
backbone weight changes, so training costs one feature extraction (none when the probe
already cached the features) and one linear solve.

The outputs are those of a full fine-tune: ``final.npz`` (backbone, its representation
layer if any, and the new head, in the release layout), ``run.json`` (``head_only: true``,
the method, class names, metrics), ``metrics.jsonl`` and a local-catalog entry, so
``predict``, ``evaluate`` and ``export`` work on it unchanged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.atomic import atomic_write

#: Softmax temperatures tried on the held-out part (the scale of a least-squares head).
TEMPERATURES = tuple(float(t) for t in np.logspace(-1, 5, 61))
SMOOTHING = 0.1


@dataclass
class HeadOnlyResult:
    workdir: Path
    final_npz: Path
    final_metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0) -> float:
    """Mean cross-entropy against one-hot targets smoothed by ``smoothing``."""
    logp = _log_softmax(np.asarray(logits, np.float64))
    picked = logp[np.arange(len(labels)), labels]
    return float(-np.mean((1 - smoothing) * picked + smoothing * logp.mean(axis=1)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (from :data:`TEMPERATURES`) with the lowest held-out log loss.

    Against targets smoothed by :data:`SMOOTHING`: on a held-out part the probe separates
    perfectly, plain log loss falls forever as the temperature grows, and the head would
    be infinitely confident on the images it gets wrong.
    """
    return min(TEMPERATURES, key=lambda t: nll(t * logits, labels, SMOOTHING))


def head_metrics(features: np.ndarray, labels: np.ndarray, kernel: np.ndarray,
                 bias: np.ndarray) -> dict[str, Any]:
    """What ``evaluate`` reports, computed in float32 like the model's own head."""
    logits = features.astype(np.float32) @ kernel.astype(np.float32) + bias.astype(np.float32)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {"eval_accuracy": float(np.mean(np.argmax(logits, 1) == labels)),
            "eval_top5": float(np.mean((top5 == labels[:, None]).any(axis=1))),
            "eval_loss": nll(logits, labels), "eval_examples": len(labels)}


def head_only_finetune(options: Any) -> HeadOnlyResult:
    """Train only a new head for ``options`` (a :class:`~vitzoo.adapt.options.FinetuneOptions`)."""
    from vitzoo import runtime
    from vitzoo.adapt.options import default_workdir
    from vitzoo.adapt.runner import check_run_outputs
    from vitzoo.data import eval_recipe
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.probe.features import Extractor, load_backbone
    from vitzoo.probe.run import open_probe_dataset
    from vitzoo.probe.scores import RidgePath, choose_l2, holdout_split
    from vitzoo.runs.record import new_record, source_section, write_run_json
    from vitzoo.runs.registry import export_params, register, run_name
    from vitzoo.weights.release import load_for_finetune

    t_start = time.perf_counter()
    options.validate()
    speed = runtime.configure()  # XLA flags, host devices, compile cache: before JAX starts
    runtime.require_accelerator()  # a GPU/TPU JAX cannot use stops here (--allow-cpu)
    workdir = Path(options.workdir) if options.workdir else default_workdir(options)
    check_run_outputs(workdir, register=options.register)
    data = open_probe_dataset(options.data_options())
    checkpoint = resolve_checkpoint(options.model)
    backbone = load_backbone(checkpoint, resolution=options.res)
    extractor = Extractor(backbone, batch=min(options.batch, 64), dtype=options.dtype)
    train_x, train_y = extractor.extract(data.train).load()
    eval_x, eval_y = extractor.extract(data.eval).load()

    fit, held = holdout_split(train_y)
    path = RidgePath.fit(train_x[fit], train_y[fit], data.num_classes)
    l2, held_acc = choose_l2(path, train_x[held], train_y[held])
    k_fit, b_fit = path.head(l2)
    temperature = fit_temperature(train_x[held] @ k_fit + b_fit, train_y[held])
    kernel, bias = RidgePath.fit(train_x, train_y, data.num_classes).head(l2)
    kernel, bias = temperature * kernel, temperature * bias

    config, params = load_for_finetune(checkpoint, num_classes=data.num_classes,
                                       resolution=backbone.resolution, keep_representation=True)
    params = {**params, "head": {"kernel": kernel.astype(np.float32),
                                 "bias": bias.astype(np.float32)}}
    metrics = {**head_metrics(eval_x, eval_y, kernel, bias), "head_only": True,
               "holdout_accuracy": held_acc, "l2": l2, "temperature": temperature,
               "wall_time_s": time.perf_counter() - t_start}
    workdir.mkdir(parents=True, exist_ok=True)
    final_npz = export_params(workdir / "final.npz", params, config)
    with atomic_write(workdir / "metrics.jsonl", "w") as handle:
        handle.write(json.dumps({"step": 0, **metrics}) + "\n")
    name = run_name(workdir, options.name)
    record = new_record(
        "head_only", status="finished", options=options.as_dict(),
        source=source_section(options.model, checkpoint, config.name,
                              checkpoint_sha256=backbone.sha256),
        dataset=data.describe(), class_names=data.class_names, runtime=speed,
        method=("linear probe on frozen pre-logit features: regularised least squares to "
                "{-1,1}^K targets, l2 chosen on a held-out 10% per class of the training "
                "split, softmax temperature fitted there against 0.1-smoothed targets; "
                "backbone unchanged"),
        representation=backbone.representation,
        preprocessing={"eval": eval_recipe(backbone.resolution).as_dict()},
        feature_extraction={"batch": extractor.global_batch, "dtype": extractor.dtype,
                            "devices": [str(d) for d in extractor.devices]},
        final_metrics=metrics, final_npz=str(final_npz), catalog=None, run_name=name)
    write_run_json(workdir, record)  # complete before registering, which may fail
    eval_is_test = data.eval_split.startswith("test")
    record["catalog"] = register(name, final_npz, {
        "name": config.name, "filename": checkpoint.stem, "adapt_ds": options.dataset,
        "adapt_resolution": backbone.resolution, "adapt_steps": 0,
        ("adapt_final_test" if eval_is_test else "adapt_final_val"): metrics["eval_accuracy"],
        "workdir": str(workdir.resolve()),
    }, workdir) if options.register else "not registered (--no-register)"
    write_run_json(workdir, record)
    return HeadOnlyResult(workdir, final_npz, metrics, notes=[*data.notes, record["catalog"]])
