"""Which matrix-product backend runs a forward fastest here: timed once, then remembered.

Why: oneDNN's float32 GEMM beat XLA's by 3-20% on ViT shapes on an AMD EPYC, but the
``auto`` rule of :mod:`vitzoo.kernels.matmul` uses oneDNN only for bfloat16, and on another
CPU XLA may win. No fixed rule is right everywhere, so the first time a forward's shapes
run on a machine (probe feature extraction, ``predict``), it is compiled with each backend
(:func:`vitzoo.kernels.matmul.measured`) and timed on random input of its real shape:
:data:`WARMUP` untimed batches (the compile, then one that settles the allocator: oneDNN's
first calls grow its scratch memory), then the fastest of :data:`REPEATS` batches, since
noise on a shared machine only ever slows a batch down (one trial on a busy 2-core machine
took a median that ranked XLA first by 4% where oneDNN ran 1.39x faster in a quiet
process, benchmarks/RESULTS.md). The faster is used
(:func:`vitzoo.kernels.matmul.use_measured`) and remembered in ``VITZOO_HOME/autotune.json``
under :data:`SECTION` (the fine-tune trial's settings live under ``entries``), keyed by
:func:`cache_key`. The winner's compiled forward does the real work: no third compile.

The rule's backend is timed first, so a trial that runs out of its budget
(``VITZOO_AUTOTUNE_BUDGET``, shared with the fine-tune trial) keeps it: the second
candidate is tried only when its estimated cost (the first one's) fits what is left. Such
a partial answer is remembered too (a ViT-B/16 forward of 64 images took ~87 s for its
first candidate on a 2-core machine: repeating that on every run would waste minutes),
and measured again once the budget is larger than the one it had.

No trial: ``--no-autotune`` / ``VITZOO_AUTOTUNE=0`` (off); ``VITZOO_CPU_MATMUL`` set to
``xla`` or ``onednn``, JAX not on a CPU, the kernel missing, several processes (each would
measure alone, and they must run the same number of collective steps), or a job shorter
than :data:`MIN_BATCHES` batches (skipped; see there). A remembered answer is used
wherever a trial could run, a short job included, since it costs nothing. Without a
trial or an answer the forward is traced with the rule's backend (float32: XLA).

``evaluate`` builds its own step; it can use the decision by tracing it inside
``Forward(...).tune().applied(dtype)`` (a trial's compiled forward is then not reused).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.models import ModelConfig

SECTION = "forward"
#: Untimed batches per candidate (compile, then allocator warm-up).
WARMUP = 2
#: Timed batches per candidate after its warm-up (the fastest counts).
REPEATS = 3
#: A trial runs 2 x (WARMUP + REPEATS) forward batches on random input and compiles the forward
#: once more; below this many batches of real work it would at least double a first run
#: (a predict of a few images), so such a job uses a remembered answer or the rule's
#: default, and does not remember anything. Longer jobs pay it once per machine and shapes.
MIN_BATCHES = 2 * (WARMUP + REPEATS)

#: ``(backend, run) -> seconds of each timed batch``: the measurement seam. ``run()``
#: computes one batch and waits for it; the first call traces and compiles the candidate
#: (tests inject timings, but must call ``run`` at least once).
Measure = Callable[[str, Callable[[], Any]], list[float]]


@dataclass(frozen=True)
class Job:
    """What decides a forward's speed: the program, the model, and the shapes it runs."""

    program: str  # "features" (pre-logits, probe) or "logits" (predict)
    config: ModelConfig
    resolution: int
    per_device: int
    devices: int
    dtype: str  # compute dtype name
    processes: int = 1

    @property
    def global_batch(self) -> int:
        return self.per_device * self.devices * self.processes

    def label(self) -> str:
        return (f"{self.config.name} {self.resolution}px b{self.global_batch} {self.dtype} "
                f"{self.program}")


