"""Small pieces of the runner: schedule, batch planning / --accum auto, checkpoint files,
cluster options, metrics truncation on resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitzoo.adapt import train_state
from vitzoo.adapt.accumulation import activation_bytes, plan
from vitzoo.adapt.metrics import truncate_after
from vitzoo.adapt.schedule import lr_at, warmup_cosine
from vitzoo.backbone.distributed import resolve
from vitzoo.errors import VitzooError
from vitzoo.models import get_config


def test_schedule_is_the_reference_warmup_times_cosine():
    schedule = warmup_cosine(0.03, 500, 100)
    for step in (0, 50, 100, 300, 499, 500):
        assert float(schedule(step)) == pytest.approx(lr_at(step, 0.03, 500, 100), abs=1e-8)
    assert lr_at(0, 0.03, 500, 100) == 0.0
    assert lr_at(100, 0.03, 500, 100) == pytest.approx(0.03)
    assert lr_at(300, 0.03, 500, 100) == pytest.approx(0.015)
    assert lr_at(500, 0.03, 500, 100) == pytest.approx(0.0, abs=1e-12)


def test_batch_plan_adjusts_states_and_refuses():
    adjusted = plan(10, "1", processes=1, local_devices=4)
    assert adjusted.global_batch == 8 and "not divisible" in adjusted.note
    assert plan(64, "4", processes=2, local_devices=4).micro_batch == 2
    with pytest.raises(VitzooError, match="does not divide"):
        plan(64, "3", processes=1, local_devices=1)
    with pytest.raises(VitzooError, match="smaller than"):
        plan(2, "1", processes=1, local_devices=4)


def test_accum_auto_fits_the_micro_batch_to_memory(monkeypatch):
    from vitzoo.adapt import accumulation

    b16 = get_config("B/16")
    per_example = activation_bytes(b16, 384, 2)
    assert activation_bytes(b16, 224, 2) < per_example  # more tokens, more memory
    # A 16 GB-class device: batch 512 over 8 devices at 384 px needs accumulation.
    monkeypatch.setattr(accumulation, "device_memory", lambda n: 16 * 2**30)
    gpu = plan(512, "auto", processes=1, local_devices=8, config=b16, resolution=384,
               itemsize=2, param_bytes=86_000_000 * 4)
    assert gpu.accum > 1 and gpu.micro_batch * per_example <= 16 * 2**30
    assert gpu.per_device % gpu.accum == 0
    # Plenty of memory: no accumulation.
    monkeypatch.setattr(accumulation, "device_memory", lambda n: 2**40)
    assert plan(512, "auto", processes=1, local_devices=8, config=b16, resolution=384).accum == 1


def test_checkpoint_round_trip_keeps_bfloat16_and_refuses_other_shapes(tmp_path):
    import ml_dtypes


    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
             "m": np.linspace(0, 1, 3).astype(ml_dtypes.bfloat16), "step": np.int32(7)}
    train_state.save(tmp_path, state, {"step": 7, "identity": {"lr": 0.1}})
    restored, meta = train_state.restore(tmp_path, state)
    assert meta["step"] == 7 and restored["m"].dtype == ml_dtypes.bfloat16
    for key in state:
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(state[key]))
    assert not list(tmp_path.glob(".checkpoint-*"))
    with pytest.raises(VitzooError, match="shape"):
        train_state.restore(tmp_path, {**state, "w": np.zeros((3, 3), np.float32)})


def test_cluster_options_and_environment(monkeypatch):
    assert resolve().coordinator is None
    assert resolve("h:1", 2, 1).process_id == 1
    monkeypatch.setenv("VITZOO_COORDINATOR", "10.0.0.1:99")
    monkeypatch.setenv("VITZOO_NUM_PROCESSES", "4")
    monkeypatch.setenv("VITZOO_PROCESS_ID", "3")
    assert resolve().num_processes == 4
    for args, message in (((None, 2, None), None), (("nohostport", 2, 0), "host:port"),
                          (("h:1", 2, 2), "outside")):
        monkeypatch.delenv("VITZOO_COORDINATOR")
        with pytest.raises(VitzooError, match=message):
            resolve(*args)
        monkeypatch.setenv("VITZOO_COORDINATOR", "10.0.0.1:99")


def test_metrics_are_cut_back_to_the_checkpoint_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (10, 20, 30)) + '{"st')
    truncate_after(path, 20)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [10, 20]


def test_itstime_every_period_and_the_last_step():
    from vitzoo.adapt.cadence import itstime

    assert [s for s in range(1, 13) if itstime(s, 5, 12)] == [5, 10, 12]
    assert [s for s in range(1, 13) if itstime(s, 0, 12)] == [12]  # 0: only at the end
    assert [s for s in range(1, 13) if itstime(s, 4, 12, last=False)] == [4, 8]
    assert [s for s in range(1, 13) if itstime(s, 0, 12, last=False)] == []


def test_settled_options_and_the_settings_a_resume_compares():
    from vitzoo.adapt.options import FinetuneOptions

    options, notes = FinetuneOptions(model="B/16", dataset="./my data", steps=50, warmup=80).settled()
    assert options.warmup == 50 and "warming up over all 50 steps" in notes[0]
    assert options.workdir == "vitzoo-runs/B_16--my_data"
    recorded = {**options.identity(), "lr": 0.1}
    assert options.changes_from(recorded) == [("lr", 0.1, 0.03)]
    assert options.changes_from(options.identity()) == []


def test_throughput_skips_the_first_step_and_averages_the_window():
    from vitzoo.adapt.throughput import TrainWindow

    def metrics(loss):  # one device's copy, as the pmapped step returns it
        return {"loss": np.array([loss]), "accuracy": np.array([0.5]),
                "grad_norm": np.array([1.0])}

    window = TrainWindow(images_per_step=8, started=0.0)
    assert window.add(metrics(9.0)) is True and window.first_step_s > 0
    assert window.summary() == {}  # the first step (compile) opened the window, not in it
    assert window.add(metrics(1.0)) is False and window.add(metrics(3.0)) is False
    summary = window.summary()
    assert summary["train_loss"] == 2.0 and summary["train_accuracy"] == 0.5
    assert summary["img_per_sec"] > 0 and window.img_per_sec == summary["img_per_sec"]
    window.restart()
    assert window.summary() == {}


def test_source_row_is_matched_by_identity_not_by_a_files_stem(tmp_path):
    """A user's own tiny.npz is not an earlier run that also started from a file called tiny."""
    from vitzoo import config
    from vitzoo.runs.registry import register_run, source_row

    earlier = tmp_path / "runs" / "tiny" / "final.npz"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"PK\x03\x04")
    register_run("tiny", earlier, {"name": "Ti/16", "adapt_ds": "my_photos"})
    own = tmp_path / "tiny.npz"
    own.write_bytes(b"PK\x03\x04")

    row, note = source_row(str(own), own)
    assert row is None and note == f"{own.resolve()} is not a catalog checkpoint (a file of your own)"
    # the run by its name, or by the full path of its final.npz
    assert source_row("tiny", earlier)[0]["checkpoint"] == "tiny"
    assert source_row(str(earlier), earlier)[0]["checkpoint"] == "tiny"
    # a file in the download cache is the catalog object it was fetched as
    name = "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
    cached = config.cache_dir() / "augreg" / f"{name}.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04")
    row, note = source_row(str(cached), cached)
    assert note is None and row["filename"] == name


