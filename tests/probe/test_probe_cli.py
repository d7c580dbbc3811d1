"""``vitzoo probe``, ``recommend --dataset`` and ``finetune --head-only`` end to end: tiny
checkpoints on a generated image folder, an unfetchable candidate skipped with its reason,
saved results reused, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.adapt_helpers import run_python, stripes, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli, table_at


def _stripes(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return stripes(60.0 * label, size, rng)


@pytest.fixture
def task(tmp_path):
    data = write_folder(tmp_path / "data", _stripes, ["a", "b", "c"], train=12, test=6, size=32)
    ckpts = [str(tiny_checkpoint(tmp_path / f"tiny{i}.npz", seed=i)) for i in (0, 1)]
    return data, ckpts


@pytest.fixture
def timed(monkeypatch):
    """Counts the img/s measurements (one per candidate per run: none is served from a cache)."""
    from vitzoo.probe import speed

    calls = []
    real = speed.time_batches

    def counting(run, **kwargs):
        calls.append(kwargs)
        return real(run, **kwargs)

    monkeypatch.setattr(speed, "time_batches", counting)
    return calls


@pytest.mark.slow
def test_probe_json_skips_unfetchable_and_reuses_saved_results(task, capsys, tmp_path, timed):
    data, ckpts = task
    args = ["probe", "--dataset", str(data), "--candidates", f"{ckpts[0]},Ti/16",
            "--candidates", ckpts[1], "--shots", "1,5,10", "--seeds", "3", "--batch", "8"]
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["eval_split"], report["num_classes"], report["eval_examples"]) == ("test", 3, 18)
    # 20 % of each class's 12 training images chooses; the test split only reports
    assert report["choosing_split"]["split"] == "validation"
    assert report["choosing_split"]["examples"] == 3 * 2 and report["sort"] == "linear_accuracy"
    by_name = {c["checkpoint"]: c for c in report["candidates"]}
    skipped = by_name["Ti/16"]
    assert skipped["skipped"].startswith("could not fetch Ti_16-i21k") and skipped["linear_accuracy"] is None
    assert report["candidates"][-1]["checkpoint"] == "Ti/16"  # skipped rows sort last
    probed = [by_name[c] for c in ckpts]
    for c in probed:
        assert c["skipped"] is None and c["eval_split"] == "test" and c["img_per_sec"] > 0
        assert list(c["fewshot"]) == ["1", "5"] and set(c["fewshot"]["5"]) == {"mean", "std"}
        assert 0.0 <= c["linear_accuracy"] <= 1.0 and 0.0 <= c["knn_accuracy"] <= 1.0
        speed = c["throughput"]
        assert speed["batch"] == 8 and speed["dtype"] == "float32" and speed["timed_batches"] >= 3
        assert speed["img_per_sec_min"] <= c["img_per_sec"] <= speed["img_per_sec_max"]
        assert c["intervals"]["img_per_sec"] == [speed["img_per_sec_min"], speed["img_per_sec_max"]]
        low, high = c["intervals"]["linear_accuracy"]
        assert low <= c["linear_accuracy"] <= high and set(c["validation"]) == {
            "linear_accuracy", "knn_accuracy", "fewshot_1_mean", "fewshot_5_mean"}
        assert c["representation"].startswith("class token")
        assert c["cached"] is False and "per_image" not in json.dumps(c)
    assert [c["checkpoint"] for c in report["candidates"][:2]] == [
        c["checkpoint"] for c in sorted(probed, key=lambda c: -c["validation"]["linear_accuracy"])]
    assert any(n.startswith("10-shot skipped: it needs 20 training images per class")
               for n in report["notes"])
    assert len(timed) == 2  # one measurement per probed candidate

    code, out, err = run_cli(capsys, *args, "--format", "csv", "--sort", "5shot")
    assert code == 0 and "extracting" not in err  # features and scores came from the cache
    assert len(timed) == 4  # ... but img/s was measured again, in this run
    lines = out.splitlines()
    assert lines[0].startswith("checkpoint,name,architecture,img_per_sec,img_per_sec_min,"
                               "img_per_sec_max,linear_accuracy,linear_accuracy_low,")
    assert "fewshot_1_mean,fewshot_1_mean_low,fewshot_1_mean_high,fewshot_5_mean" in lines[0]
    assert len(lines) == 4 and lines[3].startswith("Ti/16,")

    code, out, err = run_cli(capsys, *args[:-6], "--shots", "2", "--format", "json", "--pareto",
                             "--plot", str(tmp_path / "probe.png"))
    assert code == 0, err
    front = json.loads(out)["candidates"]
    assert 1 <= len(front) <= 2 and all(c["fewshot"].keys() == {"2"} for c in front)
    assert (tmp_path / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_probe_table_is_one_line_per_candidate_at_80_columns(task, capsys, monkeypatch):
    data, ckpts = task
    header, body, out = table_at(capsys, monkeypatch, 80, "probe", "--dataset", str(data),
                                 "--candidates", ",".join(ckpts), "--shots", "1,2,5",
                                 "--seeds", "2", "--batch", "8")
    assert header[-1].startswith("checkpoint") and len(body) == 2  # under the title
    assert {line.split()[0] for line in body} == {"tiny0", "tiny1"}  # names, not paths
    assert "not shown:" in out and "--wide" in out
    assert "\u00b1" in body[0] and "%" not in body[0]  # percentages with their interval
    code, out, _ = run_cli(capsys, "probe", "--dataset", str(data), "--candidates",
                           ",".join(ckpts), "--shots", "1,2,5", "--seeds", "2", "--batch", "8",
                           "--wide")
    assert code == 0 and "not shown" not in out
    wide_header = out[:out.index("\u2500")]
    for column in ("fewshot_1_mean", "fewshot_2_mean", "fewshot_5_mean"):  # numeric order
        assert column.replace("_mean", "") in wide_header.replace("\n", "")
    assert wide_header.index("1_mean") < wide_header.index("2_mean") < wide_header.index("5_mean")


@pytest.mark.slow
def test_recommend_by_data_and_head_only_reaches_the_probe(task, capsys, tmp_path):
    data, ckpts = task
    code, out, err = run_cli(capsys, "recommend", "--dataset", str(data), "--candidates",
                             ",".join([*ckpts, "Ti/16"]), "--format", "json")
    assert code == 0, err
    choice = json.loads(out)
    assert choice["checkpoint"] in ckpts and choice["by"] == "linear_accuracy"
    assert (choice["choosing_split"], choice["reported_split"]) == ("validation", "test")
    ranking = choice["ranking"]
    assert choice["value"] == max(r["validation"] for r in ranking) and len(ranking) == 2
    assert choice["runner_up"] in ckpts and choice["runner_up"] != choice["checkpoint"]
    assert choice["margin"] == pytest.approx(choice["value"] - choice["runner_up_value"])
    assert choice["test"].startswith("exact McNemar test on the same 6 validation images")
    assert choice["reliable"] is False  # 2 validation and 6 test images per class
    assert choice["skipped"][0]["checkpoint"] == "Ti/16"
    for c in choice["candidates"][:2]:
        assert set(c["intervals"]) >= {"linear_accuracy", "knn_accuracy", "img_per_sec"}
        assert c["throughput"]["img_per_sec_min"] <= c["img_per_sec"]
    choice = {**choice, "linear_accuracy": next(
        c["linear_accuracy"] for c in choice["candidates"] if c["checkpoint"] == choice["checkpoint"])}

    work = tmp_path / "head"
    code, out, err = run_cli(capsys, "finetune", choice["checkpoint"], "--dataset", str(data),
                             "--head-only", "--res", "32", "--workdir", str(work), "--name", "pets-head")
    assert code == 0, err
    assert "head-only fine-tune finished" in err
    run = json.loads((work / "run.json").read_text())
    assert run["head_only"] is True and run["class_names"] == ["a", "b", "c"]
    assert run["final_metrics"]["eval_accuracy"] == pytest.approx(choice["linear_accuracy"],
                                                                   abs=1 / 18 + 1e-9)
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["head_only"] is True

    code, out, err = run_cli(capsys, "evaluate", "pets-head", "--dataset", str(data),
                             "--format", "json")
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["top1"] == pytest.approx(run["final_metrics"]["eval_accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(run["final_metrics"]["eval_loss"], rel=1e-5)
    assert run["final_metrics"]["eval_loss"] < 5.0  # a finite temperature, not an overconfident head

    from vitzoo.weights.release import load_checkpoint

    _, info, params = load_checkpoint(work / "final.npz")
    _, _, source = load_checkpoint(choice["checkpoint"])
    assert info["num_classes"] == 3 and info["resolution"] == 32
    np.testing.assert_array_equal(params["embedding"]["kernel"], source["embedding"]["kernel"])


@pytest.mark.parametrize("extra, message", [
    (["--shots", "1,x"], "error: --shots expects comma-separated integers, got '1,x'. E.g."),
    (["--shots", "0"], "error: --shots values must be at least 1"),
    (["--sort", "best"], "error: unknown --sort 'best'. Use linear_accuracy"),
    (["--sort", "3shot"], "error: --sort 3shot: 3 is not among --shots (1,5). Add it"),
    (["--format", "xml"], "error: invalid value for '--format': 'xml' is not one of 'table', 'json', 'csv'."),
    (["--plot", "out.gif"], "error: --plot out.gif must end in .png or .svg"),
    (["--seeds", "0"], "error: --seeds must be at least 1, got 0"),
    (["--knn-k", "-4"], "error: --knn-k must be at least 1, got -4"),
    (["--batch", "0"], "error: --batch must be at least 1, got 0"),
    (["--dtype", "float16"], "error: --dtype must be float32 or bfloat16, got 'float16'"),
    (["--res", "0"], "error: --res must be a positive number of pixels, got 0"),
    (["--res", "33"], "error: --res 33 does not fit "),  # the tiny ViT's patches are 8 pixels
])
def test_probe_option_errors_exit_2_before_data_is_read(task, capsys, tmp_path, extra, message):
    _, ckpts = task
    missing = tmp_path / "no-such-data"  # reading it would fail with another message
    code, out, err = run_cli(capsys, "probe", "--dataset", str(missing), "--candidates", ckpts[0],
                             "--batch", "8", "--shots", "1,5", *extra)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_recommend_by_data_refuses_options_that_do_not_apply(task, capsys, tmp_path):
    _, ckpts = task
    missing = str(tmp_path / "no-such-data")
    for extra in (["--adapt-ds", "cifar10"], ["--res", "224"], ["--pareto"]):
        code, out, err = run_cli(capsys, "recommend", "--data", missing, "--candidates", ckpts[0],
                                 *extra)
        assert code == 2 and out == ""
        assert err.startswith(f"error: {extra[0]} does not apply with --data"), err
    code, _, err = run_cli(capsys, "recommend", "--data", missing, "--by", "3shot")
    assert code == 2 and err.startswith("error: --by 3shot: 3 is not among --shots (1,5,10,25)")


def test_missing_dataset_and_nothing_probed(task, capsys, tmp_path):
    data, _ = task
    code, _, err = run_cli(capsys, "probe", "--dataset", str(tmp_path / "nope"))
    assert code != 0 and err.startswith(f"error: dataset folder {tmp_path / 'nope'} does not exist")
    code, out, err = run_cli(capsys, "recommend", "--data", str(data), "--format", "csv")
    assert code != 0 and err == "error: --dataset supports --format table or json, got 'csv'. " \
                                "Use --format json for scripts.\n"
    missing = str(tmp_path / "missing.npz")
    code, out, err = run_cli(capsys, "recommend", "--dataset", str(data), "--candidates", missing,
                             "--format", "json")
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith("error: no candidate could be probed")
    # every candidate skipped: the output says why, and the exit status says it failed
    code, out, err = run_cli(capsys, "probe", "--dataset", str(data), "--candidates", missing,
                             "--format", "json")
    assert code == 1 and json.loads(out)["candidates"][0]["skipped"]
    assert err.splitlines()[-1] == ("error: none of the 1 candidates could be measured "
                                    "(see the skipped reasons)")


@pytest.mark.slow
def test_tfds_probe_streamed_equals_in_memory(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz")
    code = f"""
    import contextlib, io, json
    import tensorflow_datasets as tfds
    from tests.support.tfds_mock import pets_examples
    from vitzoo.cli import main
    results = []
    with tfds.testing.mock_data(as_dataset_fn=pets_examples({{"train": 74, "test": 20}})):
        for extra in ([], ["--stream"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main(["probe", "--dataset", "oxford_iiit_pet", "--candidates", {str(ckpt)!r},
                          "--res", "32", "--shots", "1", "--batch", "8", "--format", "json", *extra])
                except SystemExit as exc:
                    assert not exc.code, exc.code
            results.append(json.loads(out.getvalue()))
    print(json.dumps(results))
    """
    proc = run_python(code, env={"VITZOO_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    memory, streamed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (memory["num_classes"], memory["eval_split"], memory["eval_examples"]) == (37, "test", 20)
    for key in ("linear_accuracy", "knn_accuracy", "fewshot", "validation", "intervals"):
        if key == "intervals":
            memory["candidates"][0][key].pop("img_per_sec")
            streamed["candidates"][0][key].pop("img_per_sec")
        assert memory["candidates"][0][key] == streamed["candidates"][0][key]
    assert set(memory["candidates"][0]["fewshot"]) == {"1"}
    kinds = sorted(json.loads(p.read_text())["spec"]["split"]["kind"]
                   for p in (tmp_path / "home" / "features").glob("*/meta.json"))
    assert kinds == ["bytes", "bytes", "tfds-stream", "tfds-stream"]


@pytest.mark.slow
def test_probe_and_head_only_configure_the_runtime_and_register(task, capsys, tmp_path):
    """``--[no-]compile-cache`` takes effect in probe and --head-only (JAX's cache folder is
    set or cleared, and the run records it), and the probe shows up in ``list --local``."""
    import jax

    from vitzoo.catalog.local import read_runs
    from vitzoo.config import vitzoo_home

    data, ckpts = task
    cache = str(vitzoo_home() / "compile-cache")
    args = ["probe", "--dataset", str(data), "--candidates", ckpts[0], "--shots", "1",
            "--seeds", "1", "--batch", "8", "--format", "json"]
    for flag, expected in (("--no-compile-cache", None), ("--compile-cache", cache)):
        code, out, err = run_cli(capsys, *args, flag)
        assert code == 0, err
        assert jax.config.jax_compilation_cache_dir == expected
        (row,) = [r for r in read_runs() if r["row_source"] == "probe"]
        assert row["probe"]["runtime"]["compile_cache"] == expected
    linear = json.loads(out)["candidates"][0]["linear_accuracy"]
    assert row["adapt_ds"] == json.loads(out)["dataset"] and row["probe"]["linear_accuracy"] == linear

    for flag, expected in (("--no-compile-cache", None), ("--compile-cache", cache)):
        work = tmp_path / f"head{flag}"
        code, _, err = run_cli(capsys, "finetune", ckpts[0], "--dataset", str(data), "--head-only",
                               "--res", "32", "--workdir", str(work), flag)
        assert code == 0, err
        assert jax.config.jax_compilation_cache_dir == expected
        run = json.loads((work / "run.json").read_text())
        assert (run["schema_version"], run["kind"]) == (2, "head_only")
        assert run["runtime"]["compile_cache"] == expected
