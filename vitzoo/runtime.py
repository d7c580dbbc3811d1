"""How JAX runs on this machine: XLA:CPU flags, host devices and the compilation cache.

Chosen in one place, before JAX starts its backends, and returned as a dict that the
commands record in ``run.json``, so a run says which settings produced its speed.

- Host devices: XLA:CPU runs one program per device and parallelises a ViT's many small
  operations (197-token attention, LayerNorm, GELU) poorly across cores. One host device
  per physical core, fed by the data-parallel ``pmap`` path, keeps every core busy.
- Flags: the host device count is the only flag added; the other XLA:CPU flags measured
  side by side did not earn a place (benchmarks/RESULTS.md, "flags"). The user's own
  ``XLA_FLAGS`` always win.
- Host memory: glibc's malloc gives every block of 128 KiB or more its own ``mmap`` and
  returns it to the kernel when freed, so an XLA:CPU program re-faults (and the kernel
  re-zeroes) its large activation buffers on every call. :func:`keep_freed_buffers` makes
  malloc keep those up to 32 MiB, and with ``VITZOO_MALLOC_TUNING=retain`` every block,
  at a cost in memory (measured: ``python benchmarks/levers.py --group malloc``).
- Compilation cache: JAX's persistent cache under ``VITZOO_HOME/compile-cache`` turns the
  seconds of compiling a train step into a file read on every later run of the same
  shapes. It is on by default; ``--no-compile-cache`` or ``VITZOO_COMPILE_CACHE=0`` turn
  it off. A size limit is always set, because only then does JAX lock the cache folder
  while reading and writing, which is what lets concurrent runs share it safely.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitzoo.atomic import output_dir
from vitzoo.errors import VitzooError

CACHE_ENV = "VITZOO_COMPILE_CACHE"
CACHE_MAX_BYTES = 4 << 30  # a ViT-L train step is ~50 MB; many runs fit
CACHE_MIN_COMPILE_S = 0.5  # skip trivial programs; a train step takes seconds
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_OFF = {"0", "false", "no", "off"}
MALLOC_ENV = "VITZOO_MALLOC_TUNING"
#: glibc's ceiling for ``M_MMAP_THRESHOLD`` on 64-bit (``HEAP_MAX_SIZE / 2``); larger
#: values are refused, so blocks above it are still mapped one by one.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = (1 << 31) - 1  # the largest int mallopt takes: never give the heap back
#: ``retain``: mallopt's int -1 becomes glibc's size_t maximum, a threshold no heap reaches.
RETAIN_TRIM_THRESHOLD = (1 << 64) - 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8  # <malloc.h>
#: glibc reads these at start-up; a user who set one has chosen for themselves.
_MALLOC_USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


@dataclass(frozen=True)
class CpuInfo:
    """What the flag choice looks at: the CPU model, its physical cores and ISA flags."""

    model: str
    physical_cores: int
    flags: frozenset[str]

    def as_dict(self) -> dict[str, Any]:
        simd = sorted(f for f in self.flags if f.startswith(("avx512", "amx", "avx_vnni")))
        return {"model": self.model, "physical_cores": self.physical_cores, "simd": simd}


def parse_cpuinfo(text: str, logical: int) -> CpuInfo:
    """``/proc/cpuinfo`` contents -> :class:`CpuInfo`; physical cores from (package, core) pairs."""
    model, flags, cores = "", frozenset[str](), set()
    package = core = None
    for line in [*text.splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not model:
            model = value
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "physical id":
            package = value
        elif key == "core id":
            core = value
        elif not key:  # blank line: end of one logical processor
            if core is not None:
                cores.add((package, core))
            package = core = None
    return CpuInfo(model or platform.processor() or "unknown", len(cores) or logical, flags)


def cpu_info() -> CpuInfo:
    """This machine's CPU (``/proc/cpuinfo`` on Linux, the logical count elsewhere)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    info = parse_cpuinfo(text, logical or 1)
    # A container may be limited to fewer CPUs than the host has cores.
    return CpuInfo(info.model, max(1, min(info.physical_cores, logical or 1)), info.flags)


def choose_xla_flags(cpu: CpuInfo, existing: str = "") -> list[str]:
    """The flags to add to ``existing`` (the user's ``XLA_FLAGS``), which always win."""
    present = {m.group(1) for m in re.finditer(r"(--[\w]+)", existing)}
    if DEVICE_COUNT_FLAG not in present and cpu.physical_cores > 1:
        return [f"{DEVICE_COUNT_FLAG}={cpu.physical_cores}"]
    return []


_cli_choice: bool | None = None  # --[no-]compile-cache of the running command


