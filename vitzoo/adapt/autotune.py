"""The fastest runtime settings for this machine and a run's shapes, measured once.

Why: which settings train fastest on a CPU depends on the CPU. One host device per core
won 1.38x on one machine; XLA's oneDNN custom call won 1.24x on an AMD EPYC and lost 29%
on an Intel Xeon (benchmarks/RESULTS.md, "Train-step levers"). No fixed default is right
everywhere, so the first time a fine-tune's shapes are seen on a machine, a few
candidate settings are timed (:mod:`vitzoo.adapt.autotune_trial`, one child process each,
because the device count and ``XLA_FLAGS`` are fixed once JAX starts) and the fastest is
remembered in ``VITZOO_HOME/autotune.json``, keyed by CPU model and cores, jax and jaxlib
versions and the run's shapes. Later runs with the same key apply it with no trial.

The search is greedy, one setting at a time from what vitzoo does without it (the
baseline): a smaller micro-batch (the per-device batch split by accumulation), then one
host device with all cores instead of one per core, then each flag of
:data:`TRIAL_FLAGS`, then, last, the other matrix-product backend: vitzoo's oneDNN kernel
(:mod:`vitzoo.kernels.matmul`) where the rule uses XLA's products (float32, or bf16 on a
CPU without bf16 units), XLA's where it uses oneDNN. oneDNN's GEMM beat XLA's float32 one
by 3-20% on an AMD EPYC, but its custom calls break XLA's fusions, so only a whole train
step says which wins; it comes last because it changes the program the other stages
timed. Each stage starts from the fastest so far. The whole trial is bounded by a budget
in seconds (``VITZOO_AUTOTUNE_BUDGET``, default :data:`vitzoo.runtime.AUTOTUNE_SHARE_S` per setting),
shared out between the settings still to try; it is printed before and after. A setting
whose steps do not finish in its share is not measured and cannot win.

The chosen backend is applied in the run's process with
:func:`vitzoo.kernels.matmul.use_measured` (:func:`apply_matmul`, after JAX starts and
before the model is traced) and shows in run.json's ``runtime.matmul``.

Explicit settings win and are never tuned: ``XLA_FLAGS`` set by the user fix the devices
and flags, ``--accum N`` fixes the micro-batch, ``VITZOO_CPU_MATMUL=xla|onednn`` the
backend (the stage is offered only under ``auto``, and only where the kernel can be
built: :func:`decide` runs before JAX starts, so it asks :func:`kernel_problem`, never
``matmul.available()``, which would start JAX's backends and fix the devices and flags).
``--no-autotune`` or ``VITZOO_AUTOTUNE=0`` skip the trial; so do runs on an accelerator
(the settings are the CPU's) and multi-process runs (each process would measure alone).
A cache entry written before the backend stage existed (or where the kernel could not be
built) keeps the rule's backend; delete the file to measure again.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo import runtime
from vitzoo.adapt.autotune_trial import (
    MATMUL_NAMES,
    Measurement,
    Setting,
    Shapes,
    measure_in_child,
)
from vitzoo.errors import VitzooError
from vitzoo.versions import jax_versions

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.adapt.accumulation import BatchPlan
    from vitzoo.adapt.options import FinetuneOptions
    from vitzoo.backbone.distributed import Cluster
    from vitzoo.models import ModelConfig

#: XLA:CPU flag sets worth a trial, each because it helped on some CPU (RESULTS.md, as above).
#: Each exists in jaxlib 0.10 (tests/adapt/test_autotune.py starts JAX with it); a flag a
#: later jaxlib drops makes its child fail, which only loses that setting.
TRIAL_FLAGS: tuple[tuple[str, ...], ...] = (("--xla_cpu_experimental_onednn_custom_call=true",),)
#: The section of ``autotune.json`` holding the fine-tune trial's winners.
SECTION = "entries"
#: Raised when the search gains a stage, so that a machine's remembered winners are measured
#: again with it (2: the matrix-product backend stage).
SEARCH_VERSION = 2
#: The smaller micro-batch tried: at most half the baseline's and at most this many images.
SMALL_MICRO_BATCH = 16

#: ``(setting, shapes, seconds) -> Measurement``: the measurement seam (tests inject timings).
Measure = Callable[[Setting, Shapes, float], Measurement]

_decided: dict[str, Decision] = {}  # this process's decisions by shapes: a sweep tunes once


@dataclass
class Decision:
    """What autotune decided for a run, and why; :meth:`record` is run.json's ``runtime.autotune``."""

    source: str  # trial | cache | off | skipped
    reason: str
    setting: Setting | None = None
    key: dict[str, Any] | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    budget_s: float | None = None
    spent_s: float | None = None
    measured_at: str | None = None
    user_flags: bool = False  # the user's XLA_FLAGS fix the devices and flags

    def matmul_choice(self) -> tuple[str | None, str]:
        """The product backend the trial measured fastest, and its numbers; (None, ""): none.

        The setting's own backend when it names one; the rule's when the stage ran and the
        rule's won (the setting names none, but the other backend was measured on top of
        it); None when the stage never ran (not offered, an entry from before it, off).
        The reason is e.g. ``autotune: oneDNN 18.1 vs XLA 15.2 img/s, measured on this
        machine ...`` (run.json's ``runtime.matmul.reason``).
        """
        if self.setting is None:
            return None, ""
        rates: dict[Setting, Any] = {}
        for entry in self.measurements:
            try:
                rates[Setting.from_dict(entry["setting"])] = entry.get("img_per_sec")
            except (KeyError, TypeError, ValueError):
                continue
        chosen = self.setting.cpu_matmul
        if chosen is None:  # the rule's: named only if the other one was tried against it
            tried = [name for name in MATMUL_NAMES
                     if replace(self.setting, cpu_matmul=name) in rates]
            if not tried:
                return None, ""
            chosen = next(name for name in MATMUL_NAMES if name != tried[0])
            other = replace(self.setting, cpu_matmul=tried[0])
        else:  # the stage started from the setting with the rule's backend
            other = replace(self.setting, cpu_matmul=None)

        def rate(value: Any) -> str:
            return f"{value:.1f}" if isinstance(value, (int, float)) else "not measured"

        when = f", measured on this machine {self.measured_at}" if self.measured_at else ""
        loser = next(name for name in MATMUL_NAMES if name != chosen)
        return chosen, (f"autotune: {MATMUL_NAMES[chosen]} {rate(rates.get(self.setting))} vs "
                        f"{MATMUL_NAMES[loser]} {rate(rates.get(other))} img/s{when}")

    def tuned_flags(self) -> list[str]:
        """The XLA flags to start JAX with (none when the user's own are set)."""
        if self.setting is None or self.user_flags:
            return []
        return [f"{runtime.DEVICE_COUNT_FLAG}={self.setting.host_devices}",
                *self.setting.xla_flags]

    def record(self, local_devices: int | None = None,
               matmul: str | None = None) -> dict[str, Any]:
        """The run record's view; ``local_devices`` and ``matmul`` (the product backend): what
        the run started with, which says whether the choice took effect."""
        record = {k: v for k, v in asdict(self).items() if k not in ("setting", "user_flags")}
        record["choice"] = self.setting.as_dict() if self.setting else None
        if self.setting is not None and local_devices is not None:
            flags = os.environ.get("XLA_FLAGS", "")
            wanted = self.setting.cpu_matmul
            record["in_effect"] = (local_devices == self.setting.host_devices
                                   and all(f in flags for f in self.setting.xla_flags)
                                   and (wanted is None or matmul is None or matmul == wanted))
        return record


