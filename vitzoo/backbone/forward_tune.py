"""Which matrix-product backend runs a forward fastest here: timed once, then remembered.

Why: oneDNN's float32 GEMM beat XLA's by 3-20% on ViT shapes on an AMD EPYC, but the
``auto`` rule of :mod:`vitzoo.kernels.matmul` uses oneDNN only for bfloat16, and on another
CPU XLA may win. No fixed rule is right everywhere, so the first time a forward's shapes
run on a machine (probe feature extraction, ``predict``, ``evaluate``), its first batches
are computed by each backend in turn (:func:`vitzoo.kernels.matmul.measured`), a
:class:`Race`: the trial is the job's own work, and costs one more compile. Each candidate has
:data:`WARMUP` untimed batches (the compile, then one that settles the allocator: oneDNN's
first calls grow its scratch memory), then the fastest of :data:`REPEATS` timed batches
counts, since noise on a shared machine only ever slows a batch down (one trial on a busy
2-core machine took a median that ranked XLA first by 4% where oneDNN ran 1.39x faster in
a quiet process, benchmarks/RESULTS.md). The faster is used
(:func:`vitzoo.kernels.matmul.use_measured`) and remembered in ``VITZOO_HOME/autotune.json``
under :data:`SECTION` (the fine-tune trial's settings live under ``entries``), keyed by
:func:`cache_key`. The winner's compiled forward does the rest of the work.

The rule's backend runs first, so a trial that runs out of its budget
(``VITZOO_AUTOTUNE_BUDGET``, shared with the fine-tune trial) keeps it: the second
candidate is tried only when its estimated extra cost fits (on the job's batches: one
compile; on random input, where a decision is needed before the job ran, everything).
Such a partial answer is remembered too, and measured again once the budget is larger
than the one it had.

No trial: ``--no-autotune`` / ``VITZOO_AUTOTUNE=0`` (off); ``VITZOO_CPU_MATMUL`` set to
``xla`` or ``onednn``, JAX not on a CPU, the kernel missing, several processes (each would
measure alone, and they must run the same number of collective steps), or a job shorter
than :data:`MIN_BATCHES` batches (skipped: it could not finish the trial). A remembered
answer is used wherever a trial could run, a short job included, since it costs nothing.
Without a trial or an answer the forward is traced with the rule's backend (float32: XLA).

``evaluate`` races its own evaluation step (programs ``evaluate`` and ``evaluate
multilabel``: the sums or gathered logits, not the pre-logits) on the split's batches, as
``predict`` races its logits step; no :class:`~vitzoo.backbone.Forward` (and no second copy
of the parameters) is built for it.
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
#: A trial's length in batches: a shorter job (a predict of a few images) could not finish
#: one, so it uses a remembered answer or the rule's default, and remembers nothing.
MIN_BATCHES = 2 * (WARMUP + REPEATS)

@dataclass(frozen=True)
class Job:
    """What decides a forward's speed: the program, the model, and the shapes it runs."""

    program: str  # "features" (pre-logits, probe), "logits" (predict), "evaluate" (its step)
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

    @property
    def pending(self) -> bool:
        """A race still running on the job's batches (its backend is not decided yet)."""
        return self.source == "trial" and self.measured_at is None

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


