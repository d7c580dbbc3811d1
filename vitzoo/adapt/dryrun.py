"""``finetune --dry-run``: will this fine-tune fit, and how much work is one step? Asked of XLA.

The run's own preparation settles the options, opens the data, loads the model and plans
the batch (:mod:`vitzoo.adapt.runner`); then the very train step the run would use
(:func:`vitzoo.adapt.steps.make_train_step`, the planned accumulation, the per-device batch
and resolution) is lowered on abstract shapes and compiled (through the compile cache, so
the real run finds it there). XLA's own accounting of that program is the answer:
``memory_analysis()`` (arguments, outputs, temporaries, generated code; donated buffers are
counted once) against the device's memory (GPU/TPU: ``memory_stats()["bytes_limit"]``; CPU:
the host's available memory from ``/proc/meminfo``, shared by the host devices), and
``cost_analysis()["flops"]``. Nothing is written: no workdir, no run record.

When the step does not fit, smaller micro-batches (more accumulation, the same global
batch) are compiled in turn, largest first (a binary search over the divisors of the
per-device batch), and the largest that fits is named with the ``--accum`` that gives it.

FLOPs: XLA counts a loop's body once, so with accumulation the step's count is the
compiled count times ``accum`` (which counts the optimizer update ``accum`` times too: a
few operations per parameter against thousands per parameter and image for the forward
and backward passes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vitzoo.adapt.options import FinetuneOptions

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.data import DataSplits


@dataclass(frozen=True)
class StepMemory:
    """XLA's memory analysis of one compiled step, per device, in bytes."""

    argument: int
    output: int
    alias: int
    temp: int
    generated_code: int

    @property
    def total(self) -> int:
        """What the step needs at once: donated arguments reuse their buffers as outputs."""
        return self.argument + self.output - self.alias + self.temp + self.generated_code

    @classmethod
    def of(cls, compiled: Any) -> StepMemory:
        stats = compiled.memory_analysis()
        return cls(argument=int(stats.argument_size_in_bytes),
                   output=int(stats.output_size_in_bytes),
                   alias=int(stats.alias_size_in_bytes),
                   temp=int(stats.temp_size_in_bytes),
                   generated_code=int(stats.generated_code_size_in_bytes))


@dataclass
class DryRunReport:
    """What ``--dry-run`` found (fractions and bytes; the renderer turns them into text)."""

    model: str
    architecture: str
    dataset: str
    train_examples: int
    num_classes: int
    resolution: int
    global_batch: int
    devices: int
    per_device_batch: int
    micro_batch: int
    accum: int
    memory: StepMemory
    device_memory: int | None
    device_memory_source: str
    flops_per_device: float | None
    fits: bool
    largest_fitting_micro_batch: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def flops_per_step(self) -> float | None:
        return None if self.flops_per_device is None else self.flops_per_device * self.devices

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory"]["total"] = self.memory.total
        out["flops_per_step"] = self.flops_per_step
        return out


def device_memory(device: Any, local_devices: int) -> tuple[int | None, str]:
    """Bytes one device may hold, and where the number comes from (None: unknown)."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # CPU backends may not implement it
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} memory_stats bytes_limit"
    if device.platform == "cpu":
        from vitzoo.data.memory import available_host_memory

        share = available_host_memory() // max(1, local_devices)
        where = f" / {local_devices} host devices" if local_devices > 1 else ""
        return share, f"host MemAvailable (/proc/meminfo){where}"
    return None, f"{device.platform} reports no memory limit"


def compile_step(options: FinetuneOptions, model: Any, tx: Any, *, num_classes: int,
                 accum: int, per_device: int, local_devices: int,
                 task: str = "multiclass") -> Any:
    """The run's pmapped train step, lowered on abstract shapes and compiled (no data, no state)."""
    import jax
    import jax.numpy as jnp

    from vitzoo.adapt.steps import init_state, make_train_step

    step = make_train_step(model.module.apply, tx, num_classes=num_classes, accum=accum,
                           label_smoothing=options.label_smoothing, task=task)
    state = jax.eval_shape(lambda p: init_state(p, tx), model.params)

    def stacked(x: Any) -> Any:
        return jax.ShapeDtypeStruct((local_devices, *x.shape), x.dtype)

    batch = {"image": jax.ShapeDtypeStruct((local_devices, per_device, options.res, options.res, 3),
                                           jnp.float32),
             "label": jax.ShapeDtypeStruct(  # multi-hot rows for a multi-label task
                 (local_devices, per_device, *((num_classes,) if task == "multilabel" else ())),
                 jnp.int32)}
    key = jax.ShapeDtypeStruct((local_devices, 2), jnp.uint32)
    return step.lower(jax.tree.map(stacked, state), batch, key).compile()


