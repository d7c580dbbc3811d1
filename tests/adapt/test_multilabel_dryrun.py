"""``finetune --task multilabel --dry-run``: the memory it reports is XLA's analysis of the
*multi-label* train step (sigmoid BCE on multi-hot ``[batch, classes]`` labels), compiled
again here, independently, from concrete arrays; nothing is written and the real run
afterwards fits with the reported batch split."""

from __future__ import annotations

import json

import pytest

from tests.support.adapt_helpers import cli, run_python, tiny_checkpoint

pytestmark = pytest.mark.slow

CODE = """
import json, os
from pathlib import Path
import numpy as np
os.chdir({cwd!r})
from vitzoo.adapt import dryrun
from vitzoo.adapt.options import FinetuneOptions

options = FinetuneOptions(model={ckpt!r}, dataset={data!r}, workdir={work!r}, steps=3, warmup=1,
                          batch=8, res=32, accum="1", progress=False, register=False,
                          task="multilabel")
report = dryrun.dry_run(options)

# The oracle: the multi-label step built and compiled here from concrete arrays.
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
key = np.zeros((1, 2), np.uint32)

def analysis(task, label_shape):
    step = make_train_step(module.apply, tx, num_classes=2, accum=1, task=task)
    batch = {{"image": np.zeros((1, 8, 32, 32, 3), np.float32),
              "label": np.zeros(label_shape, np.int32)}}
    m = step.lower(state, batch, key).compile().memory_analysis()
    return {{"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
             "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes,
             "generated_code": m.generated_code_size_in_bytes}}

xla = {{"multilabel": analysis("multilabel", (1, 8, 2)),
        "multiclass": analysis("multiclass", (1, 8))}}
print(json.dumps({{"report": report.as_dict(), "xla": xla}}))
"""


def test_multilabel_dry_run_reports_xla_numbers_of_the_multilabel_step(tmp_path):
    from tests.adapt.test_multilabel_learns import write_two_region_folder

    data = write_two_region_folder(tmp_path / "data", train=16, test=4)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    work, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    proc = run_python(CODE.format(cwd=str(cwd), ckpt=str(ckpt), data=str(data), work=str(work)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    report, xla = found["report"], found["xla"]

    memory = dict(report["memory"])
    reported_total = memory.pop("total")
    expected = xla["multilabel"]
    assert memory == expected
    assert reported_total == expected["argument"] + expected["output"] - expected["alias"] \
        + expected["temp"] + expected["generated_code"]
    # the multi-hot labels are an argument of their own size: a softmax step's would differ
    assert expected["argument"] - xla["multiclass"]["argument"] == 8 * 4
    assert (report["micro_batch"], report["accum"], report["per_device_batch"]) == (8, 1, 8)
    assert report["fits"] and report["flops_per_step"] > 0
    assert not work.exists() and list(cwd.iterdir()) == []  # nothing written

    run = cli(["finetune", str(ckpt), "--dataset", str(data), "--task", "multilabel",
               "--workdir", str(work), "--steps", "3", "--warmup", "1", "--batch", "8",
               "--res", "32", "--accum", "1", "--no-progress", "--no-register"])
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((work / "run.json").read_text())
    assert record["status"] == "finished" and record["options"]["task"] == "multilabel"
    assert (record["batch"]["micro_batch"], record["batch"]["accum"]) == (8, 1)
