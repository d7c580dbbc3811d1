"""vitzoo.adapt.autotune: the fastest measured setting wins, once per machine and shapes.

Timings are injected through the measurement seam (``decide(measure=...)``), so the choice
is checked against a table the test writes, never against a clock. Child processes run for
real where the child itself is the subject (devices and flags applied, a bad flag) and in
one end-to-end ``finetune``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import typer
from typer.testing import CliRunner

from tests.support import REPO_ROOT
from tests.support.adapt_helpers import cli, color_image, tiny_checkpoint, write_folder
from vitzoo import runtime
from vitzoo.adapt import autotune
from vitzoo.adapt.accumulation import BatchPlan
from vitzoo.adapt.autotune_trial import Measurement, Setting, Shapes, measure_in_child
from vitzoo.adapt.options import FinetuneOptions
from vitzoo.backbone.distributed import Cluster
from vitzoo.errors import VitzooError
from vitzoo.models import ModelConfig, get_config

ONEDNN = autotune.TRIAL_FLAGS[0]
CPU_A = runtime.CpuInfo("Test CPU A @ 2.60GHz", 2, frozenset())
VERSIONS = {"jax": "0.10.2", "jaxlib": "0.10.2"}


@pytest.fixture
def tune(monkeypatch):
    """Autotune on, as in a fresh process before JAX starts, on a CPU-only machine."""
    tune_here(monkeypatch)


def tune_here(monkeypatch) -> None:
    """The ``tune`` fixture's settings (tests/adapt/test_autotune_matmul.py builds on them).

    The suite's ``VITZOO_CPU_MATMUL=xla`` stays: the product backend is not tuned here.
    """
    monkeypatch.setenv(runtime.AUTOTUNE_ENV, "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(runtime.AUTOTUNE_BUDGET_ENV, raising=False)
    monkeypatch.setattr(autotune, "_decided", {})
    monkeypatch.setattr(runtime, "backends_started", lambda: False)
    monkeypatch.setattr("vitzoo.accelerators.detect", lambda: None)
    # plenty of memory: the memory-fit micro-batch is the whole per-device batch
    monkeypatch.setattr("vitzoo.adapt.accumulation.host_device_memory", lambda devices: 1 << 40)


class Timings:
    """A measurement seam: images/s from a table (absent: not measured); counts the calls."""

    def __init__(self, table: dict[Setting, float], default: float | None = None) -> None:
        self.table, self.default = table, default
        self.tried: list[Setting] = []

    def __call__(self, setting: Setting, shapes: Shapes, seconds: float) -> Measurement:
        self.tried.append(setting)
        rate = self.table.get(setting, self.default)
        return Measurement(setting, rate, 3 if rate else 0, 1.0,
                           None if rate else "no step finished")


def _options(**overrides) -> FinetuneOptions:
    values = {"model": "random:Ti/16", "dataset": "my_photos", "batch": 64, "res": 224}
    return FinetuneOptions(**{**values, **overrides})


def _decide(timings: Timings, *, cpu=CPU_A, versions=VERSIONS, **overrides):
    return autotune.decide(_options(**overrides), measure=timings, cpu=cpu, versions=versions,
                           say=lambda line: None)


def _new_process(monkeypatch):
    """What a later command sees: nothing decided in this process yet."""
    monkeypatch.setattr(autotune, "_decided", {})


# --- the choice ------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "tried", "winner"), [
    # a smaller micro-batch wins, then the oneDNN flag on top of it
    ({Setting(2, 32): 10.0, Setting(2, 16): 12.0, Setting(1, 16): 11.0,
      Setting(2, 16, ONEDNN): 15.0},
     [Setting(2, 32), Setting(2, 16), Setting(1, 16), Setting(2, 16, ONEDNN)],
     Setting(2, 16, ONEDNN)),
    # one device with both cores (same micro-batch) wins; the flag is tried from there, loses
    ({Setting(2, 32): 10.0, Setting(2, 16): 9.0, Setting(1, 32): 13.0,
      Setting(1, 32, ONEDNN): 7.0},
     [Setting(2, 32), Setting(2, 16), Setting(1, 32), Setting(1, 32, ONEDNN)],
     Setting(1, 32)),
    # the baseline stays when it is the fastest
    ({Setting(2, 32): 20.0, Setting(2, 16): 9.0, Setting(1, 32): 13.0,
      Setting(2, 32, ONEDNN): 19.9},
     [Setting(2, 32), Setting(2, 16), Setting(1, 32), Setting(2, 32, ONEDNN)],
     Setting(2, 32)),
])
def test_the_fastest_measured_setting_wins(tune, table, tried, winner):
    timings = Timings(table)
    decision = _decide(timings)
    assert timings.tried == tried  # greedy: micro-batch, devices, flags, each from the best
    assert decision.source == "trial" and decision.setting == winner
    assert winner == max(tried, key=lambda s: table[s])  # the oracle: the table's maximum
    assert [m["img_per_sec"] for m in decision.measurements] == [table[s] for s in tried]


def test_a_setting_that_was_not_measured_cannot_win(tune):
    # (1, 32) might be fastest but never finished a step within its share of the budget
    timings = Timings({Setting(2, 32): 10.0, Setting(2, 16): 8.0, Setting(2, 32, ONEDNN): 9.0})
    decision = _decide(timings)
    assert Setting(1, 32) in timings.tried
    assert decision.setting == Setting(2, 32)
    unmeasured = [m for m in decision.measurements if m["img_per_sec"] is None]
    assert [m["setting"]["host_devices"] for m in unmeasured] == [1]
    assert "no step finished" in unmeasured[0]["error"]


def test_nothing_measured_keeps_the_baseline_and_is_not_remembered(tune, monkeypatch):
    decision = _decide(Timings({}))
    assert decision.setting == Setting(2, 32) and "nothing measured" in decision.reason
    assert not runtime.autotune_cache_path().exists()
    _new_process(monkeypatch)
    again = Timings({})
    _decide(again)
    assert again.tried  # a later run tries again (a larger budget may measure)


def test_the_trial_never_runs_past_its_budget(tune, monkeypatch):
    # every setting uses its whole share (a fake clock): the shares add up to the budget
    monkeypatch.setenv(runtime.AUTOTUNE_BUDGET_ENV, "40")
    clock = [1000.0]
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: clock[0])
    shares: list[float] = []

    def measure(setting, shapes, seconds):
        shares.append(seconds)
        clock[0] += seconds
        return Measurement(setting, 1.0)

    decision = autotune.decide(_options(), measure=measure, cpu=CPU_A, versions=VERSIONS,
                               say=lambda _: None)
    assert shares == pytest.approx([10.0, 10.0, 10.0, 10.0])  # 40 s over 4 settings
    assert decision.spent_s == pytest.approx(40.0)


def test_a_spent_budget_measures_nothing():
    space = autotune.Space.of(_options(), get_config("Ti/16"), CPU_A, "")
    tried = Timings({space.baseline: 1.0})
    best, measured = autotune.search(space, Shapes(asdict(get_config("Ti/16")), 224), tried,
                                     budget_s=0.0)
    assert best is None and tried.tried == []
    assert all(m.img_per_sec is None and "budget" in m.error for m in measured)


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_budget_is_one_line_naming_the_fix(tune, monkeypatch, value):
    monkeypatch.setenv(runtime.AUTOTUNE_BUDGET_ENV, value)
    with pytest.raises(VitzooError, match=f"{runtime.AUTOTUNE_BUDGET_ENV} must be a positive number"):
        _decide(Timings({Setting(2, 32): 1.0}))


def test_the_trial_is_printed_before_and_after(tune):
    lines: list[str] = []
    autotune.decide(_options(), measure=Timings({Setting(2, 32): 10.0, Setting(2, 16): 12.5}),
                    cpu=CPU_A, versions=VERSIONS, say=lines.append)
    assert lines[0].startswith("autotune: trying up to 4 settings for Ti/16 224px b64 float32 "
                               "(at most 120 s")
    assert lines[1].startswith("autotune: chose 2 host devices, micro-batch 16 in ")
    assert "2 host devices, micro-batch 32: 10.0 img/s" in lines[1]
    assert "remembered in" in lines[1]


# --- cached and keyed ----------------------------------------------------------------------


def test_the_choice_is_cached_so_a_second_run_does_no_trial(tune, monkeypatch):
    table = {Setting(2, 32): 10.0, Setting(2, 16): 12.0, Setting(1, 16): 3.0,
             Setting(2, 16, ONEDNN): 4.0}
    first = Timings(table)
    assert _decide(first).source == "trial" and len(first.tried) == 4
    stored = json.loads(runtime.autotune_cache_path().read_text())["entries"]
    (entry,) = stored.values()
    assert entry["choice"] == {"host_devices": 2, "micro_batch": 16, "xla_flags": [],
                               "cpu_matmul": None}
    assert entry["key"]["cpu"] == CPU_A.model and entry["key"]["jaxlib"] == "0.10.2"
    _new_process(monkeypatch)
    second = Timings(table)
    decision = _decide(second)
    assert second.tried == []
    assert decision.source == "cache" and decision.setting == Setting(2, 16)
    assert decision.tuned_flags() == [f"{runtime.DEVICE_COUNT_FLAG}=2"]


def test_one_process_decides_once(tune, monkeypatch):
    first, second = Timings({Setting(2, 32): 1.0}), Timings({Setting(2, 32): 1.0})
    decision = _decide(first)
    # a sweep's later runs: the first start put the chosen flags into XLA_FLAGS
    monkeypatch.setenv("XLA_FLAGS", " ".join(decision.tuned_flags()))
    monkeypatch.setattr(runtime, "backends_started", lambda: True)
    assert _decide(second) is decision and second.tried == []


@pytest.mark.parametrize("change", [
    {"cpu": runtime.CpuInfo("Test CPU B (AMD)", 2, frozenset())},
    {"cpu": runtime.CpuInfo(CPU_A.model, 8, frozenset())},
    {"versions": {"jax": "0.10.3", "jaxlib": "0.10.2"}},
    {"versions": {"jax": "0.10.2", "jaxlib": "0.10.3"}},
    {"res": 384}, {"batch": 128}, {"dtype": "bfloat16"}, {"model": "random:S/16"},
])
def test_a_new_machine_version_or_shape_triggers_a_new_trial(tune, monkeypatch, change):
    _decide(Timings({}, default=10.0))
    _new_process(monkeypatch)
    same = Timings({}, default=10.0)
    assert _decide(same).source == "cache" and same.tried == []
    _new_process(monkeypatch)
    other = Timings({}, default=10.0)
    decision = _decide(other, **change)
    assert decision.source == "trial" and other.tried
    assert len(json.loads(runtime.autotune_cache_path().read_text())["entries"]) == 2


def test_an_entry_of_an_earlier_search_is_measured_again(tune, monkeypatch):
    """A winner chosen before the product-backend stage existed never tried oneDNN."""
    _decide(Timings({}, default=10.0))
    data = json.loads(runtime.autotune_cache_path().read_text())
    (text, entry), = data["entries"].items()
    old = json.loads(text)
    old.pop("search")  # what the search before version 2 wrote
    data["entries"] = {json.dumps(old, sort_keys=True): entry}
    runtime.autotune_cache_path().write_text(json.dumps(data))
    _new_process(monkeypatch)
    again = Timings({}, default=10.0)
    assert _decide(again).source == "trial" and again.tried


@pytest.mark.parametrize("variable,value", [("VITZOO_CPU_MATMUL", "onednn"),
                                            ("VITZOO_MALLOC_TUNING", "retain")])
def test_a_different_matmul_or_malloc_switch_triggers_a_new_trial(tune, monkeypatch, variable,
                                                                 value):
    """The trial's children run under these switches: their winner belongs to them."""
    _decide(Timings({}, default=10.0))
    _new_process(monkeypatch)
    monkeypatch.setenv(variable, value)
    other = Timings({}, default=10.0)
    assert _decide(other).source == "trial" and other.tried
    entries = json.loads(runtime.autotune_cache_path().read_text())["entries"].values()
    assert sorted(entry["key"]["cpu_matmul" if "MATMUL" in variable else "malloc"]
                  for entry in entries) == sorted(["xla" if "MATMUL" in variable else "keep",
                                                   value])


