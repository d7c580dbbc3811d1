"""``vitzoo finetune``: one function that goes from a checkpoint name and a dataset to a model.

The order of work is chosen so that mistakes surface cheaply: settings are validated,
then the dataset is opened (bad folders fail here, before any download or compile),
then the checkpoint is resolved and loaded, and only then is anything compiled. The
training loop itself knows nothing about the model: it calls the pmapped step built
by :mod:`vitzoo.adapt.steps` on batches from :mod:`vitzoo.data.pipeline`.

Resume: a ``checkpoint.npz`` in the workdir whose recorded settings match is picked up
automatically; the data order is a function of (seed, step) and the dropout key of
(seed, step, device), so a resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.adapt import train_state
from vitzoo.adapt.options import FinetuneOptions, default_workdir
from vitzoo.errors import VitzooError

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


class _Prefetch:
    """Moves host batches to the devices on a background thread, ``depth`` batches ahead."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]], put: Any, depth: int = 2):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()

        def work() -> None:
            try:
                for batch in batches:
                    item = put(batch)
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
            except BaseException as exc:  # surfaced in the consumer
                self._queue.put(exc)
            self._queue.put(StopIteration())

        self._thread = threading.Thread(target=work, daemon=True, name="vitzoo-prefetch")
        self._thread.start()

    def __next__(self) -> Any:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop and join the worker, so no thread is inside TensorFlow at interpreter exit."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
            self._thread.join(timeout=0.05)


