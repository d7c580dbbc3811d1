"""Autotune's last stage: which library computes the dense products (oneDNN or XLA).

As in test_autotune.py, timings come through the measurement seam and the choice is
checked against the table the test writes. The kernel's availability is a seam too
(``autotune.kernel_problem``); one test builds it for real in a fresh process (with a
stand-in compiler) to check that deciding never starts JAX, and one slow test times a real
child on oneDNN's products.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace

import jax.numpy as jnp
import pytest

from tests.adapt.test_autotune import CPU_A, ONEDNN, TINY_SHAPES, VERSIONS, Timings, _options
from tests.adapt.test_autotune import tune_here as _tune_here
from tests.support import REPO_ROOT
from vitzoo import runtime
from vitzoo.adapt import autotune
from vitzoo.adapt.autotune_trial import (
    Measurement,
    Setting,
    child_env,
    measure_in_child,
    read_measurement,
)
from vitzoo.errors import VitzooError
from vitzoo.kernels import matmul

CPU_BF16 = runtime.CpuInfo("Test CPU C (bf16 units)", 2, frozenset({"avx512_bf16"}))
#: The greedy's settings before the product stage, on CPU_A with _options(): 64 images.
BEFORE = [Setting(2, 32), Setting(2, 16), Setting(1, 16), Setting(2, 16, ONEDNN)]


@pytest.fixture
def offered(monkeypatch):
    """Autotune on, ``VITZOO_CPU_MATMUL=auto`` and the kernel built: the stage is offered."""
    _tune_here(monkeypatch)
    monkeypatch.setenv(matmul.ENV, "auto")
    asked: list[int] = []

    def built() -> None:
        asked.append(1)

    monkeypatch.setattr(autotune, "kernel_problem", built)
    return asked


@pytest.fixture
def clean_products():
    """This process's measured winners are put back after the test (they outlive a run)."""
    yield
    for dtype in (jnp.float32, jnp.bfloat16):
        matmul.use_measured(dtype, None)


def _decide(timings, *, cpu=CPU_A, lines=None, **overrides):
    return autotune.decide(_options(**overrides), measure=timings, cpu=cpu, versions=VERSIONS,
                           say=(lines.append if lines is not None else lambda _: None))


def _products(setting: Setting, backend: str | None) -> Setting:
    return replace(setting, cpu_matmul=backend)


# --- offered or not ---------------------------------------------------------------------


@pytest.mark.parametrize(("table", "winner"), [
    # oneDNN's products beat XLA's on top of the best so far: they win
    ({Setting(2, 32): 10.0, Setting(2, 16): 12.0, Setting(1, 16): 11.0,
      Setting(2, 16, ONEDNN): 9.0, Setting(2, 16, cpu_matmul="onednn"): 13.5},
     Setting(2, 16, cpu_matmul="onednn")),
    # they lose (custom calls break XLA's fusions): the rule's backend stays
    ({Setting(2, 32): 10.0, Setting(2, 16): 12.0, Setting(1, 16): 11.0,
      Setting(2, 16, ONEDNN): 9.0, Setting(2, 16, cpu_matmul="onednn"): 11.9},
     Setting(2, 16)),
    # on top of the XLA flag that won the stage before
    ({Setting(2, 32): 10.0, Setting(2, 16): 12.0, Setting(1, 16): 11.0,
      Setting(2, 16, ONEDNN): 14.0, Setting(2, 16, ONEDNN, "onednn"): 14.5},
     Setting(2, 16, ONEDNN, "onednn")),
])
def test_float32_tries_onednn_last_and_the_faster_wins(offered, table, winner):
    timings = Timings(table)
    decision = _decide(timings)
    best_before = max(BEFORE, key=lambda s: table[s])
    assert timings.tried == [*BEFORE, _products(best_before, "onednn")]
    assert decision.setting == winner == max(timings.tried, key=lambda s: table[s])


def test_bf16_on_a_cpu_with_bf16_units_tries_xla_against_the_rules_onednn(offered):
    table = {Setting(2, 32): 10.0, Setting(2, 16): 9.0, Setting(1, 32): 8.0,
             Setting(2, 32, ONEDNN): 7.0, Setting(2, 32, cpu_matmul="xla"): 10.5}
    timings = Timings(table)
    decision = _decide(timings, cpu=CPU_BF16, dtype="bfloat16")
    assert timings.tried[-1] == Setting(2, 32, cpu_matmul="xla")
    assert decision.setting == Setting(2, 32, cpu_matmul="xla")


def test_bf16_without_bf16_units_tries_onednn(offered):
    timings = Timings({}, default=1.0)
    _decide(timings, dtype="bfloat16")  # CPU_A: no bf16 units, the rule says XLA
    assert timings.tried[-1] == Setting(2, 32, cpu_matmul="onednn")