def decide(job: Job, make_step: Callable[[], Callable[..., Any]], *,
           batches: int | None = None, timer: Callable[..., tuple[Any, float]] | None = None,
           say: Callable[[str], None] | None = None, cpu: Any = None,
           versions: dict[str, str | None] | None = None) -> tuple[Tuning, Race | None]:
    """The backend for ``job``, or a :class:`Race` to find it on the job's batches.

    ``make_step()`` returns a fresh jitted/pmapped ``step(*args)`` (traced at its first
    call, with the backend in effect then) over a function object made by that call: JAX
    caches traces by function, and the backend is not part of its key, so two steps over
    one function share the first one's products. ``batches``: how many batches the job runs
    (None: enough for a trial). Without a race the caller traces its own step inside
    :meth:`Tuning.applied`; with one, the race is the step (its :attr:`Race.tuning` is the
    returned :class:`Tuning`, filled in when it ends). ``timer``, ``cpu`` and ``versions``
    are seams for tests.
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
        return Tuning("skipped", f"a job of {batches} batch(es): too short for a trial "
                                 f"({MIN_BATCHES} batches)", key=key), None
    with matmul.measured(job.dtype, None):
        default = matmul.matmul_backend(job.dtype)[0]
    order = [default, "onednn" if default == "xla" else "xla"]
    race = Race(job, key, text, make_step, order, runtime.autotune_budget(len(order)), say,
                timer or _timed)
    return race.tuning, race


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


def _timed(backend: str, run: Callable[[], Any]) -> tuple[Any, float]:
    """One call of ``run`` (which waits for its result): its output and its seconds."""
    start = time.perf_counter()
    out = run()
    return out, max(time.perf_counter() - start, 1e-9)


class Race:
    """A trial that computes the job's own batches: ``race(*args)`` is the step while it runs.

    Each call runs the next planned candidate on the real input and returns its output, so
    a trial costs what the job would have cost anyway, plus the second candidate's compile
    (and its batches, if it loses): a ViT-B/16 forward whose first candidate took ~87 s to
    compile and time on random input, more than the budget, is raced for the price of one
    more compile. The plan: the rule's backend, :data:`WARMUP` untimed calls (its compile
    is the job's, not the trial's); then the other, if its compile (estimated by the
    first's: the first call's excess over a settled one) fits the budget, :data:`WARMUP`
    untimed calls; then :data:`REPEATS` timed rounds alternating the two, so a machine that
    slows down or speeds up during the trial weighs on both alike. Then the winner is used,
    remembered, and ``race(*args)`` calls the winner's compiled step.

    :meth:`finish` drives an unfinished race on given input (random pixels) when something
    needs the decision before the job has run enough batches (the probe's img/s); those
    calls are the trial's own cost and count against the budget in full.
    A call whose input has another shape than the first (a smaller last batch) runs outside
    the plan with the rule's backend. A race the job leaves unfinished decides nothing and
    remembers nothing; :attr:`tuning` then says so.
    """

    def __init__(self, job: Job, key: dict[str, Any], text: str,
                 make_step: Callable[[], Callable[..., Any]], order: list[str], budget: float,
                 say: Callable[[str], None], timer: Callable[..., tuple[Any, float]]) -> None:
        self.job, self._text, self._make_step, self._order = job, text, make_step, order
        self._budget, self._say, self._timer = budget, say, timer
        self.tuning = Tuning("trial", f"autotune: unfinished, the job ran fewer batches than "
                                      f"the trial's {MIN_BATCHES} ({job.label()})",
                             key=key, budget_s=budget)
        self._plan: list[tuple[str, bool]] = [(order[0], False)] * WARMUP
        self._steps: dict[str, Callable[..., Any]] = {}
        self._seconds: dict[str, list[float]] = {backend: [] for backend in order}
        self._first: dict[str, list[float]] = {backend: [] for backend in order}
        self._errors: dict[str, str] = {}
        self._overhead = 0.0  # seconds of calls made only for the trial (finish)
        self._driven: set[str] = set()  # candidates whose first call was such a call
        self._shape: Any = None
        self._winner: Callable[..., Any] | None = None

    @property
    def done(self) -> bool:
        return self._winner is not None

    @property
    def winner(self) -> Callable[..., Any] | None:
        """The winning candidate's compiled step, once decided (no third compile)."""
        return self._winner

    def __call__(self, *args: Any) -> Any:
        return self._call(args, driven=False)

    def finish(self, *args: Any) -> Tuning:
        """Run the rest of the trial on ``args`` (its cost: the trial's); the decision."""
        while not self.done:
            self._call(args, driven=True)
        return self.tuning

    def _call(self, args: tuple[Any, ...], *, driven: bool) -> Any:
        import jax

        from vitzoo.kernels import matmul

        if self._winner is not None:
            return self._winner(*args)
        shape = [(getattr(a, "shape", None), str(getattr(a, "dtype", type(a))))
                 for a in jax.tree_util.tree_leaves(args)]
        if self._shape is None:
            self._shape = shape
            self._say(f"autotune: timing the forward of {self.job.label()} with XLA's and "
                      f"oneDNN's matrix products on its first {MIN_BATCHES} batches (at most "
                      f"{self._budget:.0f} s more; --no-autotune or VITZOO_AUTOTUNE=0 skips)...")
        elif shape != self._shape:  # not a planned call: the rule's backend computes it
            with matmul.measured(self.job.dtype, self._order[0]):
                return self._step(self._order[0])(*args)
        backend, timed = self._plan.pop(0)
        step = self._step(backend)
        try:
            with matmul.measured(self.job.dtype, backend):
                out, seconds = self._timer(backend, lambda: jax.block_until_ready(step(*args)))
        except Exception as exc:  # the rule's own backend fails the real work too: raise it
            if backend == self._order[0]:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._errors[backend] = first[:200]
            self._plan = [(b, t) for b, t in self._plan if b != backend]
            with matmul.measured(self.job.dtype, self._order[0]):
                out = jax.block_until_ready(self._step(self._order[0])(*args))
            seconds = 0.0
        if driven:
            self._overhead += seconds
            if not (self._first[backend] or self._seconds[backend]):
                self._driven.add(backend)
        (self._seconds if timed else self._first)[backend].append(seconds)
        if not self._plan:
            self._extend_plan(driven)
        if not self._plan:
            self._decide()
        return out

    def _step(self, backend: str) -> Callable[..., Any]:
        if backend not in self._steps:
            self._steps[backend] = self._make_step()
        return self._steps[backend]

    def _extend_plan(self, driven: bool) -> None:
        """After the first candidate's warm-up: race the second, or only time the first."""
        first, second = self._order
        if self._seconds[first] or second in self._errors:
            return  # the timed rounds have run
        warm = self._first[first]
        compile_s = max(warm[0] - warm[-1], 0.0)  # the first call's excess over a settled one
        cost = compile_s + (len(warm) + REPEATS) * warm[-1] * driven  # random input: all of it
        if self._overhead + cost <= self._budget:
            self._plan = [(second, False)] * WARMUP + [(first, True), (second, True)] * REPEATS
        else:
            from vitzoo.runtime import AUTOTUNE_BUDGET_ENV

            self._errors[second] = (f"not tried: ~{cost:.0f} s more would pass the "
                                    f"{self._budget:.0f} s budget (raise {AUTOTUNE_BUDGET_ENV} "
                                    f"to measure it)")
            self._plan = [(first, True)] * REPEATS

    def _decide(self) -> None:
        from vitzoo.kernels import matmul

        results: list[dict[str, Any]] = []
        for backend in self._order:
            seconds = self._seconds[backend]
            if seconds:
                results.append({"backend": backend,
                                "img_per_sec": self.job.global_batch / min(seconds),
                                "seconds": [round(s, 4) for s in seconds]})
            else:
                results.append({"backend": backend, "img_per_sec": None,
                                "error": self._errors.get(backend, "not run")})
        measured = [r for r in results if r["img_per_sec"] is not None]
        best = max(measured, key=lambda r: r["img_per_sec"])  # the first (the rule's) on a tie
        numbers = ", ".join(f"{r['backend']} {r['img_per_sec']:.1f} img/s" if r["img_per_sec"]
                            else f"{r['backend']}: {r['error']}" for r in results)
        warm = self._first[self._order[1]]  # its compile: the trial's cost on real work
        compile_s = warm[0] - warm[-1] if warm and self._order[1] not in self._driven else 0.0
        tuning = self.tuning
        tuning.reason = f"autotune: {numbers} on this machine ({self.job.label()})"
        tuning.backend, tuning.measurements = best["backend"], results
        tuning.spent_s = round(self._overhead + max(compile_s, 0.0), 1)
        tuning.measured_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        where = _remember(self._text, tuning)  # also a partial trial: see _from_cache
        verb = "kept" if len(measured) < len(results) else "chose"
        self._say(f"autotune: {verb} {best['backend']} matrix products ({numbers}; the trial "
                  f"cost ~{tuning.spent_s:.0f} s); {where}")
        matmul.use_measured(self.job.dtype, tuning.backend, tuning.reason)
        self._winner = self._steps[best["backend"]]


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