class _StopFlag:
    """Ctrl-C / SIGTERM ask the loop to save and stop; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _resolve_model(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_file():
        return path
    try:
        from vitzoo.download.resolve import resolve_checkpoint
    except ImportError:
        raise VitzooError(f"{model!r} is not a local file and checkpoint download is not "
                          "available in this installation",
                          "pass the path of a downloaded .npz file") from None
    return Path(resolve_checkpoint(model))


def _check_resume(meta: dict[str, Any], options: FinetuneOptions, workdir: Path) -> None:
    recorded = meta.get("identity", {})
    now = options.identity()
    changed = [k for k in now if recorded.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}: {recorded.get(k)!r} -> {now[k]!r}" for k in changed[:4])
        raise VitzooError(f"{workdir} holds a run with different settings ({diffs})",
                          "rerun with the same settings to resume, or use a new --workdir")


def _recorded_data(meta: dict[str, Any] | None,
                   options: FinetuneOptions) -> dict[str, Any] | None:
    """How the checkpointed run read its training data; refuses a contradicting ``--stream``."""
    if meta is None or "data" not in meta:
        return None
    recorded = dict(meta["data"])
    if options.stream and not recorded.get("train_streaming"):
        raise VitzooError(f"{options.workdir} holds a run that read its training data in "
                          "memory; --stream would change the order of its batches",
                          "rerun without --stream to resume, or use a new --workdir")
    return recorded


def _write_log(workdir: Path, lines: list[str]) -> None:
    with (workdir / "run.log").open("a") as fh:
        for line in lines:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def finetune(model: str, dataset: str, **kwargs: Any) -> RunResult:
    """Fine-tune ``model`` (architecture, catalog name, path or URL) on ``dataset``.

    ``dataset`` is a TFDS name (``oxford_iiit_pet``, ``cifar100:3.*``) or an image folder.
    Keyword arguments are the fields of :class:`~vitzoo.adapt.options.FinetuneOptions`
    (the CLI flags). Returns a :class:`RunResult`; rerunning with the same ``workdir``
    and settings resumes an interrupted run.
    """
    options = FinetuneOptions(model=model, dataset=dataset, **kwargs)
    return run(options)


def run(options: FinetuneOptions) -> RunResult:
    """Run (or resume) the fine-tune described by ``options``."""
    t_start = time.perf_counter()
    options.validate()
    from vitzoo import runtime
    from vitzoo.adapt import distributed

    speed = runtime.configure()  # XLA flags, host devices, compile cache: before JAX starts

    cluster = distributed.resolve(options.coordinator, options.num_processes, options.process_id)
    distributed.initialize(cluster)

    import jax
    import jax.numpy as jnp

    from vitzoo.adapt.accumulation import plan
    from vitzoo.adapt.devices import replicate, shard, unreplicate
    from vitzoo.adapt.export import export_params, register, run_name, source_row, versions, write_json
    from vitzoo.adapt.metrics import MetricsWriter
    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.progress import Display
    from vitzoo.adapt.schedule import lr_at, warmup_cosine
    from vitzoo.adapt.steps import init_state, make_eval_step, make_train_step
    from vitzoo.data import eval_recipe, open_dataset, train_recipe
    from vitzoo.data.pipeline import Layout, make_eval_batches, make_train_batches
    from vitzoo.data.source import is_stream
    from vitzoo.models import build_model
    from vitzoo.weights.release import load_for_finetune

    is_main = jax.process_index() == 0
    setup_notes = []
    if options.warmup > options.steps:
        setup_notes.append(f"--warmup {options.warmup} is longer than --steps {options.steps}: "
                           f"warming up over all {options.steps} steps")
        options = replace(options, warmup=options.steps)
    workdir = Path(options.workdir) if options.workdir else default_workdir(options)
    options = replace(options, workdir=str(workdir))
    display = Display(enabled=is_main, bar=options.progress)

    # 1. data: every dataset mistake is reported here, before downloads and compiles.
    # A resumed run reads its training data the way it started (streamed or in memory,
    # same shuffle buffer): another way would be another order.
    meta = train_state.read_meta(workdir)
    recorded = _recorded_data(meta, options)
    stream = recorded.get("train_streaming") if recorded else (True if options.stream else None)
    data = open_dataset(options.dataset, train_split=options.train_split,
                        eval_split=options.eval_split, data_dir=options.data_dir,
                        manual_dir=options.manual_dir, val_fraction=options.val_fraction,
                        stream=stream)
    assert data.train is not None
    data.notes[:0] = setup_notes
    for note in data.notes:
        display.note(note)

    # 2. model.
    checkpoint = _resolve_model(options.model)
    config, params = load_for_finetune(checkpoint, num_classes=data.num_classes,
                                       resolution=options.res)
    dtype = jnp.bfloat16 if options.dtype == "bfloat16" else jnp.float32
    module = build_model(config, data.num_classes, dtype=dtype, dropout=0.0)

    # 3. batch layout.
    local_devices = jax.local_devices()
    param_bytes = sum(int(np.asarray(p).nbytes) for p in jax.tree.leaves(params))
    batch_plan = plan(options.batch, options.accum, processes=jax.process_count(),
                      local_devices=len(local_devices), config=config, resolution=options.res,
                      itemsize=2 if options.dtype == "bfloat16" else 4, param_bytes=param_bytes)
    notes = list(data.notes)
    if batch_plan.note:
        notes.append(batch_plan.note)
        display.note(batch_plan.note)
    layout = Layout(batch_plan.global_batch, jax.process_count(), jax.process_index(),
                    len(local_devices))

    # 4. state (fresh or resumed).
    schedule = warmup_cosine(options.lr, options.steps, options.warmup)
    tx = sgd_momentum(schedule, clip_norm=options.clip_norm,
                      momentum_dtype=options.momentum_dtype)
    state = jax.device_get(init_state(params, tx))
    start_step = 0
    if meta is not None:
        _check_resume(meta, options, workdir)
        state, meta = train_state.restore(workdir, state)
        start_step = int(meta["step"])
    final_npz = workdir / "final.npz"
    if start_step >= options.steps and final_npz.is_file():
        display.note(f"{workdir} already holds the finished run ({options.steps} steps)")
        finished = meta.get("final_metrics", {}) if meta else {}
        return RunResult(workdir, start_step, options.steps, final_npz, finished, notes=notes)
    if start_step:
        display.note(f"resuming from the checkpoint at step {start_step} in {workdir}")

    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_log(workdir, [f"{'resume' if start_step else 'start'} at step {start_step}"]
                   + notes + [f"skipped unreadable file {f}: {r}" for f, r in data.skipped])
    row, row_note = source_row(options.model, checkpoint)
    record: dict[str, Any] = {
        "status": "running",
        "options": options.as_dict(),
        "source": {"model": options.model, "checkpoint": str(checkpoint),
                   "architecture": config.name, "catalog_row": row, "catalog_note": row_note},
        "dataset": data.describe(),
        "class_names": data.class_names,
        "preprocessing": {"train": train_recipe(options.res).as_dict(),
                          "eval": eval_recipe(options.res).as_dict()},
        "batch": {"global": batch_plan.global_batch, "per_device": batch_plan.per_device,
                  "accum": batch_plan.accum, "micro_batch": batch_plan.micro_batch,
                  "devices": len(local_devices) * jax.process_count(),
                  "processes": jax.process_count()},
        "optimizer": {"name": "sgd", "momentum": 0.9, "momentum_dtype": options.momentum_dtype,
                      "clip_global_norm": options.clip_norm, "weight_decay": 0.0,
                      "schedule": "linear warmup + cosine decay"},
        "devices": [str(d) for d in local_devices],
        "runtime": speed,
        "versions": versions(),
    }
    if is_main:
        write_json(workdir / "run.json", record)

    # 5. compile-ready pieces.
    train_step = make_train_step(module.apply, tx, num_classes=data.num_classes,
                                 accum=batch_plan.accum, label_smoothing=options.label_smoothing)
    eval_step = make_eval_step(module.apply, num_classes=data.num_classes)
    device_state = replicate(state, local_devices)
    del state
    key = replicate(np.asarray(jax.random.PRNGKey(options.seed)), local_devices)
    data_mode: dict[str, Any] = {"train_streaming": is_stream(data.train)}
    if is_stream(data.train):
        from vitzoo.data.stream import shuffle_buffer_size

        buffer = int((recorded or {}).get("shuffle_buffer") or shuffle_buffer_size(data.train))
        data_mode["shuffle_buffer"] = buffer
        skipped = start_step * layout.local_batch % data.train.process_split(
            layout.process_index, layout.process_count)[1]
        stream_note = (f"streaming {data.train.split} with a shuffle buffer of {buffer} examples"
                       + (f"; resuming skips {skipped} encoded examples of the current epoch"
                          if skipped else ""))
        display.note(stream_note)
        if is_main:
            _write_log(workdir, [stream_note])
    else:
        buffer = None
    batches = make_train_batches(data.train, train_recipe(options.res), layout,
                                 seed=options.seed, start_step=start_step, shuffle_buffer=buffer)
    eval_data = make_eval_batches(data.eval, eval_recipe(options.res), layout)

    def put(batch: dict[str, np.ndarray]) -> Any:
        return shard(batch, local_devices)

    def evaluate(params: Any) -> dict[str, float]:
        totals: dict[str, Any] = {}
        for batch in eval_data:
            sums = eval_step(params, put(batch))
            totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
        host = {k: np.asarray(unreplicate(v)) for k, v in totals.items()}
        count = max(float(host["count"]), 1.0)
        return {"eval_accuracy": float(host["top1"]) / count,
                "eval_top5": float(host["top5"]) / count,
                "eval_loss": float(host["loss"]) / count,
                "eval_examples": int(host["count"])}

    def save(step: int, device_params_state: Any, extra: dict[str, Any] | None = None) -> None:
        host_state = unreplicate(device_params_state)
        if is_main:
            train_state.save(workdir, host_state, {
                "step": step, "identity": options.identity(), "seed": options.seed,
                "data_position": {"step": step, "examples_seen": step * layout.global_batch},
                "rng": {"dropout_key_seed": options.seed}, "data": data_mode,
                **(extra or {})})

    writer = MetricsWriter(workdir, enabled=is_main, resume_step=start_step)
    prefetch = _Prefetch(batches, put)
    step = start_step
    window: list[Any] = []
    window_start = time.perf_counter()
    window_steps = 0
    first_step_s: float | None = None
    last_eval: dict[str, float] = {}
    interrupted = False
    img_per_sec = 0.0
    display.start(options.steps, start_step)
    try:
        with _StopFlag() as stop:
            while step < options.steps:
                batch = next(prefetch)
                device_state, metrics = train_step(device_state, batch, key)
                step += 1
                window.append(metrics)
                window_steps += 1
                if first_step_s is None:
                    jax.block_until_ready(metrics)
                    first_step_s = time.perf_counter() - t_start
                    window, window_steps = [], 0
                    window_start = time.perf_counter()
                    display.note(f"first step after {first_step_s:.1f} s (data, load, compile)")
                record_now = step % options.log_every == 0 or step == options.steps
                eval_now = step == options.steps or (
                    options.eval_every and step % options.eval_every == 0)
                if record_now or eval_now:
                    entry: dict[str, Any] = {"step": step, "lr": lr_at(step - 1, options.lr,
                                                                       options.steps,
                                                                       options.warmup)}
                    if window:
                        host = [jax.tree.map(lambda x: float(np.asarray(x)[0]), m)
                                for m in jax.device_get(window)]
                        elapsed = time.perf_counter() - window_start
                        img_per_sec = window_steps * layout.global_batch / max(elapsed, 1e-9)
                        entry.update(
                            train_loss=float(np.mean([m["loss"] for m in host])),
                            train_accuracy=float(np.mean([m["accuracy"] for m in host])),
                            grad_norm=float(np.mean([m["grad_norm"] for m in host])),
                            img_per_sec=img_per_sec)
                    if eval_now:
                        last_eval = evaluate(device_state.params)
                        entry.update(last_eval)
                    writer.write(entry)
                    display.update(step, entry)
                    window, window_steps = [], 0
                    window_start = time.perf_counter()
                else:
                    display.advance(step)
                checkpoint_now = options.checkpoint_every and \
                    step % options.checkpoint_every == 0 and step < options.steps
                if stop.requested and step < options.steps:
                    save(step, device_state)
                    interrupted = True
                    display.note(f"interrupted: checkpoint saved at step {step}; rerun the same "
                                 "command to resume")
                    break
                if checkpoint_now:
                    save(step, device_state)
    finally:
        prefetch.close()
        display.stop()
        writer.close()
    if interrupted:
        return RunResult(workdir, step, options.steps, None, last_eval, interrupted=True,
                         notes=notes)

    # 6. outputs.
    params_host = unreplicate(device_state.params)
    final_metrics = {**last_eval, "img_per_sec": img_per_sec,
                     "time_to_first_step_s": first_step_s, "steps": step,
                     "wall_time_s": time.perf_counter() - t_start}
    if is_main:
        export_params(final_npz, params_host, config)
        save(step, device_state, {"final_metrics": final_metrics})
        name = run_name(workdir, options.name)
        eval_is_test = data.eval_split.startswith("test")
        registered = register(name, final_npz, {
            "name": config.name, "filename": checkpoint.stem, "adapt_ds": options.dataset,
            "adapt_resolution": options.res, "adapt_lr": options.lr, "adapt_steps": options.steps,
            ("adapt_final_test" if eval_is_test else "adapt_final_val"):
                last_eval.get("eval_accuracy"),
            "workdir": str(workdir.resolve()),
        }) if options.register else "not registered (--no-register)"
        record.update(status="finished", final_metrics=final_metrics, final_npz=str(final_npz),
                      catalog=registered, run_name=name)
        write_json(workdir / "run.json", record)
        _write_log(workdir, [f"finished at step {step}: {final_metrics}", registered])
        display.summary(record)
    return RunResult(workdir, step, options.steps, final_npz, final_metrics, notes=notes)
