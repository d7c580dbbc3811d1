"""``vitzoo finetune <timm folder> --dataset <folder>`` for every ViT family, like an AugReg
checkpoint: a new head, a resolution change, 2 CPU devices with pmap, an interrupted run
resumed to the very bits of an uninterrupted one, the checkpoint's own preprocessing recorded
and used, and an export back to timm's layout that reloads to the same logits.

One subprocess per family (2 fake CPU devices): the straight run, the interrupted one (a
SIGINT the process sends itself after step 2, which the runner treats as Ctrl-C: save and
stop), its resume, the export and the reload.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.adapt_helpers import load_params, run_python, stripes, write_folder
from tests.support.family_standins import STANDINS, write_standin

pytestmark = pytest.mark.slow

#: fine-tuning resolution per family: another grid than the checkpoint's (32 px, 42 px for /14)
RES = {"dinov2": 56}

SCRIPT = r"""
import json, os, signal, sys
from pathlib import Path
import numpy as np
from vitzoo.cli import main

folder, data, root, res = sys.argv[1:5]
root = Path(root)
args = ["finetune", folder, "--dataset", data, "--res", res, "--steps", "4", "--warmup", "1",
        "--batch", "4", "--eval-every", "2", "--log-every", "2", "--checkpoint-every", "2",
        "--no-progress", "--no-register"]

def run(workdir):
    try:
        main(args + ["--workdir", str(root / workdir)])
    except SystemExit as exit_:
        return exit_.code or 0
    return 0

codes = {"straight": run("straight")}
# Ctrl-C after step 2's log line: the runner saves a checkpoint at step 2 and stops (exit 130)
import vitzoo.adapt.metrics as metrics
real_write = metrics.MetricsWriter.write
def write_then_interrupt(self, entry):
    real_write(self, entry)
    if entry["step"] == 2:
        os.kill(os.getpid(), signal.SIGINT)
metrics.MetricsWriter.write = write_then_interrupt
codes["interrupted"] = run("resumed")
metrics.MetricsWriter.write = real_write
codes["resumed"] = run("resumed")
try:
    main(["export", str(root / "resumed"), "--to", "timm", "--out", str(root / "exported")])
except SystemExit as exit_:
    assert not exit_.code, exit_.code

from vitzoo.backbone import load
from vitzoo.predict import Predictor
images = np.random.default_rng(0).uniform(-2, 2, (3, int(res), int(res), 3)).astype(np.float32)
final, back = Predictor(root / "resumed" / "final.npz"), load(root / "exported")
import jax
reloaded = np.asarray(jax.jit(back.module().apply)({"params": back.params}, images))
print(json.dumps({"codes": codes, "final_logits": final.logits(images).tolist(),
                  "export_logits": reloaded.tolist(), "predict_recipe": final.recipe.as_dict(),
                  "export_preprocessing": back.preprocessing.as_dict()}))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    make = lambda label, size, rng: stripes(60.0 * label, size, rng, color=True)  # noqa: E731
    return write_folder(tmp_path_factory.mktemp("families") / "data", make, ["a", "b", "c"],
                        train=4, test=2, size=40)


@pytest.mark.parametrize("name", list(STANDINS))
def test_finetune_a_family_checkpoint_like_an_augreg_one(name, data, tmp_path):
    from vitzoo.data.preprocess import Preprocessing, eval_recipe, train_recipe
    from vitzoo.weights.release import load_checkpoint

    folder = write_standin(tmp_path / "models", name)
    res = RES.get(name, 48)
    proc = run_python(SCRIPT.replace("sys.argv[1:5]", repr([str(folder), str(data),
                                                             str(tmp_path), str(res)])),
                      devices=2, env={"VITZOO_HOME": str(tmp_path / "home")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["codes"] == {"straight": 0, "interrupted": 130, "resumed": 0}

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    a, b = load_params(straight / "final.npz"), load_params(resumed / "final.npz")
    assert a.keys() == b.keys()
    for key in a:  # the resumed run is the uninterrupted one, bit for bit
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    config, info, _ = load_checkpoint(resumed / "final.npz")
    assert (info["num_classes"], info["resolution"]) == (3, res)  # new head, new grid
    source = load_checkpoint(next((tmp_path / "home" / "checkpoints").rglob("*.npz")))[0]
    # still the family it started as (SigLIP's MAP head is its pooling, not a switch)
    assert (config.switches(), config.classifier) == (source.switches(), source.classifier)
    assert "resume at step 2" in (resumed / "run.log").read_text()

    run = json.loads((resumed / "run.json").read_text())
    assert run["batch"]["devices"] == 2 and run["status"] == "finished"
    rule = Preprocessing.from_timm(json.loads((folder / "config.json").read_text()), "config")
    recorded = run["preprocessing"]
    assert Preprocessing.from_dict(recorded["checkpoint"]) == rule
    assert recorded["train"] == train_recipe(res, rule).as_dict()
    assert recorded["eval"] == eval_recipe(res, rule).as_dict()
    assert recorded["eval"]["mean"] == STANDINS[name][2]["mean"]
    # predict and the timm export of the fine-tune keep the checkpoint's preprocessing
    assert out["predict_recipe"] == eval_recipe(res, rule).as_dict()
    assert Preprocessing.from_dict(out["export_preprocessing"]) == rule
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert exported["pretrained_cfg"]["mean"] == STANDINS[name][2]["mean"]
    np.testing.assert_allclose(out["export_logits"], out["final_logits"], atol=1e-5)