@dataclass
class Tuning:
    """What was decided for one forward, and why; :meth:`record` is what runs record."""

    source: str  # trial | cache | off | skipped
    reason: str
    backend: str | None = None  # the measured winner; None: the rule decides
    key: dict[str, Any] | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    budget_s: float | None = None
    spent_s: float | None = None
    measured_at: str | None = None

    @contextmanager
    def applied(self, dtype: Any) -> Iterator[None]:
        """Models traced in this block use the chosen backend (the rule's when none).

        The rule's also under ``off``: an earlier trial in this process (another model
        in a probe) does not decide for a forward that was told not to tune.
        """
        from vitzoo.kernels import matmul

        with matmul.measured(dtype, self.backend):
            if self.backend is not None:  # the reason the run record shows
                matmul.use_measured(dtype, self.backend, self.reason)
            yield

    def record(self, dtype: Any) -> dict[str, Any]:
        """``{"backend", "reason", "mode", ["isa"], "autotune": {source, reason, ...}}``."""
        from vitzoo.kernels import matmul

        with self.applied(dtype):
            entry = matmul.record(dtype)
        tune = {k: v for k, v in asdict(self).items() if k not in ("key",) and v is not None}
        return {**entry, "autotune": tune}


def cache_key(job: Job, cpu: Any, versions: dict[str, str | None]) -> dict[str, Any]:
    """The machine, the libraries, the program's shapes and the settings that change its code."""
    import os

    from vitzoo import runtime

    return {"cpu": cpu.model, "physical_cores": cpu.physical_cores,
            "jax": versions.get("jax"), "jaxlib": versions.get("jaxlib"),
            "program": job.program, "model": asdict(job.config), "resolution": job.resolution,
            "per_device_batch": job.per_device, "devices": job.devices, "dtype": job.dtype,
            "malloc": runtime.malloc_mode(), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def decide(job: Job, make_step: Callable[[], Callable[..., Any]], args: tuple[Any, ...], *,
           batches: int | None = None, measure: Measure | None = None,
           say: Callable[[str], None] | None = None, cpu: Any = None,
           versions: dict[str, str | None] | None = None,
           clock: Callable[[], float] = time.perf_counter
           ) -> tuple[Tuning, Callable[..., Any] | None]:
    """The backend for ``job`` and, after a trial, the winner's step, already compiled.

    ``make_step()`` returns a fresh jitted/pmapped ``step(*args)`` (traced at its first
    call, with the backend in effect then); ``args`` are random inputs of the real shape.
    ``batches``: how many batches the job runs (None: enough for a trial). Without a trial
    the step returned is None: the caller traces its own inside :meth:`Tuning.applied`.
    ``measure``, ``cpu``, ``versions`` and ``clock`` are seams for tests.
    """
    from vitzoo import runtime
    from vitzoo.kernels import matmul
    from vitzoo.versions import jax_versions

    say = say or _say
    wanted, why = runtime.autotune_wanted()
    if not wanted:
        return Tuning("off", why), None
    reason = _not_applicable(job)
    if reason:
        return Tuning("skipped", reason), None
    key = cache_key(job, cpu or runtime.cpu_info(), versions or jax_versions())
    text = json.dumps(key, sort_keys=True, default=str)
    cached = _from_cache(text, key)
    if cached is not None:
        say(f"autotune: {cached.backend} matrix products for {job.label()} (measured on this "
            f"machine {cached.measured_at}; --no-autotune skips)")
        matmul.use_measured(job.dtype, cached.backend, cached.reason)
        return cached, None
    if batches is not None and batches < MIN_BATCHES:
        return Tuning("skipped", f"a job of {batches} batch(es): a trial (one more compile, "
                                 f"{MIN_BATCHES} batches) would cost more than it saves",
                      key=key), None
    return _trial(job, key, text, make_step, args, measure or _timed, say, clock)


def _not_applicable(job: Job) -> str | None:
    import jax

    from vitzoo.kernels import matmul

    mode = matmul.mode()
    if mode != "auto":
        return f"{matmul.ENV}={mode} fixes the backend"
    if jax.default_backend() != "cpu":
        return f"JAX runs on {jax.default_backend()}: the backends compared are the CPU's"
    problem = matmul.kernel_problem()
    if problem:
        return f"oneDNN kernel unavailable: {problem}"
    if job.processes > 1:
        return "several processes: each would measure alone"
    return None


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _timed(backend: str, run: Callable[[], Any]) -> list[float]:
    """:data:`WARMUP` untimed calls (trace, compile, first allocations), then :data:`REPEATS`
    timed calls."""
    for _ in range(WARMUP):
        run()
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        seconds.append(max(time.perf_counter() - start, 1e-9))
    return seconds


def _trial(job: Job, key: dict[str, Any], text: str, make_step: Callable[[], Callable[..., Any]],
           args: tuple[Any, ...], measure: Measure, say: Callable[[str], None],
           clock: Callable[[], float]) -> tuple[Tuning, Callable[..., Any] | None]:
    import jax

    from vitzoo.kernels import matmul
    from vitzoo.runtime import AUTOTUNE_BUDGET_ENV, autotune_budget

    with matmul.measured(job.dtype, None):
        default = matmul.matmul_backend(job.dtype)[0]
    order = [default, "onednn" if default == "xla" else "xla"]
    budget = autotune_budget(len(order))
    say(f"autotune: timing the forward of {job.label()} with XLA's and oneDNN's matrix "
        f"products (at most {budget:.0f} s; --no-autotune or VITZOO_AUTOTUNE=0 skips)...")
    started = clock()
    steps: dict[str, Callable[..., Any]] = {}
    results: list[dict[str, Any]] = []
    for backend in order:
        spent = clock() - started
        if steps and 2 * spent > budget:  # the next costs about what the first did
            results.append({"backend": backend, "img_per_sec": None,
                            "error": f"not tried: ~{spent:.0f} s more would pass the {budget:.0f} s "
                                     f"budget (raise {AUTOTUNE_BUDGET_ENV} to measure it)"})
            continue
        step = make_step()

        def run(step: Callable[..., Any] = step) -> Any:
            return jax.block_until_ready(step(*args))

        try:
            with matmul.measured(job.dtype, backend):
                seconds = measure(backend, run)
        except Exception as exc:  # the rule's own backend fails the real work too: raise it
            if backend == default:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            results.append({"backend": backend, "img_per_sec": None, "error": first[:200]})
            continue
        steps[backend] = step
        results.append({"backend": backend, "img_per_sec": job.global_batch / min(seconds),
                        "seconds": [round(s, 4) for s in seconds]})
    spent = round(clock() - started, 1)
    measured = [r for r in results if r["img_per_sec"] is not None]
    best = max(measured, key=lambda r: r["img_per_sec"])  # the first (the rule's) on a tie
    numbers = ", ".join(f"{r['backend']} {r['img_per_sec']:.1f} img/s" if r["img_per_sec"]
                        else f"{r['backend']}: {r['error']}" for r in results)
    tuning = Tuning("trial", f"autotune: {numbers} on this machine ({job.label()})",
                    best["backend"], key, results, budget, spent,
                    time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    where = _remember(text, tuning)  # also a partial trial: the next run would pay it again
    if len(measured) < len(results):  # until the budget grows (see _from_cache)
        say(f"autotune: kept {best['backend']} in {spent:.0f} s ({numbers}); {where}")
    else:
        say(f"autotune: chose {best['backend']} matrix products in {spent:.0f} s ({numbers}); "
            f"{where}")
    matmul.use_measured(job.dtype, tuning.backend, tuning.reason)
    return tuning, steps[best["backend"]]


def _from_cache(text: str, key: dict[str, Any]) -> Tuning | None:
    from vitzoo.runtime import autotune_budget, autotune_entry

    entry = autotune_entry(SECTION, text)
    if entry is None or entry.get("backend") not in ("xla", "onednn"):
        return None
    partial = any(m.get("img_per_sec") is None for m in entry.get("measurements", []))
    if partial and autotune_budget(2) > float(entry.get("budget_s") or 0):
        return None  # a candidate was left out for its budget, and the budget is larger now
    return Tuning("cache", str(entry.get("reason") or "measured on this machine"),
                  entry["backend"], key, entry.get("measurements", []), entry.get("budget_s"),
                  entry.get("spent_s"), entry.get("measured_at"))


def _remember(text: str, tuning: Tuning) -> str:
    """Store the trial's winner under ``VITZOO_HOME``; says where, or why not."""
    from vitzoo.runtime import remember_autotune

    entry = {k: v for k, v in asdict(tuning).items() if k not in ("source", "key")}
    return remember_autotune(SECTION, text, entry)