def set_compile_cache_choice(flag: bool | None) -> None:
    """Remember the command line's ``--[no-]compile-cache`` (None: back to the environment)."""
    global _cli_choice
    _cli_choice = flag


def compile_cache_wanted(flag: bool | None = None) -> bool:
    """``flag`` if given, else the command line's choice, else ``VITZOO_COMPILE_CACHE`` (on)."""
    for choice in (flag, _cli_choice):
        if choice is not None:
            return choice
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in _OFF


AUTOTUNE_ENV = "VITZOO_AUTOTUNE"
_cli_autotune: bool | None = None  # --[no-]autotune of the running command


def set_autotune_choice(flag: bool | None) -> None:
    """Remember the command line's ``--[no-]autotune`` (None: back to the environment)."""
    global _cli_autotune
    _cli_autotune = flag


def autotune_wanted(flag: bool | None = None) -> tuple[bool, str]:
    """Whether to measure this machine's fastest settings, and what decided it.

    ``flag`` if given, else the command line's ``--[no-]autotune``, else ``VITZOO_AUTOTUNE``
    (on by default: the trial runs once per machine and shapes, with a bounded cost).
    """
    for choice in (flag, _cli_autotune):
        if choice is not None:
            return choice, "--autotune" if choice else "--no-autotune"
    value = os.environ.get(AUTOTUNE_ENV, "").strip()
    if value.lower() in _OFF:
        return False, f"{AUTOTUNE_ENV}={value}"
    return True, f"{AUTOTUNE_ENV}={value}" if value else "default"


AUTOTUNE_BUDGET_ENV = "VITZOO_AUTOTUNE_BUDGET"
#: Seconds per setting (or forward candidate) tried, the default autotune budget's share
#: (``VITZOO_AUTOTUNE_BUDGET`` unset).
#: Why per setting: a child must start Python and JAX, compile the train step (no compile
#: cache in the child; ViT-Ti/16 compiles in ~10-20 s on a laptop CPU), run the compiling
#: step 0 and then at least one timed step (Ti/16, batch 64, 2 cores: ~4.9 s at the 13
#: img/s of benchmarks/RESULTS.md), so ~25-30 s before it yields one number. The former
#: fixed 120 s gave each of a 2-core machine's 4 settings 30 s; with the product stage, 5
#: settings would get 24 s, under one timed step on a slow laptop. So the default grows
#: with the settings tried: 150 s for 5, and still 120 s where the stage is not offered.
AUTOTUNE_SHARE_S = 30.0


def autotune_budget(settings: int) -> float:
    """``VITZOO_AUTOTUNE_BUDGET`` (seconds), else :data:`AUTOTUNE_SHARE_S` per setting tried."""
    text = os.environ.get(AUTOTUNE_BUDGET_ENV, "").strip()
    if not text:
        return AUTOTUNE_SHARE_S * settings
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise VitzooError(f"{AUTOTUNE_BUDGET_ENV} must be a positive number of seconds, "
                          f"got {text!r}", f"e.g. {AUTOTUNE_BUDGET_ENV}=120, or "
                          "VITZOO_AUTOTUNE=0 to skip the trial")
    return value


def autotune_cache_path() -> Path:
    """``VITZOO_HOME/autotune.json``: the trials' winners (fine-tune settings, forward backends)."""
    from vitzoo.config import vitzoo_home

    return vitzoo_home() / "autotune.json"


def autotune_entry(section: str, text: str) -> dict[str, Any] | None:
    """The winner remembered under ``section`` (``entries``: fine-tune, ``forward``) for ``text``."""
    from vitzoo.atomic import read_json_state

    found = read_json_state(autotune_cache_path()).get(section)
    entry = found.get(text) if isinstance(found, dict) else None
    return entry if isinstance(entry, dict) else None


def remember_autotune(section: str, text: str, entry: dict[str, Any]) -> str:
    """Store a trial's ``entry`` under ``section`` (atomic, locked); says where, or why not.

    A failure is said, not raised: the winner is a speed-up, not an output, so the run goes on.
    """
    from vitzoo.atomic import update_json

    def change(data: dict[str, Any]) -> None:
        found = data.get(section)
        if not isinstance(found, dict):
            found = data[section] = {}
        found[text] = entry

    path = autotune_cache_path()
    try:
        update_json(path, change)
    except (OSError, VitzooError) as exc:
        return f"not remembered ({getattr(exc, 'message', exc)})"
    return f"remembered in {path}"


