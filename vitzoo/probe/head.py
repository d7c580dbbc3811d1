"""``vitzoo finetune --head-only``: a new head on the frozen backbone, from cached features.

The head is the full-train linear probe of :mod:`vitzoo.probe.scores` (regularised least
squares to {-1, 1}^K targets, the regulariser chosen on a held-out 10 % per class of the
training split), rewritten as ``features @ kernel + bias`` on the raw pre-logit features,
then scaled by one softmax temperature fitted on that same held-out part (against
0.1-smoothed targets) so that
``predict``'s probabilities mean something (the scale does not change any argmax). No
backbone weight changes, so training costs one feature extraction (none when the probe
already cached the features) and one linear solve.

A multi-label dataset (``--task multilabel``) gets the multi-label probe's head
(:mod:`vitzoo.probe.multilabel`: ridge to {-1, 1} per class) with its regulariser chosen by
mAP, one sigmoid temperature fitted by binary cross-entropy against 0.1-smoothed targets, and
the F1 threshold chosen on the dataset's validation split (the images a full multi-label
fine-tune chooses its threshold on), so the head's sigmoid scores, its threshold and
``predict``/``evaluate`` behave as after ``finetune --task multilabel``.

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
from vitzoo.errors import VitzooError

#: ``finetune`` options a head-only run has no use for: it trains no weights by gradient steps
#: (no steps, schedule, learning rate, accumulation, label smoothing, periodic evaluation or
#: checkpoints, no data order to seed; the head is one linear solve). Given on the command line
#: with ``--head-only`` they are refused; ``run.json`` records none of them.
NOT_USED = ("steps", "warmup", "lr", "accum", "eval_every", "checkpoint_every", "log_every",
            "seed", "label_smoothing")
#: Recorded by neither: display only (no progress bar here) or not settable from the CLI.
NOT_RECORDED = (*NOT_USED, "progress", "momentum_dtype", "clip_norm")


def refuse_unused(given: list[str]) -> None:
    """One-line error naming the ``NOT_USED`` options that were given (``--steps``...), if any."""
    if given:
        raise VitzooError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --head-only "
            "(it fits a linear head on frozen features in one solve: no steps, learning rate, "
            "schedule or periodic evaluation)",
            "drop them, or fine-tune every weight without --head-only")


def recorded_options(options: Any) -> dict[str, Any]:
    """The options a head-only run used, for ``run.json`` (:data:`NOT_RECORDED` left out)."""
    return {k: v for k, v in options.as_dict().items() if k not in NOT_RECORDED}


def extraction_batch(options: Any, batch_given: bool) -> tuple[int, str]:
    """``(images per extraction batch, where that number comes from)`` for run.json.

    ``--batch`` given: that batch, as asked (rounded to the devices like every batch).
    Not given: the probe's extraction batch (:class:`~vitzoo.probe.run.ProbeSettings`), not
    finetune's default, which is a training batch (512): extraction pads its last batch to a
    whole one, so 512 would run up to eight times the forward work of 64 on a small dataset.
    """
    from vitzoo.probe.run import ProbeSettings

    if batch_given:
        return options.batch, "--batch"
    default = ProbeSettings.batch
    return default, (f"--batch not given: the probe's extraction batch ({default}); "
                     f"finetune's default ({options.batch}) is a training batch")


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
                 bias: np.ndarray, num_classes: int) -> dict[str, Any]:
    """What ``evaluate`` reports for the exported checkpoint, as run.json stores it.

    The evaluator (:class:`vitzoo.evaluators.features.HeadOnFeatures`) computes the head in
    float32 like the model's own ``head``, with the shared top-5 rule and names.
    """
    from vitzoo.evaluators import record_fields
    from vitzoo.evaluators.features import HeadOnFeatures

    return record_fields(HeadOnFeatures("eval", features, labels, num_classes).run((kernel, bias)))


def fit_head(features: np.ndarray, labels: np.ndarray, num_classes: int
             ) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """``(kernel, bias, l2, held-out accuracy, temperature)`` of the probe's full-train head."""
    from vitzoo.probe.scores import RidgePath, choose_l2, holdout_split

    fit, held = holdout_split(labels)
    path = RidgePath.fit(features[fit], labels[fit], num_classes)
    l2, held_acc = choose_l2(path, features[held], labels[held])
    k_fit, b_fit = path.head(l2)
    temperature = fit_temperature(features[held] @ k_fit + b_fit, labels[held])
    kernel, bias = RidgePath.fit(features, labels, num_classes).head(l2)
    return temperature * kernel, temperature * bias, l2, held_acc, temperature


