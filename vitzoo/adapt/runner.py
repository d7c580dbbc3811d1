"""``vitzoo finetune``: from a checkpoint name and a dataset to a model, as one short story.

:func:`run` reads top to bottom: prepare the data, prepare the model and its state (or
resume), plan the batch, run the train loop, export and register. The order is chosen so
that mistakes surface cheaply: settings and the run folder are checked, then the dataset
is opened (bad names and folders fail here, before the runtime's autotune trial, any
checkpoint download or compile), then the checkpoint is resolved and loaded, and only then
is anything compiled. A caller that must resolve the checkpoint earlier (``launch``, for
the stride the default resolution is rounded to) opens the data first
(:func:`open_run_data`) and passes it in. Each concern has its own module: timing
(:mod:`~vitzoo.adapt.throughput`), "is it time" (:mod:`~vitzoo.adapt.cadence`), the run
record and registration (:mod:`vitzoo.runs`), resume (:mod:`~vitzoo.adapt.resume`), prefetching
(:mod:`~vitzoo.adapt.prefetch`) and Ctrl-C (:mod:`~vitzoo.adapt.signals`).

Resume: a ``checkpoint.npz`` in the workdir whose recorded settings match is picked up
automatically; the data order is a function of (seed, step) and the dropout key of
(seed, step, device), so a resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.adapt import train_state
from vitzoo.adapt.options import FinetuneOptions

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.adapt.accumulation import BatchPlan
    from vitzoo.adapt.metrics import MetricsWriter
    from vitzoo.adapt.progress import Display
    from vitzoo.adapt.throughput import TrainWindow
    from vitzoo.data import DataSplits, Layout, Preprocess, Preprocessing
    from vitzoo.models.configs import ModelConfig

log = logging.getLogger("vitzoo.adapt")


@dataclass
class RunResult:
    """What :func:`finetune` returns."""

    workdir: Path
    step: int
    total_steps: int
    final_npz: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class _Model:
    """The loaded checkpoint: where it came from, its architecture, weights and module."""

    checkpoint: Path
    config: ModelConfig
    params: Any
    module: Any
    preprocessing: Preprocessing  # the checkpoint's rule: training and evaluation pixels


@dataclass
class _Setup:
    """What the run settled before training: settings, data, model and batch layout."""

    options: FinetuneOptions
    workdir: Path
    is_main: bool
    display: Display
    data: DataSplits
    model: _Model
    batch_plan: BatchPlan
    layout: Layout
    notes: list[str]
    runtime: dict[str, Any]  # XLA flags, host devices and compile cache chosen (runtime.py)


@dataclass
class _Loop:
    """Everything the train loop calls, built once before it starts."""

    options: FinetuneOptions
    train_step: Callable[..., Any]
    evaluate: Callable[[Any], dict[str, float]]
    save: Callable[..., None]
    key: Any
    display: Display
    writer: MetricsWriter
    throughput: TrainWindow


def finetune(model: str, dataset: str, **kwargs: Any) -> RunResult:
    """Fine-tune ``model`` (architecture, catalog name, path or URL) on ``dataset``.

    ``dataset`` is a TFDS name (``oxford_iiit_pet``, ``cifar100:3.*``) or an image folder.
    Keyword arguments are the fields of :class:`~vitzoo.adapt.options.FinetuneOptions`
    (the CLI flags). Returns a :class:`RunResult`; rerunning with the same ``workdir``
    and settings resumes an interrupted run.
    """
    return run(FinetuneOptions(model=model, dataset=dataset, **kwargs))


def run(options: FinetuneOptions, *, data: DataSplits | None = None) -> RunResult:
    """Run (or resume) the fine-tune described by ``options``.

    ``data``: the dataset already opened (a learning-rate sweep opens it once for all runs).
    """
    t_start = time.perf_counter()
    from vitzoo.adapt.resume import restore_or_start

    options, setup_notes, meta, recorded = _checked(options)
    workdir = Path(str(options.workdir))
    if data is None:  # the dataset's mistakes, before the runtime's trial and any download
        data = _open(options, recorded)
    speed = start_runtime(options)
    import jax

    from vitzoo.adapt.progress import Display

    display = Display(enabled=jax.process_index() == 0, bar=options.progress)
    data = _prepare_data(options, recorded, setup_notes, display, opened=data)
    model = _prepare_model(options, data)
    batch_plan, layout, notes = _plan_batch(options, model, data, display, speed.get("autotune"))
    setup = _Setup(options, workdir, jax.process_index() == 0, display, data, model, batch_plan,
                   layout, notes, speed)
    tx = _optimizer(options)
    state, meta, start_step = restore_or_start(_fresh_state(model, tx), meta, options, workdir)
    if start_step >= options.steps and (workdir / "final.npz").is_file():
        display.note(f"{workdir} already holds the finished run ({options.steps} steps)")
        finished = meta.get("final_metrics", {}) if meta else {}
        return RunResult(workdir, start_step, options.steps, workdir / "final.npz", finished,
                         notes=notes)
    if start_step:
        display.note(f"resuming from the checkpoint at step {start_step} in {workdir}")

    record, read_mode = _record_start(setup, start_step, recorded)
    loop, device_state, batches = _build_loop(setup, tx, state, read_mode, start_step, t_start)
    del state  # the devices hold it now
    try:
        device_state, step, last_eval, interrupted = _train_loop(loop, device_state, batches,
                                                                 start_step)
    finally:
        batches.close()
        display.stop()
        loop.writer.close()
    if interrupted:
        return RunResult(workdir, step, options.steps, None, last_eval, interrupted=True,
                         notes=notes)
    final_metrics = {**last_eval, "img_per_sec": loop.throughput.img_per_sec,
                     "time_to_first_step_s": loop.throughput.first_step_s, "steps": step,
                     "wall_time_s": time.perf_counter() - t_start}
    if setup.is_main:
        _export_and_register(setup, record, device_state, step, final_metrics, loop.save)
    return RunResult(workdir, step, options.steps, workdir / "final.npz", final_metrics,
                     notes=notes)


def start_runtime(options: FinetuneOptions, *, tune: bool = True) -> dict[str, Any]:
    """Before JAX starts: the tuned settings, the runtime, the run's processes, the guard.

    Every path of ``finetune`` (a run, a sweep, a dry run) starts here; returns the settings,
    with what :mod:`~vitzoo.adapt.autotune` decided under ``autotune`` (``tune`` False:
    not asked, as for a dry run, which measures memory, not speed).
    """
    import jax

    from vitzoo.adapt import autotune
    from vitzoo.backbone import distributed, start

    cluster = distributed.resolve(options.coordinator, options.num_processes, options.process_id)
    tuned = (autotune.decide(options, cluster=cluster) if tune
             else autotune.Decision("skipped", "a dry run"))
    settings = start(cluster=cluster, tuned_flags=tuned.tuned_flags())
    from vitzoo.kernels import matmul  # which library computes the dense products, and why

    autotune.apply_matmul(tuned, options.dtype)  # JAX started; the model is not traced yet
    products = matmul.record(options.dtype)
    settings["autotune"] = tuned.record(jax.local_device_count(), matmul=products["backend"])
    settings["matmul"] = products
    return settings


def open_run_data(options: FinetuneOptions) -> DataSplits:
    """The dataset of the run ``options`` describes, opened as :func:`run` opens it.

    For a caller that must see the data before the run (``launch``: the resolution fit may
    download the checkpoint) and hands it to ``run(data=...)``: the settings and the run
    folder are checked first, and a resumed run reads its data the way it started.
    """
    options, _, _, recorded = _checked(options)
    return _open(options, recorded)


def _checked(options: FinetuneOptions
             ) -> tuple[FinetuneOptions, list[str], dict[str, Any] | None, dict[str, Any] | None]:
    """The cheap checks, before data, runtime and model: ``(settled options, their notes,
    the workdir's checkpoint record, how it read its data)``; each mistake is one line."""
    from vitzoo.adapt.resume import recorded_data

    options.validate()
    options, notes = options.settled()
    workdir = Path(str(options.workdir))
    check_run_outputs(workdir, register=options.register)
    meta = train_state.read_meta(workdir)
    return options, notes, meta, recorded_data(meta, options)


def _open(options: FinetuneOptions, recorded: dict[str, Any] | None) -> DataSplits:
    """Open the dataset: every dataset mistake is reported here, before downloads and compiles.

    A resumed run reads its training data the way it started (streamed or in memory).
    """
    return options.open(recorded_stream=recorded.get("train_streaming") if recorded else None)


def _prepare_data(options: FinetuneOptions, recorded: dict[str, Any] | None,
                  setup_notes: list[str], display: Display,
                  opened: DataSplits | None = None) -> DataSplits:
    """The dataset (``opened``, or opened here) with this run's notes, said, and the cheap
    data check's warnings."""
    from vitzoo.data.check import preflight

    if opened is not None:
        from dataclasses import replace

        data = replace(opened, notes=list(opened.notes))  # this run's notes are its own
    else:
        data = _open(options, recorded)
    assert data.train is not None
    data.notes[:0] = setup_notes
    for note in data.notes:
        display.note(note)
    for warning in preflight(data):  # data check's cheap part: warns, never stops the run
        display.note(warning)
    return data


def _prepare_model(options: FinetuneOptions, data: DataSplits) -> _Model:
    """Resolve and load the checkpoint with a new head and position embeddings for ``--res``."""
    from vitzoo.backbone import load

    backbone = load(options.model, resolution=options.res, num_classes=data.num_classes,
                    representation=False)
    return _Model(backbone.path, backbone.config, backbone.params, backbone.module(options.dtype),
                  backbone.preprocessing)


def _plan_batch(options: FinetuneOptions, model: _Model, data: DataSplits, display: Display,
                tuned: dict[str, Any] | None = None) -> tuple[BatchPlan, Layout, list[str]]:
    """The global batch over processes and devices, and the accumulation that fits memory.

    ``tuned``: the autotune record, whose micro-batch is used when it fits.
    """
    import jax
    import numpy as np

    from vitzoo.adapt.accumulation import plan
    from vitzoo.adapt.autotune import apply_micro_batch
    from vitzoo.data import Layout

    local_devices = len(jax.local_devices())
    param_bytes = sum(int(np.asarray(p).nbytes) for p in jax.tree.leaves(model.params))
    batch_plan = plan(options.batch, options.accum, processes=jax.process_count(),
                      local_devices=local_devices, config=model.config, resolution=options.res,
                      itemsize=2 if options.dtype == "bfloat16" else 4, param_bytes=param_bytes)
    batch_plan = apply_micro_batch(batch_plan, options.accum, tuned)
    notes = list(data.notes)
    if batch_plan.note:
        notes.append(batch_plan.note)
        display.note(batch_plan.note)
    layout = Layout(batch_plan.global_batch, jax.process_count(), jax.process_index(),
                    local_devices)
    return batch_plan, layout, notes


def _optimizer(options: FinetuneOptions) -> Any:
    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.schedule import warmup_cosine

    schedule = warmup_cosine(options.lr, options.steps, options.warmup)
    return sgd_momentum(schedule, clip_norm=options.clip_norm,
                        momentum_dtype=options.momentum_dtype)


def _fresh_state(model: _Model, tx: Any) -> Any:
    import jax

    from vitzoo.adapt.steps import init_state

    return jax.device_get(init_state(model.params, tx))


def _record_start(setup: _Setup, start_step: int,
                  recorded: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write run.json (running) and the run.log lines of a start or resume.

    Returns the record (finished at the end) and how training reads its data.
    """
    import jax

    from vitzoo.runs.record import started_record, write_log, write_run_json

    options, data, workdir = setup.options, setup.data, setup.workdir
    record = started_record(options=options, checkpoint=setup.model.checkpoint,
                            config=setup.model.config, data=data, batch_plan=setup.batch_plan,
                            devices=jax.local_devices(), processes=jax.process_count(),
                            preprocessing=setup.model.preprocessing, runtime=setup.runtime)
    read_mode = data.train.read_mode(recorded)
    reading = data.train.reading_note(setup.layout, start_step, read_mode)
    if reading:
        setup.display.note(reading)
    if setup.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        write_log(workdir, [f"{'resume' if start_step else 'start'} at step {start_step}"]
                  + setup.notes + [f"skipped unreadable file {f}: {r}" for f, r in data.skipped]
                  + ([reading] if reading else []))
        write_run_json(workdir, record)
    return record, read_mode


def check_run_outputs(workdir: Path, *, register: bool) -> None:
    """Where a run (full or head-only) will write, checked before data and model are loaded.

    A read-only disk or a file in the way is then one line, before minutes of work.
    """
    from vitzoo.atomic import output_dir
    from vitzoo.catalog import local

    output_dir(workdir, "the run folder (--workdir)", create=False)
    if register:
        local.check_writable()


def _build_loop(setup: _Setup, tx: Any, state: Any, read_mode: dict[str, Any], start_step: int,
                t_start: float) -> tuple[_Loop, Any, Any]:
    """Compile-ready steps, device state, the prefetched batch stream and the loop's helpers."""
    import jax
    import numpy as np

    from vitzoo.adapt.metrics import MetricsWriter
    from vitzoo.adapt.prefetch import Prefetch
    from vitzoo.adapt.resume import Checkpointer
    from vitzoo.adapt.steps import make_train_step
    from vitzoo.adapt.throughput import TrainWindow
    from vitzoo.backbone.devices import replicate, shard
    from vitzoo.data import eval_recipe, train_recipe

    options, data, layout, apply = setup.options, setup.data, setup.layout, setup.model.module.apply
    devices = jax.local_devices()
    train_step = make_train_step(apply, tx, num_classes=data.num_classes,
                                 accum=setup.batch_plan.accum,
                                 label_smoothing=options.label_smoothing, task=data.task)
    device_state = replicate(state, devices)
    key = replicate(np.asarray(jax.random.PRNGKey(options.seed)), devices)
    pixels = setup.model.preprocessing
    batches = data.train.train_batches(train_recipe(options.res, pixels), layout, seed=options.seed,
                                       start_step=start_step, read_mode=read_mode)
    checkpointer = Checkpointer(setup.workdir, options, global_batch=layout.global_batch,
                                read_mode=read_mode, enabled=setup.is_main)
    loop = _Loop(
        options=options, train_step=train_step,
        evaluate=_evaluator(data, apply, eval_recipe(options.res, pixels), layout, devices),
        save=checkpointer.save, key=key, display=setup.display,
        writer=MetricsWriter(setup.workdir, enabled=setup.is_main, resume_step=start_step),
        throughput=TrainWindow(layout.global_batch, t_start))
    return loop, device_state, Prefetch(batches, lambda batch: shard(batch, devices))


def _evaluator(data: DataSplits, apply: Callable[..., Any], recipe: Preprocess, layout: Layout,
               devices: list[Any]) -> Callable[[Any], dict[str, Any]]:
    """``params -> eval metrics`` (run.json/metrics.jsonl keys) of the run's task on its eval split."""
    if data.task == "multilabel":
        from vitzoo.evaluators.multilabel import MultiLabel
        from vitzoo.evaluators.multilabel_metrics import RECORD_KEYS

        multilabel = MultiLabel("eval", apply, data.eval, recipe=recipe, layout=layout,
                                devices=devices, validation=data.validation or data.eval)
        return lambda params: {RECORD_KEYS[k]: v for k, v in multilabel.run(params)}
    from vitzoo.evaluators import record_fields
    from vitzoo.evaluators.classification import Classification

    evaluator = Classification(data.eval_split, apply, data.eval, recipe=recipe, layout=layout,
                               devices=devices, num_classes=data.num_classes)
    return lambda params: record_fields(evaluator.run(params))


def _train_loop(loop: _Loop, device_state: Any, batches: Any,
                start_step: int) -> tuple[Any, int, dict[str, float], bool]:
    """Steps until the end or a stop request: ``(state, step, last eval, interrupted)``."""
    from vitzoo.adapt.cadence import itstime
    from vitzoo.adapt.schedule import lr_at
    from vitzoo.adapt.signals import StopFlag

    o, display = loop.options, loop.display
    step, last_eval = start_step, {}
    display.start(o.steps, start_step)
    with StopFlag() as stop:
        while step < o.steps:
            device_state, metrics = loop.train_step(device_state, next(batches), loop.key)
            step += 1
            if loop.throughput.add(metrics):
                display.note(f"first step after {loop.throughput.first_step_s:.1f} s "
                             "(data, load, compile)")
            eval_now = itstime(step, o.eval_every, o.steps)
            if eval_now or itstime(step, o.log_every, o.steps):
                entry = {"step": step, "lr": lr_at(step - 1, o.lr, o.steps, o.warmup),
                         **loop.throughput.summary()}
                if eval_now:
                    last_eval = loop.evaluate(device_state.params)
                    entry.update(last_eval)
                loop.writer.write(entry)
                display.update(step, entry)
                loop.throughput.restart()
            else:
                display.advance(step)
            if stop.requested and step < o.steps:
                loop.save(step, device_state)
                display.note(f"interrupted: checkpoint saved at step {step}; rerun the same "
                             "command to resume")
                return device_state, step, last_eval, True
            if itstime(step, o.checkpoint_every, o.steps, last=False):
                loop.save(step, device_state)
    return device_state, step, last_eval, False


def _export_and_register(setup: _Setup, record: dict[str, Any], device_state: Any, step: int,
                         final_metrics: dict[str, Any], save: Callable[..., None]) -> None:
    """``final.npz`` in the release layout, the last checkpoint, the catalog entry, run.json."""
    from vitzoo.backbone.devices import unreplicate
    from vitzoo.runs.record import write_log, write_run_json
    from vitzoo.runs.registry import export_params, register, run_name

    options, model, workdir = setup.options, setup.model, setup.workdir
    final_npz = workdir / "final.npz"
    export_params(final_npz, unreplicate(device_state.params), model.config)
    save(step, device_state, {"final_metrics": final_metrics})
    name = run_name(workdir, options.name)
    record.update(status="finished", final_metrics=final_metrics, final_npz=str(final_npz),
                  catalog=None, run_name=name)
    write_run_json(workdir, record)  # complete before registering, which may fail
    eval_is_test = setup.data.eval_split.startswith("test")
    record["catalog"] = register(name, final_npz, {
        "name": model.config.name, "filename": model.checkpoint.stem,
        "adapt_ds": options.dataset, "adapt_resolution": options.res, "adapt_lr": options.lr,
        "adapt_steps": options.steps,
        ("adapt_final_test" if eval_is_test else "adapt_final_val"):
            final_metrics.get("eval_accuracy"),
        "workdir": str(workdir.resolve()),
    }, workdir) if options.register else "not registered (--no-register)"
    write_run_json(workdir, record)
    write_log(workdir, [f"finished at step {step}: {final_metrics}", record["catalog"]])
    setup.display.summary(record)