def decide(options: FinetuneOptions, *, cluster: Cluster | None = None,
           measure: Measure | None = None, cpu: runtime.CpuInfo | None = None,
           versions: dict[str, str | None] | None = None,
           say: Callable[[str], None] | None = None) -> Decision:
    """The settings for ``options``'s run: from this process, the cache, or a trial now.

    Call before JAX starts. ``measure``, ``cpu`` and ``versions`` are seams for tests
    (defaults: a child process per setting, this machine's CPU, the installed versions).
    """
    say = say or _say
    wanted, why = runtime.autotune_wanted()
    if not wanted:
        return Decision("off", why)
    reason = _not_applicable(cluster)
    config = run_config(options.model)
    if reason or config is None:
        return Decision("skipped", reason or f"the architecture of {options.model!r} is known "
                                              "only once it is loaded")
    shapes = Shapes(asdict(config), options.res, options.dtype, options.momentum_dtype)
    # by shapes alone: the first start put the chosen flags into this process's XLA_FLAGS
    this_run = json.dumps([asdict(shapes), options.batch, options.accum], sort_keys=True)
    if this_run in _decided:
        return _decided[this_run]
    cpu = cpu or runtime.cpu_info()
    user_flags = os.environ.get("XLA_FLAGS", "").strip()
    key = cache_key(cpu, versions or jax_versions(), shapes, options.batch, options.accum, user_flags)
    text = json.dumps(key, sort_keys=True)
    if runtime.backends_started():
        return Decision("skipped", "JAX started earlier in this process: its devices and flags "
                                   "are fixed", key=key)
    decision = _from_cache(key, text)  # first: a remembered choice needs no kernel build
    if decision is None:
        try:
            space = Space.of(options, config, cpu, user_flags)
        except VitzooError as exc:  # the run's own batch plan reports it, later
            return Decision("skipped", f"no batch plan: {exc.message}", key=key)
        if space.count == 1:
            return Decision("skipped", "nothing to choose: the user's XLA_FLAGS and --accum fix "
                                       "every setting", key=key)
        decision = _trial(space, shapes, key, text, measure, say)
    decision.user_flags = bool(user_flags)
    if decision.source == "cache" and decision.setting:
        say(f"autotune: {decision.setting.describe()} for {_label(shapes, options.batch)} "
            f"(measured on this machine {decision.measured_at}; --no-autotune skips)")
    _decided[this_run] = decision
    return decision


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _not_applicable(cluster: Cluster | None) -> str | None:
    from vitzoo import accelerators

    if cluster is not None and cluster.num_processes > 1:
        return "several processes: each would measure alone"
    found = accelerators.detect()
    if found is not None:
        return f"this machine has a {found.kind.upper()}: the trial tunes CPU settings"
    return None