# --- skipped when asked, and explicit settings win ------------------------------------------


@pytest.mark.parametrize("value", ["0", "off", "false", "no"])
def test_the_environment_variable_skips_it(tune, monkeypatch, value):
    monkeypatch.setenv(runtime.AUTOTUNE_ENV, value)
    timings = Timings({Setting(2, 32): 1.0})
    decision = _decide(timings)
    assert decision.source == "off" and decision.reason == f"VITZOO_AUTOTUNE={value}"
    assert timings.tried == [] and decision.tuned_flags() == []


def test_no_autotune_on_finetune_skips_it_and_beats_the_environment(tune, monkeypatch):
    seen = []
    app = typer.Typer()

    @app.command()
    @autotune_runtime_options
    def command() -> None:
        seen.append(runtime.autotune_wanted())

    monkeypatch.setenv(runtime.AUTOTUNE_ENV, "1")
    assert CliRunner().invoke(app, ["--no-autotune"]).exit_code == 0
    assert seen[-1] == (False, "--no-autotune")
    timings = Timings({Setting(2, 32): 1.0})
    assert _decide(timings).source == "off" and timings.tried == []
    monkeypatch.setenv(runtime.AUTOTUNE_ENV, "0")
    assert CliRunner().invoke(app, ["--autotune"]).exit_code == 0
    assert seen[-1] == (True, "--autotune")
    assert CliRunner().invoke(app, []).exit_code == 0
    assert seen[-1] == (False, "VITZOO_AUTOTUNE=0")


