"""kill -9 at an arbitrary moment, then resume: the final parameters are bit-identical to
an uninterrupted run. Ctrl-C saves a checkpoint, exits 130, and resumes the same way.
Two processes joined by ``jax.distributed`` on 127.0.0.1 train exactly like one process
with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO_ROOT
from tests.support.adapt_helpers import (
    cli,
    color_image,
    free_port,
    load_params,
    tiny_checkpoint,
    write_folder,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_folder(root / "data", color_image, ["r", "g", "b"], train=8, test=3, size=72)
    return root, tiny_checkpoint(root / "tiny.npz", num_classes=10)


def _args(root: Path, ckpt: Path, workdir: Path, steps: int) -> list[str]:
    return ["finetune", str(ckpt), "--dataset", str(root / "data"), "--workdir", str(workdir),
            "--steps", str(steps), "--warmup", "5", "--batch", "8", "--res", "64",
            "--checkpoint-every", "4", "--eval-every", "25", "--log-every", "5",
            "--no-progress", "--no-register", "--dtype", "float32"]


def _popen(args: list[str], devices: int = 2) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    code = f"from vitzoo.cli import main; main({args!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(workdir: Path, proc: subprocess.Popen, min_step: int) -> int:
    from vitzoo.adapt.train_state import read_meta

    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            meta = read_meta(workdir)
        except Exception:
            meta = None
        if meta and meta["step"] >= min_step:
            return meta["step"]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_sigint_then_resume_is_bit_identical(setup, tmp_path):
    root, ckpt = setup
    steps = 60
    straight = cli(_args(root, ckpt, tmp_path / "straight", steps), devices=2)
    assert straight.returncode == 0, straight.stderr[-3000:]

    workdir = tmp_path / "killed"
    proc = _popen(_args(root, ckpt, workdir, steps))
    killed_at = _wait_for_checkpoint(workdir, proc, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (workdir / "final.npz").exists()

    proc = _popen(_args(root, ckpt, workdir, steps))
    _wait_for_checkpoint(workdir, proc, killed_at + 8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "rerun the same command to resume" in " ".join(err.split())
    assert not (workdir / "final.npz").exists()

    resumed = cli(_args(root, ckpt, workdir, steps), devices=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_params(tmp_path / "straight" / "final.npz"), load_params(workdir / "final.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5, steps + 1, 5))
    log = (workdir / "run.log").read_text()
    assert log.count("resume at step") == 2

    again = cli(_args(root, ckpt, workdir, steps), devices=2)  # finished: nothing to do
    assert again.returncode == 0 and "already holds the finished run" in " ".join(again.stderr.split())


def test_changed_settings_in_the_same_workdir_are_refused(setup, tmp_path):
    root, ckpt = setup
    args = _args(root, ckpt, tmp_path / "w", 4)
    assert cli(args).returncode == 0
    changed = cli([*args, "--lr", "0.1"])
    assert changed.returncode == 2
    assert "different settings" in changed.stderr and "lr: 0.03 -> 0.1" in changed.stderr


def test_two_processes_with_jax_distributed_equal_one_process(setup, tmp_path):
    root, ckpt = setup
    base = _args(root, ckpt, tmp_path / "multi", 6)
    port = free_port()
    procs = [_popen([*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)], devices=1) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    single = cli(_args(root, ckpt, tmp_path / "single", 6), devices=2)
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = load_params(tmp_path / "multi" / "final.npz"), load_params(tmp_path / "single" / "final.npz")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
    run = json.loads((tmp_path / "multi" / "run.json").read_text())
    assert run["batch"]["processes"] == 2 and run["batch"]["devices"] == 2
