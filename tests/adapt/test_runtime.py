"""vitzoo.runtime: CPU facts, XLA flag and device choice, the persistent compilation cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT as ROOT
from tests.support.adapt_helpers import cli, color_image, run_python, tiny_checkpoint, write_folder
from vitzoo import runtime

CPUINFO_2_SOCKETS_HT = "\n".join(
    f"processor\t: {i}\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16 "
    f"amx_tile\nphysical id\t: {i // 4}\ncore id\t\t: {i % 2}\n"
    for i in range(8))  # 8 logical CPUs = 2 sockets x 2 cores x 2 hyperthreads


def test_parse_cpuinfo_counts_physical_cores_and_reads_flags():
    cpu = runtime.parse_cpuinfo(CPUINFO_2_SOCKETS_HT, logical=8)
    assert cpu.model == "Test CPU 9000"
    assert cpu.physical_cores == 4
    assert {"avx512f", "avx512_bf16", "amx_tile"} <= cpu.flags
    assert cpu.as_dict()["simd"] == ["amx_tile", "avx512_bf16", "avx512f"]


def test_parse_cpuinfo_without_core_ids_falls_back_to_logical_count():
    cpu = runtime.parse_cpuinfo("processor\t: 0\nmodel name\t: VM\n\n", logical=3)
    assert (cpu.model, cpu.physical_cores) == ("VM", 3)


def test_flags_give_one_host_device_per_physical_core():
    cpu = runtime.CpuInfo("x", 4, frozenset())
    chosen = runtime.choose_xla_flags(cpu, "")
    assert chosen == [f"{runtime.DEVICE_COUNT_FLAG}=4"]


def test_users_xla_flags_win():
    cpu = runtime.CpuInfo("x", 4, frozenset())
    existing = f"--xla_cpu_use_thunk_runtime=false {runtime.DEVICE_COUNT_FLAG}=8"
    assert runtime.choose_xla_flags(cpu, existing) == []


def test_single_core_gets_no_device_flag():
    chosen = runtime.choose_xla_flags(runtime.CpuInfo("x", 1, frozenset()))
    assert not any(f.startswith(runtime.DEVICE_COUNT_FLAG) for f in chosen)


@pytest.mark.parametrize(("env", "flag", "expected"), [
    (None, None, True), ("0", None, False), ("off", None, False), ("1", None, True),
    ("0", True, True), (None, False, False)])
def test_compile_cache_choice_flag_over_environment(monkeypatch, env, flag, expected):
    if env is None:
        monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(runtime.CACHE_ENV, env)
    assert runtime.compile_cache_wanted(flag) is expected


def test_command_line_choice_is_remembered_until_cleared(monkeypatch):
    monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
    try:
        runtime.set_compile_cache_choice(False)
        assert runtime.compile_cache_wanted() is False
        assert runtime.compile_cache_wanted(True) is True
    finally:
        runtime.set_compile_cache_choice(None)
    assert runtime.compile_cache_wanted() is True


# A fresh process: configure() before JAX starts, then a few compiled programs. The
# minimum compile time is lowered so that these tiny programs are cached too.
CONFIGURE = """
import json, sys
from vitzoo import runtime
record = runtime.configure()
import jax, jax.numpy as jnp
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
values = [float(jax.jit(lambda x, k=k: jnp.sin(x * k).sum() + k)(jnp.arange(64.0)))
          for k in range(6)]
print(json.dumps({"record": record, "devices": jax.local_device_count(), "values": values,
                  "hits": len(hits)}))