def test_the_printed_count_includes_the_stage_and_is_what_is_tried(offered):
    lines: list[str] = []
    timings = Timings({}, default=1.0)
    decision = _decide(timings, lines=lines)
    assert lines[0].startswith("autotune: trying up to 5 settings for Ti/16 224px b64 float32 "
                               "(at most 150 s")  # AUTOTUNE_SHARE_S per setting
    assert len(timings.tried) == 5 == len(decision.measurements)
    assert "2 host devices, micro-batch 32, oneDNN products: 1.0 img/s" in lines[1]


@pytest.mark.parametrize("mode", ["xla", "onednn"])
def test_the_users_backend_is_never_tuned(offered, monkeypatch, mode):
    monkeypatch.setenv(matmul.ENV, mode)
    lines: list[str] = []
    timings = Timings({}, default=1.0)
    _decide(timings, lines=lines)
    assert [s.cpu_matmul for s in timings.tried] == [None] * 4
    assert "trying up to 4 settings" in lines[0]
    assert offered == []  # the kernel is not even looked for


def test_no_kernel_no_stage(offered, monkeypatch):
    monkeypatch.setattr(autotune, "kernel_problem", lambda: "no C++ compiler found")
    timings = Timings({}, default=1.0)
    _decide(timings)
    assert len(timings.tried) == 4 and {s.cpu_matmul for s in timings.tried} == {None}


def test_an_accelerator_machine_is_not_tuned_and_no_kernel_is_built(offered, monkeypatch):
    from vitzoo.accelerators import Accelerator

    monkeypatch.setattr("vitzoo.accelerators.detect", lambda: Accelerator("gpu", "test"))
    timings = Timings({}, default=1.0)
    assert _decide(timings).source == "skipped"
    assert timings.tried == [] and offered == []