def run_config(model: str) -> ModelConfig | None:
    """The architecture a fine-tune of ``model`` trains, read without JAX; None: unknown yet.

    ``random:ARCH``, an architecture alias, an AugReg file name, or a local ``.npz`` (its
    shapes); a registered run or a URL is known only once resolved and loaded.
    """
    from vitzoo.models import get_config, infer_config
    from vitzoo.weights.untrained import requested_arch

    arch = requested_arch(model)
    path = Path(model).expanduser()
    if arch is None and path.is_file():
        from vitzoo.weights.release import load_npz

        try:
            config, _ = infer_config(load_npz(path))
        except VitzooError:
            return None
        return replace(config, representation_size=None)  # finetune drops it
    for spelling in ([arch] if arch else [model, _augreg_arch(model)]):
        try:
            return get_config(spelling) if spelling else None
        except VitzooError:
            continue
    return None


def _augreg_arch(name: str) -> str | None:
    from vitzoo.names import parse_any

    try:
        parsed = parse_any(name)
    except VitzooError:
        return None
    return getattr(parsed, "pretrained", parsed).arch


def cache_key(cpu: runtime.CpuInfo, versions: dict[str, str | None], shapes: Shapes, batch: int,
              accum: str, user_flags: str) -> dict[str, Any]:
    """What decides the fastest setting: the machine, the libraries and the run's shapes.

    Also the two environment switches that change the program or its memory behaviour
    (``VITZOO_CPU_MATMUL``, ``VITZOO_MALLOC_TUNING``): the trial's children inherit them,
    so a winner measured under one is not applied under the other. And the search's
    :data:`SEARCH_VERSION`: an entry from a search that lacked a stage never tried it.
    """
    from vitzoo.kernels.matmul import mode as matmul_mode

    return {"search": SEARCH_VERSION, "cpu": cpu.model, "physical_cores": cpu.physical_cores,
            "jax": versions.get("jax"), "jaxlib": versions.get("jaxlib"),
            "model": shapes.config, "resolution": shapes.resolution, "batch": batch,
            "dtype": shapes.dtype, "momentum_dtype": shapes.momentum_dtype, "accum": accum,
            "user_xla_flags": user_flags, "cpu_matmul": matmul_mode(),
            "malloc": runtime.malloc_mode()}


