"""``finetune --dry-run``: the memory it reports is XLA's own analysis of the run's train step
(compiled again here, independently, from concrete arrays), nothing is written, the real run
afterwards fits and uses the reported batch split; a device too small gives exit 1 and the
largest micro-batch that fits (checked by compiling it and the next larger one here)."""

from __future__ import annotations

import json

import pytest

from tests.support.adapt_helpers import cli, color_image, run_python, tiny_checkpoint, write_folder

pytestmark = pytest.mark.slow

CODE = """
import contextlib, io, json, os
from pathlib import Path
import numpy as np
os.chdir({cwd!r})
from vitzoo.adapt import dryrun
from vitzoo.adapt.options import FinetuneOptions

options = FinetuneOptions(model={ckpt!r}, dataset={data!r}, workdir={work!r}, steps=3, warmup=1,
                          batch=8, res=32, accum="1", progress=False, register=False)
report = dryrun.dry_run(options)

# The oracle: the same step built and compiled here from concrete arrays.
import jax
from vitzoo.adapt.optimizer import sgd_momentum
from vitzoo.adapt.schedule import warmup_cosine
from vitzoo.adapt.steps import init_state, make_train_step
from vitzoo.models import build_model
from vitzoo.weights.release import load_for_finetune

config, params = load_for_finetune(Path({ckpt!r}), num_classes=2, resolution=32)
module = build_model(config, 2, dropout=0.0)
tx = sgd_momentum(warmup_cosine(0.03, 3, 1), clip_norm=1.0, momentum_dtype="bfloat16")
state = jax.tree.map(lambda x: np.stack([np.asarray(x)]), init_state(params, tx))
batch = {{"image": np.zeros((1, 8, 32, 32, 3), np.float32), "label": np.zeros((1, 8), np.int32)}}
key = np.zeros((1, 2), np.uint32)

def analysis(accum):
    step = make_train_step(module.apply, tx, num_classes=2, accum=accum)
    m = step.lower(state, batch, key).compile().memory_analysis()
    return {{"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
             "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes,
             "generated_code": m.generated_code_size_in_bytes}}

def total(m):
    return m["argument"] + m["output"] - m["alias"] + m["temp"] + m["generated_code"]

xla = {{micro: analysis(8 // micro) for micro in (1, 2, 4, 8)}}
limit = total(xla[8]) - 1  # the planned micro-batch (8) no longer fits
dryrun.device_memory = lambda device, local: (limit, "a device this test made small")
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        from vitzoo.cli import main
        main(["finetune", {ckpt!r}, "--dataset", {data!r}, "--workdir", {work!r}, "--steps",
              "3", "--warmup", "1", "--batch", "8", "--res", "32", "--accum", "1", "--dry-run"])
        code = 0
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"report": report.as_dict(), "xla": xla, "limit": limit, "code": code,
                   "small": out.getvalue()}}))
"""


def test_dry_run_reports_xla_numbers_writes_nothing_and_the_run_fits(tmp_path):
    data = write_folder(tmp_path / "data", color_image, ["a", "b"], train=6, test=2, size=36)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    work, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    proc = run_python(CODE.format(cwd=str(cwd), ckpt=str(ckpt), data=str(data), work=str(work)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    report, xla = found["report"], found["xla"]

    memory = dict(report["memory"])
    reported_total = memory.pop("total")
    assert memory == xla["8"]  # micro-batch 8 x accumulation 1, as planned
    assert reported_total == xla["8"]["argument"] + xla["8"]["output"] - xla["8"]["alias"] \
        + xla["8"]["temp"] + xla["8"]["generated_code"]
    assert (report["micro_batch"], report["accum"], report["per_device_batch"]) == (8, 1, 8)
    assert report["fits"] and report["flops_per_step"] > 0
    assert not work.exists() and list(cwd.iterdir()) == []  # nothing written

    # A device too small: exit 1, the largest micro-batch that fits named, checked here.
    assert found["code"] == 1
    fitting = [m for m in (1, 2, 4) if sum_total(xla[str(m)]) <= found["limit"]]
    assert fitting, "the planted limit leaves no micro-batch: the test is not testing"
    best = max(fitting)
    assert f"largest micro-batch that fits is {best}: --accum {8 // best}" in found["small"]

    # The real run afterwards fits, with the reported split.
    run = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(work),
               "--steps", "3", "--warmup", "1", "--batch", "8", "--res", "32", "--accum", "1",
               "--no-progress", "--no-register"])
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((work / "run.json").read_text())
    assert record["status"] == "finished"
    assert (record["batch"]["micro_batch"], record["batch"]["accum"]) == (8, 1)


def sum_total(m: dict) -> int:
    return m["argument"] + m["output"] - m["alias"] + m["temp"] + m["generated_code"]