def test_top5_is_unknown_for_five_classes_or_fewer():
    from vitzoo.evaluators import metrics_from_sums, record_fields

    totals = {"count": np.float32(4), "top1": np.float32(3), "top5": np.float32(4),
              "loss": np.float32(2.0)}
    named = metrics_from_sums(totals, num_classes=2)
    assert named == {"top1": 0.75, "top5": None, "loss": 0.5, "examples": 4}
    assert metrics_from_sums(totals, num_classes=6)["top5"] == 1.0
    assert record_fields(named.items()) == {  # the keys metrics.jsonl, run.json and resume read
        "eval_accuracy": 0.75, "eval_top5": None, "eval_loss": 0.5, "eval_examples": 4}


def test_head_on_features_counts_like_an_independent_tally():
    """Top-1/top-5/loss of a head on features, against a hand tally (4 examples, 6 classes)."""
    from vitzoo.evaluators.features import HeadOnFeatures

    features = np.eye(4, dtype=np.float32)  # example i's logits are row i of the kernel
    kernel = np.array([[9, 8, 7, 6, 5, 0],    # label 0: top-1
                       [9, 8, 7, 6, 5, 0],    # label 5: lowest, outside the top 5
                       [0, 1, 2, 3, 4, 5],    # label 1: 5th of 6, inside the top 5
                       [0, 0, 0, 0, 0, 9]],   # label 5: top-1
                      np.float32)
    labels = np.array([0, 5, 1, 5])
    bias = np.zeros(6, np.float32)
    metrics = dict(HeadOnFeatures("eval", features, labels, 6).run((kernel, bias)))
    logp = [row - np.log(np.exp(row.astype(np.float64)).sum()) for row in kernel]
    loss = -np.mean([logp[i][labels[i]] for i in range(4)])
    assert metrics["top1"] == 0.5 and metrics["top5"] == 0.75 and metrics["examples"] == 4
    assert metrics["loss"] == pytest.approx(loss, rel=1e-6)
    three = dict(HeadOnFeatures("eval", features, labels % 3, 3).run((kernel[:, :3], bias[:3])))
    assert three["top5"] is None