# --- the candidates -------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """The settings a trial may try: the baseline, and the alternatives of each stage."""

    baseline: Setting
    devices: tuple[int, ...]  # host device counts, the baseline's first
    flag_sets: tuple[tuple[str, ...], ...]  # extra XLA flags, () first
    per_device: dict[int, int]  # device count -> images per device
    planned_micro: dict[int, int]  # device count -> micro-batch of its plan (memory fit or --accum)
    micro_fixed: bool
    matmul_alternative: str | None = None  # the product backend tried against the rule's

    @classmethod
    def of(cls, options: FinetuneOptions, config: ModelConfig, cpu: runtime.CpuInfo,
           user_flags: str) -> Space:
        from vitzoo.adapt.accumulation import host_device_memory, plan

        if user_flags:  # the user's flags decide the devices and flags
            found = re.search(rf"{runtime.DEVICE_COUNT_FLAG}=(\d+)", user_flags)
            counts, flag_sets = [int(found.group(1)) if found else 1], [()]
        else:
            counts = sorted({cpu.physical_cores, 1}, key=lambda d: d != cpu.physical_cores)
            flag_sets = [(), *TRIAL_FLAGS]
        plans: dict[int, BatchPlan] = {}
        for count in counts:
            try:
                plans[count] = plan(options.batch, options.accum, processes=1,
                                    local_devices=count, config=config, resolution=options.res,
                                    itemsize=2 if options.dtype == "bfloat16" else 4,
                                    memory=host_device_memory(count))
            except VitzooError:
                if count == counts[0]:
                    raise
        first = plans[counts[0]]
        return cls(Setting(counts[0], first.micro_batch), tuple(plans), tuple(flag_sets),
                   {d: p.per_device for d, p in plans.items()},
                   {d: p.micro_batch for d, p in plans.items()}, options.accum != "auto",
                   offered_matmul(options.dtype, cpu))

    def micro_alternatives(self, best: Setting) -> list[Setting]:
        if self.micro_fixed:
            return []
        smaller = _largest_divisor(self.per_device[best.host_devices],
                                   min(best.micro_batch // 2, SMALL_MICRO_BATCH))
        return [replace(best, micro_batch=smaller)] if smaller else []

    def device_alternatives(self, best: Setting) -> list[Setting]:
        """Other device counts with the best micro-batch (``--accum N``: their plan's)."""
        return [replace(best, host_devices=d, micro_batch=self.planned_micro[d]
                        if self.micro_fixed else
                        _largest_divisor(self.per_device[d], best.micro_batch) or 1)
                for d in self.devices if d != best.host_devices]

    def flag_alternatives(self, best: Setting) -> list[Setting]:
        return [replace(best, xla_flags=f) for f in self.flag_sets if f != best.xla_flags]

    def matmul_alternatives(self, best: Setting) -> list[Setting]:
        """The other product backend on top of the best so far (last: it changes the program)."""
        if self.matmul_alternative is None:
            return []
        return [replace(best, cpu_matmul=self.matmul_alternative)]

    @property
    def count(self) -> int:
        """At most this many settings are tried (the baseline included)."""
        micro = 0 if self.micro_fixed or self.baseline.micro_batch < 2 else 1
        matmul = 0 if self.matmul_alternative is None else 1
        return 1 + micro + len(self.devices) - 1 + len(self.flag_sets) - 1 + matmul


def offered_matmul(dtype: str, cpu: runtime.CpuInfo) -> str | None:
    """The product backend a trial tries against the rule's choice for ``dtype``; None: none.

    Offered only under ``VITZOO_CPU_MATMUL=auto`` (the user's ``xla``/``onednn`` is never
    tuned) and when vitzoo's oneDNN kernel is built here (:func:`kernel_problem`). The rule
    is :func:`vitzoo.kernels.matmul.choose_backend` on the CPU (a GPU/TPU machine is never
    tuned): oneDNN for bfloat16 on a CPU with bf16 units, else XLA; the alternative is the
    other one. Does not start JAX, unlike ``matmul.available()``.
    """
    from vitzoo.kernels import matmul

    if matmul.mode() != "auto" or kernel_problem() is not None:
        return None
    rule, _ = matmul.choose_backend("auto", dtype, "cpu", cpu.flags, lambda: None)
    return "xla" if rule == "onednn" else "onednn"


def kernel_problem() -> str | None:
    """None when vitzoo's oneDNN kernel is built here (compiled now if need be), else why not.

    :func:`vitzoo.kernels.build.build` only compiles the shared object; it neither loads it
    nor starts JAX's backends, which must wait for the trial's choice of devices and flags.
    A kernel that is built but does not load fails its child, which only loses that setting.
    """
    from vitzoo.kernels.build import build

    try:
        build()
    except VitzooError as exc:
        return exc.one_line().rstrip(".")
    except OSError as exc:
        return str(exc)
    return None


def _largest_divisor(n: int, at_most: int) -> int | None:
    found = [d for d in range(1, min(n, at_most) + 1) if n % d == 0]
    return found[-1] if found else None


# --- the trial and the cache ----------------------------------------------------------


def search(space: Space, shapes: Shapes, measure: Measure,
           budget_s: float) -> tuple[Setting | None, list[Measurement]]:
    """Greedy: the baseline, then each stage's alternatives from the fastest so far.

    Returns the fastest measured setting (None: nothing measured) and every measurement.
    """
    results: list[Measurement] = []
    started = time.perf_counter()

    def run(setting: Setting) -> None:
        left = budget_s - (time.perf_counter() - started)
        share = left / max(1, space.count - len(results))
        results.append(measure(setting, shapes, share) if left > 0 else
                       Measurement(setting, None, error="the trial's budget was spent"))

    run(space.baseline)
    for stage in (space.micro_alternatives, space.device_alternatives, space.flag_alternatives,
                  space.matmul_alternatives):
        for setting in stage(fastest(results) or space.baseline):
            run(setting)
    return fastest(results), results


def fastest(results: list[Measurement]) -> Setting | None:
    """The setting with the most images per second (the earlier one on a tie); None: none measured."""
    measured = [m for m in results if m.img_per_sec is not None]
    if not measured:
        return None
    return max(measured, key=lambda m: m.img_per_sec or 0.0).setting  # max keeps the first


def _trial(space: Space, shapes: Shapes, key: dict[str, Any], text: str,
           measure: Measure | None, say: Callable[[str], None]) -> Decision:
    budget = runtime.autotune_budget(space.count)
    label = _label(shapes, key["batch"])
    say(f"autotune: trying up to {space.count} settings for {label} (at most {budget:.0f} s; "
        f"--no-autotune or {runtime.AUTOTUNE_ENV}=0 skips)...")
    measure = measure or functools.partial(measure_in_child, user_flags=key["user_xla_flags"])
    started = time.perf_counter()
    best, results = search(space, shapes, measure, budget)
    spent = time.perf_counter() - started
    decision = Decision("trial", "first run of these shapes on this machine", best or space.baseline,
                        key, [m.as_dict() for m in results], budget, round(spent, 1),
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    lines = "; ".join(f"{m.setting.describe()}: "
                      + (f"{m.img_per_sec:.1f} img/s" if m.img_per_sec else str(m.error))
                      for m in results)
    if best is None:
        decision.reason = f"nothing measured within {budget:.0f} s: kept the baseline"
        say(f"autotune: nothing measured within {budget:.0f} s ({lines}); keeping "
            f"{space.baseline.describe()}; raise {runtime.AUTOTUNE_BUDGET_ENV} to measure")
        return decision  # not remembered: a larger budget may measure next time
    where = _remember(text, decision)
    say(f"autotune: chose {best.describe()} in {spent:.0f} s ({lines}); {where}")
    return decision


def _label(shapes: Shapes, batch: int) -> str:
    return f"{shapes.name} {shapes.resolution}px b{batch} {shapes.dtype}"


def _from_cache(key: dict[str, Any], text: str) -> Decision | None:
    entry = runtime.autotune_entry(SECTION, text)
    if entry is None or not isinstance(entry.get("choice"), dict):
        return None
    try:  # an entry written before the product backend was tuned has none: the rule's
        setting = Setting.from_dict(entry["choice"])
    except (KeyError, TypeError, ValueError):
        return None  # not a setting (edited by hand?): measured again
    return Decision("cache", f"measured on this machine {entry.get('measured_at')}",
                    setting, key, entry.get("measurements", []),
                    entry.get("budget_s"), entry.get("spent_s"), entry.get("measured_at"))


def _remember(text: str, decision: Decision) -> str:
    """Store the trial's result under ``VITZOO_HOME``; says where, or why not."""
    entry = {k: v for k, v in decision.record().items() if k not in ("source", "reason")}
    return runtime.remember_autotune(SECTION, text, entry)


# --- applying the choice ----------------------------------------------------------------


def apply_matmul(decision: Decision, dtype: str) -> None:
    """Make ``decision``'s product backend this process's for compute ``dtype``.

    Call once JAX has started and before the run's model is traced (a traced program keeps
    the backend it was traced with). Where the rule's backend won, it is set too, so that
    ``runtime.matmul`` gives the trial's numbers. A decision without a measured backend (the
    stage was not offered, the trial was off or skipped) puts the rule back, so an earlier
    run in the same process does not leak its choice. The user's ``VITZOO_CPU_MATMUL=xla``
    or ``onednn`` always wins (:func:`vitzoo.kernels.matmul.use_measured`).
    """
    from vitzoo.kernels import matmul

    backend, reason = decision.matmul_choice()
    matmul.use_measured(dtype, backend, reason)


def apply_micro_batch(batch_plan: BatchPlan, accum: str,
                      tuned: dict[str, Any] | None) -> BatchPlan:
    """``batch_plan`` with the tuned micro-batch when ``--accum auto`` and it fits memory.

    The memory-fit plan is the ceiling: a tuned micro-batch larger than it is not used.
    """
    choice = (tuned or {}).get("choice")
    if accum != "auto" or not choice:
        return batch_plan
    micro = int(choice["micro_batch"])
    if batch_plan.micro_batch <= micro or batch_plan.per_device % micro:
        return batch_plan
    return replace(batch_plan, accum=batch_plan.per_device // micro)
