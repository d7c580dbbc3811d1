"""``vitzoo probe --coordinator ...``: two ``jax.distributed`` processes with two CPU devices each
give the features and the scores of one process. Every process extracts its slice of each
batch and caches every row (each has its own VITZOO_HOME here, as two hosts would); process 0
alone writes the output and registers the probe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.backbone.test_backbone import _chunks, _cli
from tests.support.adapt_helpers import TINY, free_port, stripes, write_folder
from tests.support.ckpt_factory import write_tiny_vit

SCORES = ("linear_accuracy", "knn_accuracy", "fewshot", "validation")


def _stripes(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return stripes(60.0 * label, size, rng)


def _two_processes_and_one(base: list[str], tmp_path: Path) -> tuple[list[str], str]:
    """stdout of ``vitzoo BASE`` over two ``jax.distributed`` processes, then alone."""
    port = free_port()
    procs = [_cli([*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                   "--process-id", str(i)], tmp_path / f"home{i}") for i in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)  # as a pipe reads it: Gloo's native "[Gloo] Rank ..." lines go to stderr
    single = _cli(base, tmp_path / "home-single")
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-3000:]
    return outs, out


@pytest.mark.slow
def test_probe_over_two_processes_equals_one_process(tmp_path):
    root = write_folder(tmp_path / "data", _stripes, ["a", "b", "c"], train=6, test=4, size=32)
    ckpt = write_tiny_vit(tmp_path / "vit.npz", **TINY)
    base = ["probe", "--dataset", str(root), "--candidates", str(ckpt), "--shots", "1,2",
            "--seeds", "2", "--knn-k", "3", "--batch", "8", "--format", "json"]
    outs, alone_out = _two_processes_and_one(base, tmp_path)

    assert outs[1] == ""  # process 0 writes the output
    assert "[Gloo]" not in outs[0]  # stdout is the JSON document, whole
    multi, alone = json.loads(outs[0]), json.loads(alone_out)
    (m,), (a,) = multi["candidates"], alone["candidates"]
    assert m["throughput"]["devices"] == 2 and m["throughput"]["batch"] == 8
    for key in SCORES:  # the same hits on the same images: the same fractions
        assert m[key] == a[key], key
    assert 0.2 < m["knn_accuracy"] < 1.0  # a task the features neither ace nor fail
    assert multi["choosing_split"] == alone["choosing_split"]
    assert (tmp_path / "home0" / "local_runs.json").is_file()
    assert not (tmp_path / "home1" / "local_runs.json").exists()
    expected = _chunks(tmp_path / "home-single")
    assert len(expected) == 4  # train and eval entries, one chunk each (features, labels)
    for i in range(2):
        got = _chunks(tmp_path / f"home{i}")
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-5)


@pytest.mark.slow
def test_recommend_by_data_over_two_processes_chooses_as_one_process(tmp_path):
    """``recommend --dataset`` takes the cluster options to its probe: the same choice, margin
    and per-candidate scores as one process, written once (by process 0)."""
    root = write_folder(tmp_path / "data", _stripes, ["a", "b", "c"], train=6, test=4, size=32)
    ckpts = [str(write_tiny_vit(tmp_path / f"vit{i}.npz", seed=i, **TINY)) for i in (0, 1)]
    base = ["recommend", "--dataset", str(root), "--candidates", ",".join(ckpts),
            "--format", "json"]
    outs, alone_out = _two_processes_and_one(base, tmp_path)

    assert outs[1] == ""  # process 0 writes the output
    multi, alone = json.loads(outs[0]), json.loads(alone_out)
    assert multi["checkpoint"] in ckpts
    for key in ("checkpoint", "value", "runner_up", "runner_up_value", "margin",
                "choosing_split", "reported_split", "choosing_split_info"):
        assert multi[key] == alone[key], key

    def scores(ranking):  # img/s is measured, so it differs from run to run
        return [{k: v for k, v in row.items() if k != "img_per_sec"} for row in ranking]

    assert scores(multi["ranking"]) == scores(alone["ranking"])
    assert (tmp_path / "home0" / "local_runs.json").is_file()  # process 0 registers the probe
    assert not (tmp_path / "home1" / "local_runs.json").exists()
    for m, a in zip(multi["candidates"], alone["candidates"], strict=True):
        assert m["checkpoint"] == a["checkpoint"]
        for key in SCORES:
            assert m[key] == a[key], (m["checkpoint"], key)


def test_recommend_without_dataset_refuses_the_cluster_options(capsys):
    from tests.support.cli_helpers import run_cli

    code, out, err = run_cli(capsys, "recommend", "--num-processes", "2")
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "--num-processes applies to recommend --dataset only" in err


@pytest.mark.parametrize("command", ["probe", "head-only"])
def test_a_streamed_split_over_several_processes_is_one_line_before_extraction(
        command, tmp_path, capsys, monkeypatch):
    """Streamed TFDS splits are read by one process: with several, both commands refuse in one
    line before a feature is extracted (the process count is faked: no cluster is started)."""
    import jax

    tfds = pytest.importorskip("tensorflow_datasets")
    from tests.support.cli_helpers import run_cli
    from tests.support.tfds_mock import pets_examples

    ckpt = str(write_tiny_vit(tmp_path / "vit.npz", **TINY))
    args = (["probe", "--candidates", ckpt] if command == "probe"
            else ["finetune", ckpt, "--head-only", "--workdir", str(tmp_path / "run")])
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 74, "test": 20})):
        code, out, err = run_cli(capsys, *args, "--dataset", "oxford_iiit_pet", "--stream",
                                 "--res", "32")
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "a streamed TFDS split is extracted by one process, not 2" in lines[0]
    assert "--coordinator" in lines[0] and "--stream" in lines[0]
    home = Path(os.environ["VITZOO_HOME"])  # nothing was extracted
    assert not any(p.name.startswith("chunk-") for p in home.rglob("*"))


@pytest.mark.parametrize("option", ["--coordinator", "--num-processes", "--process-id"])
def test_the_cluster_options_are_declared_once_and_probe_finetune_recommend_take_them(option):
    from typer.testing import CliRunner

    from tests.project.test_cli_options import _cli_sources
    from vitzoo.cli import app

    assert _cli_sources().count(f'"{option}"') == 1
    for command in ("probe", "finetune", "recommend"):
        result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0 and option in result.output, (command, option)
