"""``vitzoo probe``, ``recommend --data`` and ``finetune --head-only`` end to end: tiny
checkpoints on a generated image folder, an unfetchable candidate skipped with its reason,
saved results reused, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.adapt_helpers import run_python, stripes, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli


def _stripes(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return stripes(60.0 * label, size, rng)


@pytest.fixture
def task(tmp_path):
    data = write_folder(tmp_path / "data", _stripes, ["a", "b", "c"], train=12, test=6, size=32)
    ckpts = [str(tiny_checkpoint(tmp_path / f"tiny{i}.npz", seed=i)) for i in (0, 1)]
    return data, ckpts


@pytest.mark.slow
def test_probe_json_skips_unfetchable_and_reuses_saved_results(task, capsys, tmp_path):
    data, ckpts = task
    args = ["probe", "--dataset", str(data), "--candidates", f"{ckpts[0]},Ti/16",
            "--candidates", ckpts[1], "--shots", "1,5,10", "--seeds", "3", "--batch", "8"]
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["eval_split"], report["num_classes"], report["eval_examples"]) == ("test", 3, 18)
    by_name = {c["checkpoint"]: c for c in report["candidates"]}
    skipped = by_name["Ti/16"]
    assert skipped["skipped"].startswith("could not fetch Ti_16-i21k") and skipped["linear_accuracy"] is None
    assert report["candidates"][-1]["checkpoint"] == "Ti/16"  # skipped rows sort last
    probed = [by_name[c] for c in ckpts]
    for c in probed:
        assert c["skipped"] is None and c["eval_split"] == "test" and c["img_per_sec"] > 0
        assert set(c["fewshot"]) == {"1", "5"} and set(c["fewshot"]["5"]) == {"mean", "std"}
        assert 0.0 <= c["linear_accuracy"] <= 1.0 and 0.0 <= c["knn_accuracy"] <= 1.0
        assert c["throughput"]["batch"] == 8 and c["throughput"]["dtype"] == "float32"
        assert c["representation"].startswith("class token")
        assert c["cached"] is False
    assert [c["checkpoint"] for c in report["candidates"][:2]] == [
        c["checkpoint"] for c in sorted(probed, key=lambda c: -c["linear_accuracy"])]
    assert any(n.startswith("10-shot skipped: it needs 20 training images per class")
               for n in report["notes"])

    code, out, err = run_cli(capsys, *args, "--format", "csv", "--sort", "5shot")
    assert code == 0 and "extracting" not in err  # features and scores came from the cache
    lines = out.splitlines()
    assert lines[0].startswith("checkpoint,architecture,img_per_sec,linear_accuracy,knn_accuracy,"
                               "fewshot_1_mean,fewshot_1_std,fewshot_5_mean")
    assert len(lines) == 4 and lines[3].startswith("Ti/16,")

    code, out, err = run_cli(capsys, *args[:-6], "--shots", "2", "--format", "json", "--pareto",
                             "--plot", str(tmp_path / "probe.png"))
    assert code == 0, err
    front = json.loads(out)["candidates"]
    assert 1 <= len(front) <= 2 and all(c["fewshot"].keys() == {"2"} for c in front)
    assert (tmp_path / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_recommend_by_data_and_head_only_reaches_the_probe(task, capsys, tmp_path):
    data, ckpts = task
    code, out, err = run_cli(capsys, "recommend", "--data", str(data), "--candidates",
                             ",".join([*ckpts, "Ti/16"]), "--format", "json")
    assert code == 0, err
    choice = json.loads(out)
    assert choice["checkpoint"] in ckpts and choice["score_name"] == "linear"
    ranking = choice["ranking"]
    assert choice["score"] == max(r["score"] for r in ranking) and len(ranking) == 2
    assert choice["skipped"][0]["checkpoint"] == "Ti/16"
    assert choice["why"].startswith("highest linear accuracy on test of 2 probed candidates")

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
    (["--sort", "best"], "error: unknown --sort 'best'. Use linear"),
    (["--format", "xml"], "error: invalid value for '--format': 'xml' is not one of 'table', 'json', 'csv'."),
    (["--plot", "out.gif"], "error: --plot out.gif must end in .png or .svg"),
])
def test_probe_option_errors_are_one_line(task, capsys, extra, message):
    data, ckpts = task
    code, out, err = run_cli(capsys, "probe", "--dataset", str(data), "--candidates", ckpts[0],
                             "--batch", "8", *extra)
    assert code != 0 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_missing_dataset_and_nothing_probed_are_one_line_errors(task, capsys, tmp_path):
    data, _ = task
    code, _, err = run_cli(capsys, "probe", "--dataset", str(tmp_path / "nope"))
    assert code != 0 and err.startswith(f"error: dataset folder {tmp_path / 'nope'} does not exist")
    code, out, err = run_cli(capsys, "recommend", "--data", str(data), "--format", "csv")
    assert code != 0 and err == "error: --data supports --format table or json, got 'csv'. " \
                                "Use --format json for scripts.\n"
    code, out, err = run_cli(capsys, "recommend", "--data", str(data), "--candidates",
                             str(tmp_path / "missing.npz"), "--format", "json")
    assert code != 0 and out == ""
    assert err.splitlines()[-1].startswith("error: no candidate could be probed")


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
    for key in ("linear_accuracy", "knn_accuracy", "fewshot"):
        assert memory["candidates"][0][key] == streamed["candidates"][0][key]
    assert set(memory["candidates"][0]["fewshot"]) == {"1"}
    kinds = sorted(json.loads(p.read_text())["spec"]["split"]["kind"]
                   for p in (tmp_path / "home" / "features").glob("*/meta.json"))
    assert kinds == ["bytes", "bytes", "tfds-stream", "tfds-stream"]