def _flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and cost.get("flops") is not None else None


def dry_run(options: FinetuneOptions, data: DataSplits | None = None) -> DryRunReport:
    """Settle, load, plan and compile the run's train step; report memory and FLOPs (writes nothing)."""
    from vitzoo.adapt import runner

    options.validate()
    runner.start_runtime(options, tune=False)
    import jax

    from vitzoo.adapt.progress import Display

    options, notes = options.settled()
    display = Display(enabled=jax.process_index() == 0, bar=False)
    data = runner._prepare_data(options, None, notes, display, opened=data)
    model = runner._prepare_model(options, data)
    plan, _, _ = runner._plan_batch(options, model, data, display)
    tx = runner._optimizer(options)
    local = len(jax.local_devices())
    limit, source = device_memory(jax.local_devices()[0], local)

    def compiled_for(accum: int) -> Any:
        return compile_step(options, model, tx, num_classes=data.num_classes, accum=accum,
                            per_device=plan.per_device, local_devices=local,
                            task=getattr(data, "task", "multiclass"))

    compiled = compiled_for(plan.accum)
    memory = StepMemory.of(compiled)
    flops = _flops(compiled)
    fits = limit is None or memory.total <= limit
    report = DryRunReport(
        model=options.model, architecture=model.config.name, dataset=data.name,
        train_examples=len(data.train), num_classes=data.num_classes, resolution=options.res,
        global_batch=plan.global_batch, devices=plan.processes * plan.local_devices,
        per_device_batch=plan.per_device, micro_batch=plan.micro_batch, accum=plan.accum,
        memory=memory, device_memory=limit, device_memory_source=source,
        flops_per_device=None if flops is None else flops * plan.accum, fits=fits,
        notes=list(data.notes))
    if not fits and limit is not None:
        report.largest_fitting_micro_batch = largest_fitting(
            plan.per_device, plan.micro_batch, limit,
            lambda micro: StepMemory.of(compiled_for(plan.per_device // micro)).total)
    return report


def largest_fitting(per_device: int, too_big: int, limit: int, total_for: Any) -> int | None:
    """The largest divisor of ``per_device`` below ``too_big`` whose step fits in ``limit``.

    Memory grows with the micro-batch, so a binary search over the divisors finds it with
    few compiles; None when not even one image per device fits.
    """
    candidates = [d for d in range(1, too_big) if per_device % d == 0]
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if total_for(candidates[middle]) <= limit:
            best, low = candidates[middle], middle + 1
        else:
            high = middle - 1
    return best


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def render(report: DryRunReport) -> list[str]:
    """The report as lines a person reads (80 columns)."""
    m = report.memory
    lines = [
        f"dry run: {report.architecture} on {report.dataset} "
        f"({report.train_examples} training images, {report.num_classes} classes) "
        f"at {report.resolution} px",
        f"batch: global {report.global_batch} over {report.devices} device(s) = "
        f"{report.per_device_batch} per device; micro-batch {report.micro_batch} x "
        f"accumulation {report.accum}",
        "memory per device (XLA memory analysis of the compiled train step):",
        f"  arguments       {_size(m.argument):>12}",
        f"  outputs         {_size(m.output):>12}  (of which {_size(m.alias)} reuse donated "
        "arguments)",
        f"  temporaries     {_size(m.temp):>12}",
        f"  generated code  {_size(m.generated_code):>12}",
        f"  total           {_size(m.total):>12}",
    ]
    if report.device_memory is None:
        lines.append(f"  device memory        unknown ({report.device_memory_source})")
    else:
        share = m.total / report.device_memory
        lines.append(f"  device memory   {_size(report.device_memory):>12}  "
                     f"({report.device_memory_source}); the step needs {share:.1%}")
    if report.flops_per_step is not None:
        lines.append(f"FLOPs per step: {report.flops_per_step:.3e} "
                     f"({report.flops_per_device:.3e} per device)")
    if report.fits:
        lines.append("fits: yes. Nothing was written; run without --dry-run to train.")
    elif report.largest_fitting_micro_batch:
        micro = report.largest_fitting_micro_batch
        lines.append(f"fits: NO. The largest micro-batch that fits is {micro}: "
                     f"--accum {report.per_device_batch // micro}")
    else:
        lines.append("fits: NO, not even a micro-batch of 1: use a smaller model, --res, "
                     "or --dtype bfloat16")
    return lines