"""


def _configure(home, env=None, flags=None, code=CONFIGURE):
    full = {"VITZOO_HOME": str(home), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**_base_env(), **full, **({"XLA_FLAGS": flags} if flags is not None else {})})
    return proc


def _base_env():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.CACHE_ENV)}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _cache_entries(home):
    folder = home / "compile-cache"
    return sorted(p.name for p in folder.glob("*-cache")) if folder.is_dir() else []


def test_configure_in_fresh_process_applies_devices_flags_and_cache(tmp_path):
    result = _result(_configure(tmp_path))
    record = result["record"]
    cores = record["cpu"]["physical_cores"]
    assert record["xla_flags_applied"] is True
    assert result["devices"] == cores
    assert all(flag in record["xla_flags"] for flag in record["xla_flags_added"])
    assert record["compile_cache"] == str(tmp_path / "compile-cache")
    assert len(_cache_entries(tmp_path)) >= 6


def test_users_device_count_is_kept_and_cache_can_be_turned_off(tmp_path):
    result = _result(_configure(tmp_path, env={runtime.CACHE_ENV: "0"},
                                flags=f"{runtime.DEVICE_COUNT_FLAG}=3"))
    assert result["devices"] == 3
    assert result["record"]["compile_cache"] is None
    assert not any(f.startswith(runtime.DEVICE_COUNT_FLAG)
                   for f in result["record"]["xla_flags_added"])
    assert _cache_entries(tmp_path) == []


def test_single_device_work_can_skip_the_flags(tmp_path):
    code = CONFIGURE.replace("runtime.configure()", "runtime.configure(xla_flags=False)")
    result = _result(_configure(tmp_path, code=code))
    assert result["devices"] == 1
    assert result["record"]["xla_flags_applied"] is False and result["record"]["xla_flags"] == ""
    assert result["record"]["compile_cache"] == str(tmp_path / "compile-cache")


@pytest.mark.slow
def test_concurrent_processes_share_the_cache_without_corrupting_it(tmp_path):
    procs = [_configure(tmp_path) for _ in range(3)]
    first = [_result(p) for p in procs]
    assert first[0]["values"] == first[1]["values"] == first[2]["values"]
    entries = _cache_entries(tmp_path)
    assert len(entries) >= 6
    again = _result(_configure(tmp_path))  # every entry written concurrently loads and runs
    assert again["hits"] >= 6
    assert again["values"] == first[0]["values"]
    assert _cache_entries(tmp_path) == entries


@pytest.mark.slow
def test_finetune_records_runtime_in_run_json_and_honours_no_compile_cache(tmp_path):
    write_folder(tmp_path / "data", color_image, ["r", "g"], train=4, test=2, size=40)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    args = ["finetune", str(ckpt), "--dataset", str(tmp_path / "data"), "--steps", "2",
            "--warmup", "1", "--batch", "4", "--res", "32", "--eval-every", "0",
            "--no-progress", "--no-register"]
    homes = {"on": tmp_path / "home-on", "off": tmp_path / "home-off"}
    for mode, home in homes.items():
        extra = [] if mode == "on" else ["--no-compile-cache"]
        proc = cli([*args, "--workdir", str(tmp_path / mode), *extra], devices=2,
                   env={"VITZOO_HOME": str(home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    on = json.loads((tmp_path / "on" / "run.json").read_text())["runtime"]
    off = json.loads((tmp_path / "off" / "run.json").read_text())["runtime"]
    assert on["compile_cache"] == str(homes["on"] / "compile-cache")
    assert off["compile_cache"] is None
    assert f"{runtime.DEVICE_COUNT_FLAG}=2" in on["xla_flags"]  # the test's own flag kept
    assert on["cpu"]["physical_cores"] >= 1 and on["xla_flags_applied"] is True
    assert _cache_entries(homes["on"])
    assert _cache_entries(homes["off"]) == []


def test_configure_after_jax_started_leaves_flags_alone():
    proc = run_python("""
        import json, jax
        jax.numpy.zeros(1).block_until_ready()
        from vitzoo import runtime
        print(json.dumps(runtime.configure(compile_cache=False)))
    """, devices=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["xla_flags_applied"] is False and record["xla_flags_added"] == []
    assert record["xla_flags"] == f"{runtime.DEVICE_COUNT_FLAG}=1"
