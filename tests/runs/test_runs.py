"""``vitzoo.runs``: the run.json schema, registration under a lock, probe results registered.

Oracles are written here: literal records as earlier releases wrote them, names chosen by
the test, and the rows ``list --local`` must show.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli
from vitzoo.catalog import local
from vitzoo.errors import VitzooError
from vitzoo.runs import record, registry

#: run.json of a head-only run as vitzoo 0.x wrote it (no schema_version, no kind).
OLD_HEAD_ONLY = {"status": "finished", "head_only": True, "options": {"model": "tiny.npz",
                 "dataset": "pets"}, "class_names": ["a", "b"], "final_metrics": {}}
#: The identity a checkpoint of that release recorded (flat keys), for resume.
OLD_IDENTITY = {"model": "B/16", "dataset": "./pets", "steps": 500, "warmup": 100, "lr": 0.03,
                "batch": 512, "res": 384, "train_split": None, "eval_split": None, "seed": 0,
                "dtype": "float32", "label_smoothing": 0.0, "val_fraction": 0.1,
                "momentum_dtype": "bfloat16", "clip_norm": 1.0}


def test_old_run_json_is_read_in_this_schema(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(OLD_HEAD_ONLY))
    read = record.read_run_json(tmp_path)
    assert (read["schema_version"], read["kind"], read["head_only"]) == (2, "head_only", True)
    assert read["class_names"] == ["a", "b"] and read["options"]["dataset"] == "pets"
    old_finetune = {k: v for k, v in OLD_HEAD_ONLY.items() if k != "head_only"}
    assert record.migrate(old_finetune)["kind"] == "finetune"
    with pytest.raises(VitzooError, match="newer than this vitzoo"):
        record.migrate({**OLD_HEAD_ONLY, "schema_version": 99})


def test_every_kind_has_the_common_keys_and_unknown_kinds_are_refused(tmp_path):
    common = {"schema_version", "kind", "status", "head_only", "options", "source", "dataset",
              "class_names", "runtime", "versions"}
    for kind in ("finetune", "head_only", "probe"):
        made = record.new_record(kind, status="running", options={}, source={}, dataset={},
                                 class_names=None, runtime=None, extra=1)
        assert common | {"extra"} == set(made) and made["kind"] == kind
        record.write_run_json(tmp_path, made)
        assert record.read_run_json(tmp_path / "run.json") == json.loads(json.dumps(made))
    with pytest.raises(ValueError):
        record.new_record("sweep", status="x", options={}, source={}, dataset={},
                          class_names=None, runtime=None)
    with pytest.raises(ValueError):
        record.write_run_json(tmp_path, {"status": "finished"})


def test_a_run_recorded_before_the_data_record_still_resumes():
    """The identity keys stay flat: an old checkpoint's identity matches the same settings."""
    from vitzoo.adapt.options import FinetuneOptions

    options = FinetuneOptions(model="B/16", dataset="./pets")
    assert options.identity() == OLD_IDENTITY
    assert options.changes_from(OLD_IDENTITY) == []
    assert FinetuneOptions(model="B/16", dataset="./pets", val_fraction=0.2).changes_from(
        OLD_IDENTITY) == [("val_fraction", 0.1, 0.2)]
    flat = FinetuneOptions(model="B/16", dataset="./pets").as_dict()
    assert flat["dataset"] == "./pets" and flat["gcs_auth"] is False and "data" not in flat


def _npz(tmp_path: Path) -> Path:
    npz = tmp_path / "final.npz"
    npz.write_bytes(b"PK\x03\x04")
    return npz


def test_two_registrations_at_once_keep_both(tmp_path, monkeypatch):
    """Both threads reach the read together unless the lock keeps the second one out.

    Without the lock both read the same list and the second write drops the first entry.
    With it, the first thread waits at the barrier alone (it gives up after a second) and
    writes before the second reads.
    """
    npz = _npz(tmp_path)
    barrier = threading.Barrier(2, timeout=1)
    reader = local.read_runs

    def slow_read():
        runs = reader()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return runs

    monkeypatch.setattr(registry, "read_runs", slow_read)
    errors = []

    def register(name):
        try:
            registry.register_run(name, npz, {"name": "Ti/16"})
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(n,)) for n in ("run-a", "run-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r["checkpoint"] for r in local.read_runs()) == ["run-a", "run-b"]


def test_processes_registering_together_lose_nothing(tmp_path):
    npz = _npz(tmp_path)
    code = ("import sys\nfrom pathlib import Path\nfrom vitzoo.runs.registry import register_run\n"
            "for i in range(15):\n"
            f"    register_run(f'{{sys.argv[1]}}-{{i}}', Path({str(npz)!r}), {{'name': 'Ti/16'}})\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, tag], env=env) for tag in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    names = sorted(r["checkpoint"] for r in local.read_runs())
    assert names == sorted(f"{t}-{i}" for t in "ab" for i in range(15))


def test_a_failed_registration_is_raised_not_swallowed(tmp_path):
    npz = _npz(tmp_path)
    local.registry_path().write_text("{not json")
    with pytest.raises(VitzooError) as caught:
        registry.register("pets", npz, {"name": "Ti/16"}, tmp_path / "run")
    message = caught.value.one_line()
    assert f"the run in {tmp_path / 'run'} is complete but was not registered" in message
    assert "cannot read the local run registry" in message


def test_probe_results_are_listed_with_their_data_and_scores(capsys):
    from vitzoo.probe.run import CandidateResult, ProbeReport

    probed = CandidateResult("tiny0.npz", "Ti/16", path="/ckpts/tiny0.npz", resolution=32,
                             img_per_sec=120.0, linear_accuracy=0.5, knn_accuracy=0.25,
                             fewshot={"5": {"mean": 0.375, "std": 0.1}})
    skipped = CandidateResult("Ti/16", "Ti/16", skipped="could not fetch")
    report = ProbeReport(dataset="pets", train_split="train", eval_split="test", num_classes=3,
                         train_examples=36, eval_examples=18, results=[probed, skipped])
    names = registry.register_probe(report, {"shots": [5], "dataset": "pets"},
                                    {"compile_cache": None})
    assert names == ["tiny0--probe--pets"]
    code, out, err = run_cli(capsys, "list", "--local", "--format", "json", "--columns",
                             "checkpoint,name,adapt_ds,adapt_resolution,row_source,note")
    assert code == 0, err
    assert json.loads(out) == [{
        "checkpoint": "tiny0--probe--pets", "name": "Ti/16", "adapt_ds": "pets",
        "adapt_resolution": 32, "row_source": "probe",
        "note": "probe on test (18 images): linear 50.0%, kNN 25.0%, 5-shot 37.5%"}]
    saved = local.read_runs()[0]["probe"]
    assert (saved["linear_accuracy"], saved["knn_accuracy"], saved["fewshot"]) == (
        0.5, 0.25, {"5": 0.375})
    assert saved["settings"]["shots"] == [5] and saved["runtime"] == {"compile_cache": None}
    registry.register_probe(report, {}, None)  # probed again: replaced, not added
    assert len(local.read_runs()) == 1