def compile_cache_dir() -> Path:
    """``VITZOO_HOME/compile-cache``; JAX keys entries by program, jaxlib version and flags."""
    from vitzoo.config import vitzoo_home

    return vitzoo_home() / "compile-cache"


def backends_started() -> bool:
    """Whether JAX has started its backends (from then on XLA_FLAGS are fixed)."""
    import jax._src.xla_bridge as xb

    return bool(xb.backends_are_initialized())


def configure(*, compile_cache: bool | None = None, xla_flags: bool = True,
              tuned_flags: list[str] | None = None) -> dict[str, Any]:
    """Apply this machine's settings before JAX's first computation; returns what is in effect.

    Flags and the device count only take effect if JAX has not started its backends yet
    (a command calls this first) and ``xla_flags`` is true (single-device work such as
    ``predict`` passes False: more host devices would not help it); otherwise they are
    left alone and the returned ``xla_flags_applied`` says so. ``tuned_flags``: flags
    measured fastest on this machine (:mod:`vitzoo.adapt.autotune`), added before the
    default choice, which then leaves a device count they set alone. The compilation
    cache can be switched at any time.
    """
    malloc = keep_freed_buffers()  # before JAX starts a thread: retain's one arena binds them all
    cpu = cpu_info()
    existing = os.environ.get("XLA_FLAGS", "")
    import jax

    added: list[str] = []
    applied = xla_flags and not backends_started()
    if applied:
        tuned = list(tuned_flags or [])
        added = tuned + choose_xla_flags(cpu, " ".join([existing, *tuned]))
        if added:
            os.environ["XLA_FLAGS"] = " ".join([existing, *added]).strip()
    cache = compile_cache_wanted(compile_cache)
    cache_dir = _set_compile_cache(compile_cache_dir() if cache else None)
    return {
        "cpu": cpu.as_dict(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "xla_flags_added": added,
        "xla_flags_applied": applied,
        "compile_cache": str(cache_dir) if cache_dir else None,
        "malloc": malloc,
        "jax": jax.__version__,
    }


def keep_freed_buffers() -> dict[str, int] | None:
    """Make glibc's malloc reuse freed blocks instead of unmapping them.

    WHY: by default glibc serves every block of 128 KiB or more with its own ``mmap`` and
    unmaps it on ``free``; it raises that threshold only when it sees such a block freed,
    and which blocks it sees depends on what ran first in the process. A ViT-Ti forward
    of 64 images then took ~530k minor page faults per call (the kernel zeroing 2 GiB)
    and ran at about half the speed of the same program in a process where something
    else had raised the threshold first: the "process-wide effect" of RESULTS.md. Fixing
    the thresholds up front gives every process the fast behaviour from its first call.
    The price: freed heap memory stays with the process (its peak RSS is unchanged).

    glibc caps the threshold at 32 MiB, and a train step's scratch buffer is one block of
    gigabytes, still mapped and re-faulted on every step (~955k faults per Ti/16 step).
    ``VITZOO_MALLOC_TUNING=retain`` goes further: no block is mapped on its own
    (``M_MMAP_MAX`` 0), every thread allocates from the main heap (``M_ARENA_MAX`` 1;
    other arenas map large blocks whatever the settings) and the heap is never trimmed,
    so after a few steps nothing is faulted again. The price is memory: the heap keeps
    its holes (a Ti/16 fine-tune's peak RSS: 7.0 instead of 5.2 GiB, a bare one-device
    train loop's 12.9 GB), and the gain was not there in every configuration measured,
    which is why it is asked for, not the default (benchmarks/RESULTS.md: levers.py
    --group malloc and finetune.py measure both).

    Returns the settings applied, or None where they were not (not glibc, the user set
    glibc's own malloc variables, or ``VITZOO_MALLOC_TUNING=0``). Idempotent.
    """
    mode = malloc_mode()
    if mode is None:
        return None
    if any(name in os.environ for name in _MALLOC_USER_ENV):
        return None
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    # mallopt returns 1 on success; setting either threshold also stops glibc's own
    # adjustment of both, which is the point: the same behaviour in every process.
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return None
    settings = {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    if mode == "retain":
        if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_ARENA_MAX, 1)
                and libc.mallopt(_M_TRIM_THRESHOLD, -1)):
            return None
        settings |= {"trim_threshold": RETAIN_TRIM_THRESHOLD, "mmap_max": 0, "arena_max": 1}
    return settings