SINGLE_LABEL_METHOD = (
    "linear probe on frozen pre-logit features: regularised least squares to {-1,1}^K targets, "
    "l2 chosen on a held-out 10% per class of the training split, softmax temperature fitted "
    "there against 0.1-smoothed targets; backbone unchanged")
MULTILABEL_METHOD = (
    "multi-label linear probe on frozen pre-logit features: regularised least squares to {-1,1} "
    "per class, l2 chosen by mAP on the validation split, one sigmoid temperature fitted there "
    "by binary cross-entropy against 0.1-smoothed targets, F1 threshold chosen there; backbone "
    "unchanged")


def fit_multilabel_head(fit_x: np.ndarray, fit_y: np.ndarray, held_x: np.ndarray,
                        held_y: np.ndarray) -> dict[str, Any]:
    """The multi-label head fitted on ``fit_*`` and tuned on ``held_*``: ``kernel``, ``bias``
    (temperature folded in), ``l2``, ``validation_map``, ``temperature``, ``threshold``."""
    from vitzoo.evaluators.multilabel_metrics import choose_threshold, numpy_loss, sigmoid
    from vitzoo.probe import multilabel

    path = multilabel.fit(fit_x, fit_y)
    l2, held_map = multilabel.choose_l2(path, held_x, held_y)
    kernel, bias = path.head(l2)
    outputs = np.asarray(held_x, np.float64) @ kernel + bias
    smoothed = np.asarray(held_y, np.float64) * (1 - SMOOTHING) + SMOOTHING / 2
    temperature = min(TEMPERATURES, key=lambda t: float(numpy_loss(t * outputs, smoothed).mean()))
    threshold = choose_threshold(sigmoid(temperature * outputs), held_y)
    return {"kernel": temperature * kernel, "bias": temperature * bias, "l2": l2,
            "validation_map": held_map, "temperature": temperature, "threshold": threshold}