def test_with_the_users_flags_and_accum_the_backend_is_still_a_choice(offered, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{runtime.DEVICE_COUNT_FLAG}=2")
    timings = Timings({Setting(2, 8): 5.0, Setting(2, 8, cpu_matmul="onednn"): 6.0})
    decision = _decide(timings, accum="4")
    assert timings.tried == [Setting(2, 8), Setting(2, 8, cpu_matmul="onednn")]
    assert decision.setting.cpu_matmul == "onednn" and decision.tuned_flags() == []


# --- remembered ---------------------------------------------------------------------------


def test_the_backend_is_cached_and_the_kernel_not_looked_for_again(offered, monkeypatch):
    table = {Setting(2, 32): 10.0, Setting(2, 32, cpu_matmul="onednn"): 12.0}
    assert _decide(Timings(table)).setting == Setting(2, 32, cpu_matmul="onednn")
    (entry,) = json.loads(runtime.autotune_cache_path().read_text())["entries"].values()
    assert entry["choice"] == {"host_devices": 2, "micro_batch": 32, "xla_flags": [],
                               "cpu_matmul": "onednn"}
    monkeypatch.setattr(autotune, "_decided", {})  # a later command
    offered.clear()
    again = Timings(table)
    decision = _decide(again)
    assert decision.source == "cache" and again.tried == [] and offered == []
    assert decision.setting == Setting(2, 32, cpu_matmul="onednn")
    backend, reason = decision.matmul_choice()
    assert backend == "onednn"
    assert reason.startswith("autotune: oneDNN 12.0 vs XLA 10.0 img/s, measured on this machine ")


def _write_entry(choice: dict, **overrides) -> None:
    """A cache entry for ``_options(**overrides)`` on CPU_A, as an older vitzoo wrote it."""
    from vitzoo.adapt.autotune_trial import Shapes

    options = _options(**overrides)
    shapes = Shapes(asdict(autotune.run_config(options.model)), options.res, options.dtype,
                    options.momentum_dtype)
    key = autotune.cache_key(CPU_A, VERSIONS, shapes, options.batch, options.accum, "")
    entry = {"key": key, "choice": choice, "measured_at": "2026-11-30 10:00 UTC",
             "measurements": [{"setting": choice, "img_per_sec": 11.0}]}
    runtime.autotune_cache_path().parent.mkdir(parents=True, exist_ok=True)
    runtime.autotune_cache_path().write_text(json.dumps(
        {"entries": {json.dumps(key, sort_keys=True): entry}}))


def test_an_entry_from_before_the_stage_still_loads_as_the_rules_backend(offered,
                                                                          clean_products):
    _write_entry({"host_devices": 1, "micro_batch": 16, "xla_flags": list(ONEDNN)})
    timings = Timings({}, default=1.0)
    decision = _decide(timings)
    assert decision.source == "cache" and timings.tried == []
    assert decision.setting == Setting(1, 16, ONEDNN, None)
    assert decision.setting.describe() == f"1 host device, micro-batch 16, {ONEDNN[0]}"
    assert decision.matmul_choice() == (None, "")  # the stage never ran: nothing measured
    matmul.use_measured(jnp.float32, "onednn", "an earlier run in this process")
    autotune.apply_matmul(decision, "float32")
    assert jnp.dtype(jnp.float32).name not in matmul._measured  # the rule again


def test_an_entry_with_an_unknown_backend_is_measured_again(offered):
    _write_entry({"host_devices": 2, "micro_batch": 32, "xla_flags": [], "cpu_matmul": "mkl"})
    timings = Timings({}, default=1.0)
    assert _decide(timings).source == "trial" and timings.tried


# --- the child ------------------------------------------------------------------------------


def test_the_child_runs_under_the_settings_backend():
    parent = {matmul.ENV: "auto", "PATH": "/bin"}
    assert child_env(Setting(2, 8, cpu_matmul="onednn"), "", parent)[matmul.ENV] == "onednn"
    assert child_env(Setting(2, 8, cpu_matmul="xla"), "", parent)[matmul.ENV] == "xla"
    assert child_env(Setting(2, 8), "", parent)[matmul.ENV] == "auto"  # the rule, as untuned
    assert matmul.ENV not in child_env(Setting(2, 8), "", {"PATH": "/bin"})
    env = child_env(Setting(2, 8, ONEDNN, "onednn"), "", parent)
    assert env["XLA_FLAGS"] == f"{runtime.DEVICE_COUNT_FLAG}=2 {ONEDNN[0]}"


def test_a_child_on_the_wrong_backend_is_not_measured():
    steps = "".join(json.dumps({"step": i, "seconds": 0.5}) + "\n" for i in range(4))
    wrong = read_measurement(Setting(1, 4, cpu_matmul="onednn"),
                             json.dumps({"devices": 1, "matmul": "xla"}) + "\n" + steps, "", 0,
                             3.0, 10.0)
    assert wrong.img_per_sec is None and "with xla, not onednn" in wrong.error
    right = read_measurement(Setting(1, 4, cpu_matmul="onednn"),
                             json.dumps({"devices": 1, "matmul": "onednn"}) + "\n" + steps, "",
                             0, 3.0, 10.0)
    assert right.error is None and right.img_per_sec == pytest.approx(4 / 0.5)
    rule = read_measurement(Setting(1, 4), json.dumps({"devices": 1, "matmul": "onednn"}) + "\n"
                            + steps, "", 0, 3.0, 10.0)
    assert rule.error is None  # None: whatever the rule chose is the measurement


def test_settings_name_only_known_backends():
    with pytest.raises(ValueError, match="mkl"):
        Setting(1, 8, cpu_matmul="mkl")
    assert Setting.from_dict(Setting(1, 8, (), "xla").as_dict()) == Setting(1, 8, (), "xla")


# --- applied in the run's process -------------------------------------------------------------


def _decision(backend: str | None, devices: int) -> autotune.Decision:
    chosen = Setting(devices, 8, (), backend)
    measurements = [Measurement(Setting(devices, 8), 15.2), Measurement(chosen, 18.1)]
    return autotune.Decision("trial", "first run", chosen, {"k": 1},
                             [m.as_dict() for m in measurements], 120.0, 90.0,
                             "2026-12-02 16:00 UTC")


def _start_with(monkeypatch, decision: autotune.Decision, dtype: str = "float32"):
    """``start_runtime`` of a run whose autotune decided ``decision`` (JAX already started)."""
    import jax

    from vitzoo.adapt.runner import start_runtime

    jax.local_device_count()  # started: start() leaves XLA_FLAGS alone, as in a sweep's later runs
    monkeypatch.setattr(autotune, "decide", lambda options, cluster=None: decision)
    monkeypatch.setattr(matmul, "kernel_problem", lambda: None)  # as if built and loaded
    monkeypatch.setattr(matmul, "onednn_isa", lambda: "test-isa")
    return start_runtime(_options(dtype=dtype))


def test_the_winner_reaches_the_runs_products_and_run_json(monkeypatch, clean_products):
    import jax

    monkeypatch.setenv(matmul.ENV, "auto")
    devices = jax.local_device_count()
    settings = _start_with(monkeypatch, _decision("onednn", devices))
    reason = "autotune: oneDNN 18.1 vs XLA 15.2 img/s, measured on this machine 2026-12-02 16:00 UTC"
    assert matmul.matmul_backend(jnp.float32) == ("onednn", reason)  # what the model will trace
    assert settings["matmul"] == {"backend": "onednn", "reason": reason, "mode": "auto",
                                  "isa": "test-isa"}
    assert settings["autotune"]["choice"]["cpu_matmul"] == "onednn"
    assert settings["autotune"]["in_effect"] is True
    assert matmul.matmul_backend(jnp.bfloat16)[1] != reason  # only the run's dtype


def test_the_users_backend_wins_over_a_remembered_one(monkeypatch, clean_products):
    import jax

    monkeypatch.setenv(matmul.ENV, "xla")
    settings = _start_with(monkeypatch, _decision("onednn", jax.local_device_count()))
    assert settings["matmul"]["backend"] == "xla" and settings["matmul"]["reason"] == \
        f"{matmul.ENV}=xla"
    assert settings["autotune"]["in_effect"] is False


@pytest.mark.parametrize(("dtype", "rule", "tried"), [("float32", "xla", "onednn"),
                                                       ("bfloat16", "onednn", "xla")])
def test_where_the_rules_backend_won_the_record_gives_the_numbers(monkeypatch, clean_products,
                                                                   dtype, rule, tried):
    import jax

    monkeypatch.setenv(matmul.ENV, "auto")
    devices = jax.local_device_count()
    chosen, loser = Setting(devices, 8), Setting(devices, 8, (), tried)
    decision = autotune.Decision("cache", "x", chosen, {"k": 1},
                                 [Measurement(chosen, 15.2).as_dict(),
                                  Measurement(loser, 11.0).as_dict()], measured_at="today")
    monkeypatch.setattr(matmul, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    settings = _start_with(monkeypatch, decision, dtype)
    names = {"xla": "XLA", "onednn": "oneDNN"}
    assert settings["matmul"]["backend"] == rule
    assert settings["matmul"]["reason"] == (f"autotune: {names[rule]} 15.2 vs {names[tried]} "
                                            "11.0 img/s, measured on this machine today")


def test_a_run_without_a_tuned_backend_puts_the_rule_back(monkeypatch, clean_products):
    import jax

    monkeypatch.setenv(matmul.ENV, "auto")
    _start_with(monkeypatch, _decision("onednn", jax.local_device_count()))
    settings = _start_with(monkeypatch, autotune.Decision("skipped", "a dry run"))
    assert settings["matmul"]["backend"] == "xla"  # float32's rule
    assert settings["matmul"]["reason"] == "compute dtype is float32, not bfloat16"
    assert matmul.matmul_backend(jnp.float32)[0] == "xla"


# --- deciding never starts JAX ------------------------------------------------------------------

DECIDE_IN_A_FRESH_PROCESS = """
import json, sys
from vitzoo import runtime
from vitzoo.adapt import autotune
from vitzoo.adapt.autotune_trial import Measurement
from vitzoo.adapt.options import FinetuneOptions

tried = []
def measure(setting, shapes, seconds):
    tried.append(setting.cpu_matmul)
    return Measurement(setting, 1.0)
options = FinetuneOptions(model="random:Ti/16", dataset="x", batch=8, res=32)
cpu = runtime.CpuInfo("Test CPU A", 2, frozenset())
autotune.decide(options, measure=measure, cpu=cpu, say=lambda _: None)
print(json.dumps({"started": runtime.backends_started(), "tried": tried,
                  "problem": autotune.kernel_problem()}))
"""


def test_deciding_builds_the_kernel_without_starting_jax(tmp_path):
    """The real kernel check (a stand-in compiler that writes the file) in a fresh process."""
    compiler = tmp_path / "fake-g++"
    compiler.write_text(textwrap.dedent("""\
        #!/bin/sh
        while [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done
        """))
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), runtime.AUTOTUNE_ENV: "1",
           matmul.ENV: "auto", "CXX": str(compiler), "VITZOO_HOME": str(tmp_path / "home")}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", DECIDE_IN_A_FRESH_PROCESS], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["started"] is False
    try:
        from vitzoo.kernels.build import find_onednn

        find_onednn()
    except VitzooError:  # no oneDNN wheel here: the stage is not offered
        assert result["problem"] and "onednn" not in result["tried"]
    else:
        assert result["problem"] is None and result["tried"][-1] == "onednn"
    assert result["tried"].count("onednn") <= 1


# --- one real child -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_child_computes_with_onednn_when_its_setting_says_so(monkeypatch):
    from vitzoo.kernels import build

    try:
        build.find_onednn()
        build.find_compiler()
    except VitzooError as exc:
        pytest.skip(f"oneDNN kernel unavailable here: {exc.one_line()}")
    monkeypatch.setenv(matmul.ENV, "auto")  # the child's setting must override the rule
    measured = measure_in_child(Setting(1, 2, cpu_matmul="onednn"), TINY_SHAPES, 300)
    assert measured.error is None, measured.error  # the child said it computed with oneDNN
    assert measured.timed_steps == 3 and measured.img_per_sec > 0
