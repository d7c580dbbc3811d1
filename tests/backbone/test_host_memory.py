"""runtime.keep_freed_buffers: large blocks come from malloc's heap (kept and reused), not
from one ``mmap`` each. The oracle is the kernel's own view of the process,
``/proc/self/maps``: where a freshly allocated 20 MiB block lives, in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT
from vitzoo import runtime

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc only")

# Allocate 20 MiB (well above glibc's default 128 KiB mmap threshold, below vitzoo's
# 32 MiB) and report whether its address lies inside the [heap] segment.
WHERE_IS_THE_BLOCK = """
import ctypes, json, sys
from vitzoo import runtime
settings = runtime.keep_freed_buffers() if sys.argv[1] == "tuned" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
address = libc.malloc(20 << 20)
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
inside = any(int(lo, 16) <= address < int(hi, 16) for lo, hi in heap)
print(json.dumps({"settings": settings, "in_heap": inside}))
"""


def _where(mode: str, env: dict[str, str] | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in (runtime.MALLOC_ENV, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                          "GLIBC_TUNABLES")}
    proc = subprocess.run([sys.executable, "-c", WHERE_IS_THE_BLOCK, mode], capture_output=True,
                          text=True, env={**clean, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_default_malloc_maps_a_large_block_on_its_own():
    assert _where("default") == {"settings": None, "in_heap": False}


def test_tuned_malloc_serves_a_large_block_from_the_heap():
    result = _where("tuned")
    assert result["in_heap"] is True
    assert result["settings"] == {"mmap_threshold": 32 << 20, "trim_threshold": 2**31 - 1}


@pytest.mark.parametrize("env", [{runtime.MALLOC_ENV: "0"},
                                 {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_turned_off_or_users_own_malloc_settings_are_left_alone(env):
    assert _where("tuned", env) == {"settings": None, "in_heap": False}


def test_configure_records_the_malloc_settings(tmp_path):
    code = ("import json; from vitzoo import runtime; "
            "print(json.dumps(runtime.configure(xla_flags=False)['malloc']))")
    clean = {k: v for k, v in os.environ.items() if k != runtime.MALLOC_ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(REPO_ROOT),
                               "VITZOO_HOME": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "mmap_threshold": 32 << 20, "trim_threshold": 2**31 - 1}


# A block far above glibc's 32 MiB ceiling, allocated from a second thread (its own arena
# unless arenas are limited), touched, freed and allocated again: where it lives, and how
# many pages the kernel had to fault in for the second touch (the oracle: getrusage).
REUSE_A_LARGE_BLOCK = """
import ctypes, json, resource, sys, threading
from vitzoo import runtime
settings = runtime.keep_freed_buffers()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size, found = 200 << 20, {}

def work():
    first = libc.malloc(size)
    ctypes.memset(first, 1, size)
    libc.free(first)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = libc.malloc(size)
    ctypes.memset(again, 1, size)
    found["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    found["address"] = again

thread = threading.Thread(target=work)
thread.start()
thread.join()
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
inside = any(int(lo, 16) <= found["address"] < int(hi, 16) for lo, hi in heap)
print(json.dumps({"settings": settings, "in_heap": inside, "faults": found["faults"]}))
"""


def _reuse(mode: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in (runtime.MALLOC_ENV, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                          "GLIBC_TUNABLES")}
    proc = subprocess.run([sys.executable, "-c", REUSE_A_LARGE_BLOCK], capture_output=True,
                          text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(REPO_ROOT), runtime.MALLOC_ENV: mode})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_keep_still_maps_a_block_above_32_mib_and_faults_it_in_again():
    result = _reuse("1")
    assert result["in_heap"] is False
    assert result["faults"] >= (200 << 20) // 4096 // 2  # ~51k pages of 4 KiB, re-zeroed


def test_retain_reuses_a_freed_block_of_any_size_without_a_fault():
    result = _reuse("retain")
    assert result["settings"] == {"mmap_threshold": 32 << 20, "trim_threshold": 2**64 - 1,
                                  "mmap_max": 0, "arena_max": 1}
    assert result["in_heap"] is True  # the main heap, though a second thread allocated it
    assert result["faults"] < 1000  # the pages were kept: nothing to fault in


def test_an_unknown_malloc_setting_is_one_line(monkeypatch):
    from vitzoo.errors import VitzooError

    monkeypatch.setenv(runtime.MALLOC_ENV, "always")
    with pytest.raises(VitzooError) as caught:
        runtime.keep_freed_buffers()
    assert "VITZOO_MALLOC_TUNING='always' is not a malloc setting" in caught.value.message
    assert "retain" in caught.value.hint


def test_the_command_line_tunes_malloc_before_its_command_runs(monkeypatch, capsys):
    from vitzoo import cli

    seen: list[bool] = []
    monkeypatch.setattr(runtime, "keep_freed_buffers",
                        lambda: seen.append("vitzoo.catalog.api" in sys.modules))
    monkeypatch.delitem(sys.modules, "vitzoo.catalog.api", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.main(["list", "--arch", "Ti/16", "--limit", "1"])
    assert done.value.code == 0
    assert seen == [False]  # called once, before the command imported its modules


def test_a_bad_malloc_setting_does_not_stop_a_catalog_command(monkeypatch, capsys):
    from vitzoo import cli

    monkeypatch.setenv(runtime.MALLOC_ENV, "always")
    with pytest.raises(SystemExit) as done:
        cli.main(["list", "--arch", "Ti/16", "--limit", "1"])
    assert done.value.code == 0
    assert "Ti_16" in capsys.readouterr().out  # the checkpoint row was listed