def _multilabel_head(extractor: Any, data: Any, train: tuple[np.ndarray, np.ndarray],
                     evaluation: tuple[np.ndarray, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(kernel, bias, metrics) of a multi-label head: tuned on the dataset's validation split
    (a seeded 10 % of the training images when it has none)."""
    from vitzoo.evaluators.multilabel import MultiLabelHeadOnFeatures
    from vitzoo.evaluators.multilabel_metrics import RECORD_KEYS

    (train_x, train_y), (eval_x, eval_y) = train, evaluation
    if data.validation is not None:
        fit_set, held = (train_x, train_y), extractor.extract(data.validation).load()
    else:
        from vitzoo.data.source import carve
        from vitzoo.probe.scores import HOLDOUT_FRACTION

        keep, rows = carve(len(train_y), HOLDOUT_FRACTION)
        fit_set, held = (train_x[keep], train_y[keep]), (train_x[rows], train_y[rows])
    head = fit_multilabel_head(*fit_set, *held)
    evaluator = MultiLabelHeadOnFeatures("eval", eval_x, eval_y, head["threshold"])
    metrics = {RECORD_KEYS[k]: v for k, v in evaluator.run((head["kernel"], head["bias"]))}
    return head["kernel"], head["bias"], {
        **metrics, "validation_map": head["validation_map"], "l2": head["l2"],
        "temperature": head["temperature"]}


def _single_label_head(train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray],
                       num_classes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(kernel, bias, metrics) of the full-train linear probe's softmax head."""
    kernel, bias, l2, held_acc, temperature = fit_head(*train, num_classes)
    return kernel, bias, {**head_metrics(*evaluation, kernel, bias, num_classes),
                          "holdout_accuracy": held_acc, "l2": l2, "temperature": temperature}


def open_head_only_data(options: Any) -> Any:
    """The dataset of the head-only fine-tune ``options`` describes, after the cheap checks.

    For ``finetune --head-only``, which opens it before the resolution fit (that may download
    the checkpoint to learn its stride) and hands it to :func:`head_only_finetune`, so that
    a bad setting, run folder or dataset is one line before any download.
    """
    from vitzoo.adapt.options import default_workdir
    from vitzoo.adapt.runner import check_run_outputs
    from vitzoo.probe.run import open_probe_dataset

    options.validate()
    workdir = Path(options.workdir) if options.workdir else default_workdir(options)
    check_run_outputs(workdir, register=options.register)
    return open_probe_dataset(options.data_options())


def head_only_finetune(options: Any, *, batch_given: bool = True,
                       data: Any = None) -> HeadOnlyResult:
    """Train only a new head for ``options`` (a :class:`~vitzoo.adapt.options.FinetuneOptions`).

    ``batch_given``: whether ``options.batch`` was asked for (see :func:`extraction_batch`).
    ``data``: the dataset already opened (:func:`open_head_only_data`); None: opened here.
    """
    import jax

    from vitzoo.adapt.options import default_workdir
    from vitzoo.adapt.runner import check_run_outputs
    from vitzoo.backbone import distributed, start
    from vitzoo.data.preprocess import run_record
    from vitzoo.probe.features import Extractor, load_backbone, refuse_streamed_across_processes
    from vitzoo.probe.run import open_probe_dataset
    from vitzoo.runs.record import new_record, source_section, write_run_json
    from vitzoo.runs.registry import export_params, register, run_name

    t_start = time.perf_counter()
    options.validate()
    runtime = start(cluster=distributed.resolve(  # before JAX starts; several processes
        options.coordinator, options.num_processes, options.process_id))  # share extraction
    workdir = Path(options.workdir) if options.workdir else default_workdir(options)
    check_run_outputs(workdir, register=options.register)
    if data is None:
        data = open_probe_dataset(options.data_options())
    refuse_streamed_across_processes([data.train, data.eval, data.validation], jax.process_count())
    backbone = load_backbone(options.model, resolution=options.res)
    checkpoint = backbone.path
    batch, batch_from = extraction_batch(options, batch_given)
    extractor = Extractor(backbone, batch=batch, dtype=options.dtype)
    train = extractor.extract(data.train).load()
    evaluation = extractor.extract(data.eval).load()
    multilabel = data.task == "multilabel"
    kernel, bias, fitted = (_multilabel_head(extractor, data, train, evaluation) if multilabel
                            else _single_label_head(train, evaluation, data.num_classes))

    config = backbone.config  # the representation layer kept, the head replaced
    params = {**backbone.params, "head": {"kernel": kernel.astype(np.float32),
                                          "bias": bias.astype(np.float32)}}
    metrics = {**fitted, "head_only": True, "wall_time_s": time.perf_counter() - t_start}
    if not extractor.placement.is_main:  # every process holds the same head; one writes it
        return HeadOnlyResult(workdir, workdir / "final.npz", metrics, notes=list(data.notes))
    workdir.mkdir(parents=True, exist_ok=True)
    final_npz = export_params(workdir / "final.npz", params, config)
    with atomic_write(workdir / "metrics.jsonl", "w") as handle:
        handle.write(json.dumps({"step": 0, **metrics}) + "\n")
    name = run_name(workdir, options.name)
    record = new_record(
        "head_only", status="finished", options={**recorded_options(options), "batch": batch},
        source=source_section(options.model, checkpoint, config.name,
                              checkpoint_sha256=backbone.sha256),
        dataset=data.describe(), class_names=data.class_names, runtime=runtime,
        method=MULTILABEL_METHOD if multilabel else SINGLE_LABEL_METHOD,
        representation=backbone.representation,
        preprocessing=run_record(backbone.preprocessing, backbone.resolution, train=False),
        feature_extraction={"batch": extractor.global_batch, "batch_from": batch_from,
                            "dtype": extractor.dtype,
                            "devices": [str(d) for d in extractor.devices],
                            "processes": extractor.placement.process_count,
                            "matmul": extractor.forward.matmul_record()},
        final_metrics=metrics, final_npz=str(final_npz), catalog=None, run_name=name)
    write_run_json(workdir, record)  # complete before registering, which may fail
    eval_is_test = data.eval_split.startswith("test")
    record["catalog"] = register(name, final_npz, {
        "name": config.name, "filename": checkpoint.stem, "adapt_ds": options.dataset,
        "adapt_resolution": backbone.resolution, "adapt_steps": 0,
        ("adapt_final_test" if eval_is_test else "adapt_final_val"):
            metrics.get("eval_accuracy"),  # a multi-label head has mAP, not top-1
        "workdir": str(workdir.resolve()),
    }, workdir) if options.register else "not registered (--no-register)"
    write_run_json(workdir, record)
    return HeadOnlyResult(workdir, final_npz, metrics, notes=[*data.notes, record["catalog"]])
