"""``finetune --lr a,b``: one resumable run per value, the choice made on validation (carved from
train when the dataset's held-out split is test), test scored for the chosen run only.

Poisoned test labels (every test image filed under the other class) would make a choice on
test pick the run that learned nothing; the sweep must pick the run that learned, as the
runs' own validation numbers (read here from each run.json) say.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.support.adapt_helpers import cli, color_image, tiny_checkpoint, write_folder
from vitzoo.adapt.sweep import choose, parse_lrs, table
from vitzoo.errors import VitzooError

LOW, HIGH = 1e-6, 0.1


def _poisoned_folder(root):
    write_folder(root, color_image, ["green", "red"], train=12, test=None, size=36)
    (root / "train").mkdir()
    for name in ("green", "red"):
        (root / name).rename(root / "train" / name)
    rng = np.random.default_rng(3)
    for label, name in enumerate(["green", "red"]):
        folder = root / "test" / name
        folder.mkdir(parents=True)
        for i in range(4):  # images of the OTHER class under this label
            Image.fromarray(color_image(1 - label, 36, rng)).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_sweep_chooses_on_validation_not_on_poisoned_test(tmp_path):
    data = _poisoned_folder(tmp_path / "data")
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    home = {"VITZOO_HOME": str(tmp_path / "home")}
    sweep_dir = tmp_path / "sweep"
    proc = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(sweep_dir),
                "--lr", f"{LOW},{HIGH}", "--steps", "6", "--warmup", "1", "--batch", "8",
                "--res", "32", "--val-fraction", "0.25", "--no-progress"], env=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((sweep_dir / "sweep.json").read_text())

    # The oracle: each run's own validation number, from its run.json.
    runs = {lr: json.loads((sweep_dir / f"lr_{lr:g}" / "run.json").read_text())
            for lr in (LOW, HIGH)}
    val = {lr: (run["final_metrics"]["eval_accuracy"], -run["final_metrics"]["eval_loss"])
           for lr, run in runs.items()}
    assert record["chosen_lr"] == HIGH  # the run that learned
    assert record["chosen_lr"] == max(val, key=val.get)
    for run in runs.values():
        assert run["status"] == "finished" and "carved" in run["dataset"]["eval_split"]
        assert run["dataset"]["eval_examples"] == 6  # 25% of 12 per class, never test's 8
    assert record["chosen_on"].startswith("train[carved")
    test = record["test"]
    assert test["split"] == "test" and test["examples"] == 8
    assert test["top1"] < 0.5  # the poison bites: a choice on test would not pick this run

    registry = json.loads((tmp_path / "home" / "local_runs.json").read_text())
    assert {r["checkpoint"] for r in registry} >= {f"sweep-lr_{LOW:g}", f"sweep-lr_{HIGH:g}"}
    lines = proc.stdout.strip().splitlines()
    assert max(len(line) for line in lines) <= 80 and any("%" in line for line in lines)

    again = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(sweep_dir),
                 "--lr", f"{LOW},{HIGH}", "--steps", "6", "--warmup", "1", "--batch", "8",
                 "--res", "32", "--val-fraction", "0.25", "--no-progress"], env=home)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already holds the finished run" in again.stderr  # each run resumes (here: done)


def test_choose_and_table_without_training():
    runs = [{"lr": 0.01, "val_top1": 0.8, "val_loss": 0.5, "steps": 5, "name": "a"},
            {"lr": 0.03, "val_top1": 0.8, "val_loss": 0.4, "steps": 5, "name": "b"},
            {"lr": 0.001, "val_top1": 0.7, "val_loss": 0.1, "steps": 5, "name": "c"}]
    assert choose(runs)["lr"] == 0.03  # equal top-1: the lower validation loss
    lines = table({"chosen_on": "validation", "runs": runs, "chosen_lr": 0.03,
                   "test": {"split": "test", "top1": 0.756, "examples": 100}})
    assert "75.60%" in lines[-1] and all(len(line) <= 80 for line in lines)
    assert parse_lrs("0.001, 0.003") == (0.001, 0.003)
    for bad in ("0.1,x", "-1", "0.1,0.1", ""):
        with pytest.raises(VitzooError):
            parse_lrs(bad)