def autotune_runtime_options(command):
    from vitzoo.cli.data_options import runtime_options

    return runtime_options(autotune=True)(command)


def test_the_commands_that_run_a_model_take_the_autotune_option():
    from vitzoo.cli import app

    runner = CliRunner()
    for command in ("finetune", "evaluate", "predict", "probe", "recommend"):
        assert "--no-autotune" in runner.invoke(app, [command, "--help"],
                                                env={"COLUMNS": "200"}).output, command
    for command in ("list", "show", "export"):
        assert "--no-autotune" not in runner.invoke(app, [command, "--help"],
                                                    env={"COLUMNS": "200"}).output, command


def test_users_xla_flags_fix_devices_and_flags(tune, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{runtime.DEVICE_COUNT_FLAG}=4 --xla_cpu_enable_fast_math=false")
    timings = Timings({Setting(4, 16): 10.0, Setting(4, 8): 11.0})
    decision = _decide(timings, cpu=runtime.CpuInfo("x", 4, frozenset()))
    assert timings.tried == [Setting(4, 16), Setting(4, 8)]  # only the micro-batch varies
    assert decision.setting == Setting(4, 8)
    assert decision.tuned_flags() == []  # the user's XLA_FLAGS stay exactly as they are


def test_explicit_accum_and_xla_flags_leave_nothing_to_choose(tune, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{runtime.DEVICE_COUNT_FLAG}=2")
    timings = Timings({Setting(2, 32): 1.0})
    decision = _decide(timings, accum="2")
    assert decision.source == "skipped" and "nothing to choose" in decision.reason
    assert timings.tried == []


def test_explicit_accum_fixes_the_micro_batch(tune):
    timings = Timings({Setting(2, 8): 5.0, Setting(1, 16): 6.0, Setting(1, 16, ONEDNN): 4.0})
    decision = _decide(timings, accum="4")  # 64 images: 32 per device over 2, 64 over 1
    assert timings.tried == [Setting(2, 8), Setting(1, 16), Setting(1, 16, ONEDNN)]
    assert decision.setting == Setting(1, 16)


@pytest.mark.parametrize(("cluster", "gpu", "reason"), [
    (Cluster("10.0.0.1:1234", 2, 0), None, "several processes"),
    (Cluster(), "gpu", "this machine has a GPU")])
def test_multi_process_runs_and_accelerators_are_not_tuned(tune, monkeypatch, cluster, gpu,
                                                           reason):
    from vitzoo.accelerators import Accelerator

    if gpu:
        monkeypatch.setattr("vitzoo.accelerators.detect", lambda: Accelerator(gpu, "test"))
    timings = Timings({Setting(2, 32): 1.0})
    decision = autotune.decide(_options(), cluster=cluster, measure=timings, cpu=CPU_A,
                               versions=VERSIONS, say=lambda _: None)
    assert decision.source == "skipped" and decision.reason.startswith(reason)
    assert timings.tried == []


def test_a_single_process_cluster_is_tuned(tune):
    timings = Timings({Setting(2, 32): 1.0})
    decision = autotune.decide(_options(), cluster=Cluster(), measure=timings, cpu=CPU_A,
                               versions=VERSIONS, say=lambda _: None)
    assert decision.source == "trial" and timings.tried


def test_jax_already_started_is_not_tuned(tune, monkeypatch):
    monkeypatch.setattr(runtime, "backends_started", lambda: True)
    decision = _decide(Timings({Setting(2, 32): 1.0}))
    assert decision.source == "skipped" and "JAX started" in decision.reason


# --- shapes and the micro-batch -------------------------------------------------------------


def test_the_architecture_is_read_without_loading(tmp_path):
    assert autotune.run_config("random:Ti/16") == get_config("Ti/16")
    assert autotune.run_config("B/16") == get_config("B/16")
    assert autotune.run_config(
        "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--cifar100-steps_2k-lr_0.01-res_384"
    ) == get_config("S/16")
    config = autotune.run_config(str(tiny_checkpoint(tmp_path / "tiny.npz")))
    assert (config.hidden_size, config.num_layers, config.num_heads, config.mlp_dim,
            config.patch_size) == (32, 2, 2, 64, 8)  # tests/support TINY
    assert autotune.run_config("my-registered-run") is None


@pytest.mark.parametrize(("per_device", "accum", "tuned", "expected_accum"), [
    (32, "auto", 16, 2), (32, "auto", 8, 4), (32, "auto", 64, 1), (32, "auto", 5, 1),
    (32, "2", 8, 2), (32, "auto", None, 1)])
def test_the_tuned_micro_batch_is_used_when_it_fits(per_device, accum, tuned, expected_accum):
    plan = BatchPlan(global_batch=2 * per_device, processes=1, local_devices=2, accum=1)
    if accum != "auto":
        plan = BatchPlan(2 * per_device, 1, 2, int(accum))
    record = {"choice": {"host_devices": 2, "micro_batch": tuned}} if tuned else None
    assert autotune.apply_micro_batch(plan, accum, record).accum == expected_accum


def test_a_memory_limited_plan_is_never_made_larger():
    plan = BatchPlan(global_batch=64, processes=1, local_devices=2, accum=4)  # micro 8 fits
    record = {"choice": {"host_devices": 2, "micro_batch": 16}}
    assert autotune.apply_micro_batch(plan, "auto", record).micro_batch == 8


# --- the cache file survives a crash ----------------------------------------------------------

CRASH_WHILE_WRITING = """
import json, os
from vitzoo.adapt import autotune
from vitzoo.adapt.autotune_trial import Setting

real = json.dumps
def dies_half_way(obj, handle, **kwargs):  # the process dies with half the file written
    text = real(obj, **kwargs)
    handle.write(text[: len(text) // 2]); handle.flush(); os._exit(3)
json.dump = dies_half_way
autotune._remember("another key", autotune.Decision("trial", "x", Setting(1, 8), {"k": 1}))
"""


def test_the_cache_file_survives_a_crash_mid_write(tune, monkeypatch):
    _decide(Timings({Setting(2, 32): 10.0}))
    before = runtime.autotune_cache_path().read_text()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", CRASH_WHILE_WRITING], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    leftovers = list(runtime.autotune_cache_path().parent.glob(".autotune.json.*"))
    assert leftovers and leftovers[0].read_text() != before  # the half-written file was there
    assert runtime.autotune_cache_path().read_text() == before
    _new_process(monkeypatch)
    assert _decide(Timings({})).source == "cache"


# --- real child processes ----------------------------------------------------------------------

TINY_SHAPES = Shapes(asdict(ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64,
                                        num_layers=2, patch_size=8, num_heads=2)), 32)


@pytest.mark.slow
def test_a_child_runs_with_the_settings_devices_and_trial_flags():
    # both the device count and every trial flag must reach XLA in the child (flags unknown
    # to this jaxlib abort it), and its steps be timed
    setting = Setting(2, 2, tuple(flag for flags in autotune.TRIAL_FLAGS for flag in flags))
    measured = measure_in_child(setting, TINY_SHAPES, 240)
    assert measured.error is None, measured.error
    assert measured.timed_steps == 3 and measured.img_per_sec > 0
    assert measured.img_per_sec == pytest.approx(4 / sorted(measured.step_seconds)[1])


def test_a_flag_this_jaxlib_lacks_loses_its_setting():
    measured = measure_in_child(Setting(1, 2, ("--xla_no_such_flag_for_vitzoo=1",)),
                                TINY_SHAPES, 120)
    assert measured.img_per_sec is None and "xla_no_such_flag_for_vitzoo" in measured.error


@pytest.mark.slow
def test_finetune_records_the_trial_then_uses_the_cache(tmp_path):
    data = write_folder(tmp_path / "photos", color_image, ["a", "b"], train=4, test=2)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=2)
    env = {runtime.AUTOTUNE_ENV: "1", runtime.AUTOTUNE_BUDGET_ENV: "400"}
    records, outputs = [], []
    for name in ("first", "second"):
        done = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir",
                    str(tmp_path / name), "--steps", "1", "--warmup", "0", "--batch", "4",
                    "--res", "32", "--eval-every", "0", "--no-register", "--no-progress"],
                   env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        records.append(json.loads((tmp_path / name / "run.json").read_text()))
        outputs.append(done.stderr)
    first, second = (r["runtime"]["autotune"] for r in records)
    # cli() fixes one device through XLA_FLAGS, so only the micro-batch is tried: 4, then 2
    assert first["source"] == "trial" and "autotune: trying up to 2 settings" in outputs[0]
    rates = {m["setting"]["micro_batch"]: m["img_per_sec"] for m in first["measurements"]}
    assert set(rates) == {4, 2} and all(r > 0 for r in rates.values())
    assert first["choice"]["micro_batch"] == max(rates, key=rates.get)
    assert first["in_effect"] is True
    assert records[0]["batch"]["micro_batch"] == first["choice"]["micro_batch"]
    assert second["source"] == "cache" and "trying" not in outputs[1]
    assert second["choice"] == first["choice"]
    assert records[1]["batch"]["micro_batch"] == first["choice"]["micro_batch"]
    assert second["key"]["user_xla_flags"] == f"{runtime.DEVICE_COUNT_FLAG}=1"