def tune_malloc_early() -> None:
    """:func:`keep_freed_buffers` as the first thing a command does, before any thread runs.

    WHY: glibc gives every thread that allocates while arenas are unlimited an arena of its
    own, and a thread arena unmaps each extra 64 MiB heap as soon as it empties, whatever
    the thresholds. Threads started before a command's :func:`configure` (numpy's BLAS
    pool, TensorFlow's) kept theirs under ``retain``, and XLA's workers were handed those
    arenas: measured on a ViT-Ti/16 forward of 64 images, 65-81k page faults per batch
    with ``retain`` applied at configure() against 16k applied first. A bad setting is not
    an error here: catalog commands do not care, and the commands that compute report it
    from :func:`configure`.
    """
    with contextlib.suppress(VitzooError):
        keep_freed_buffers()


def malloc_mode() -> str | None:
    """``VITZOO_MALLOC_TUNING``: None (off), ``keep`` (the default) or ``retain``."""
    text = os.environ.get(MALLOC_ENV, "1").strip().lower()
    if text in _OFF:
        return None
    if text in ("", "1", "true", "yes", "on", "keep"):
        return "keep"
    if text == "retain":
        return "retain"
    raise VitzooError(f"{MALLOC_ENV}={text!r} is not a malloc setting",
                      f"use {MALLOC_ENV}=1 (keep freed blocks up to 32 MiB, the default), "
                      "retain (keep every freed block: faster training, more memory) or 0")


def _set_compile_cache(cache_dir: Path | None) -> Path | None:
    """Point JAX at ``cache_dir``; returns the folder in use (None: off).

    An unwritable ``VITZOO_HOME`` turns the cache off instead of failing a command that
    only reads (predict, evaluate): the cache saves time, it is not an output.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if cache_dir is not None:
        try:
            output_dir(cache_dir, "the compile cache")
        except VitzooError:
            cache_dir = None
    current = jax.config.jax_compilation_cache_dir
    wanted = str(cache_dir) if cache_dir else None
    if cache_dir is not None:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    if current != wanted:
        jax.config.update("jax_compilation_cache_dir", wanted)
        compilation_cache.reset_cache()  # JAX decides once per process whether to use it
    return cache_dir



#: Environment read by TensorFlow's C++ logging when it loads: level 2 keeps errors and hides
#: INFO and WARNING lines (TensorFlow up to 2.18 honours it for every message).
QUIET_LIBRARY_ENV: dict[str, str] = {"TF_CPP_MIN_LOG_LEVEL": "2"}
#: Imports whose start-up notices are filtered: TensorFlow 2.19+ logs the oneDNN notice through
#: absl before reading TF_CPP_MIN_LOG_LEVEL, once per library that registers it (so twice),
#: each after absl's "All log messages before absl::InitializeLog()" warning.
NOISY_IMPORTS = ("tensorflow",)
_NOTICE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                     r"|I\d{4} [\d:.]+\s+\d+ \S+:\d+\] )")


def quiet_library_logs() -> dict[str, str]:
    """Hide the heavy libraries' start-up notices; returns the environment variables it set.

    The CLI calls this before any command runs (``vitzoo --verbose`` skips it). A value
    already in the environment wins. The first import of each of :data:`NOISY_IMPORTS`
    then runs with the process's stderr (file descriptor 2, where C++ writes) captured;
    afterwards every captured line but absl's INFO lines and its InitializeLog warning is
    written out, so errors and warnings still show.
    """
    applied = {key: value for key, value in QUIET_LIBRARY_ENV.items() if key not in os.environ}
    os.environ.update(applied)
    pending = [name for name in NOISY_IMPORTS if name not in sys.modules]
    if pending and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(pending))
    return applied


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``names`` with the other finders and runs their loaders with stderr filtered."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        self.names.discard(name)  # once: later imports find the module in sys.modules
        if not self.names:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # resources, get_data, is_package, ...
        return getattr(self._loader, name)


@contextlib.contextmanager
def _filtered_stderr():
    """File descriptor 2 goes to a temporary file; its lines, less the notices, are replayed."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NOTICE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def require_accelerator() -> None:
    """Stop when this machine has a GPU or TPU but JAX only sees the CPU (``--allow-cpu`` runs anyway).

    Call it after :func:`configure` (and ``jax.distributed.initialize``): asking JAX for its
    platform starts the backends. The hardware probes are cheap and jax-free
    (:mod:`vitzoo.accelerators`); they run only when JAX did choose the CPU.
    """
    from vitzoo import accelerators

    if accelerators.cpu_allowed():
        return
    import jax

    platform = jax.default_backend()
    problem = accelerators.unused_accelerator(platform, accelerators.detect() if platform == "cpu"
                                              else None)
    if problem:
        from vitzoo.errors import VitzooError

        raise VitzooError(problem, accelerators.ALLOW_CPU_FIX)
