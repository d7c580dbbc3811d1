"""``--recipe paper|quick`` against the published recipe written out here, independently of
:mod:`vitzoo.adapt.recipes`; options given on the command line win; the recipe is recorded.

The oracle (Steiner et al., arXiv 2106.10270; vit_jax ``configs/augreg.py`` and
``configs/common.py``; big_transfer ``bit_hyperrule.py``): SGD momentum 0.9, batch 512,
clipping at 1, no weight decay, 384 px, lr in {0.001, 0.003, 0.01, 0.03} chosen on
validation; 500 steps (100 warmup) under 20k training images, 10k steps (500 warmup) under
500k, 20k steps (500 warmup) above.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.support.adapt_helpers import cli, color_image, tiny_checkpoint, write_folder
from vitzoo.adapt import recipes
from vitzoo.adapt.options import FinetuneOptions

# (training images, steps, warmup): pets, a just-small set, the boundaries, CIFAR-100, ImageNet-1k.
PAPER_TABLE = [(3_680, 500, 100), (19_999, 500, 100), (20_000, 10_000, 500),
               (50_000, 10_000, 500), (499_999, 10_000, 500), (500_000, 20_000, 500),
               (1_281_167, 20_000, 500)]
PAPER_LRS = [0.001, 0.003, 0.01, 0.03]


@pytest.mark.parametrize(("images", "steps", "warmup"), PAPER_TABLE)
def test_paper_recipe_matches_the_published_table(images, steps, warmup):
    options = FinetuneOptions(model="B/16", dataset="x", recipe="paper", batch=7, res=99,
                              clip_norm=3.0, steps=1, warmup=0)
    settled, lrs, lines = recipes.apply_recipe(options, (0.5,), {"model", "dataset", "recipe"},
                                               train_examples=images)
    assert (settled.steps, settled.warmup) == (steps, warmup)
    assert (settled.batch, settled.res, settled.clip_norm, settled.label_smoothing) == \
        (512, 384, 1.0, 0.0)
    assert list(lrs) == PAPER_LRS and settled.lr == 0.001
    recorded = settled.recipe_values
    assert recorded["lr"]["value"] == PAPER_LRS
    assert set(recorded) == {"steps", "warmup", "batch", "res", "clip_norm", "label_smoothing",
                             "lr"}
    assert all(f"{key} = " in " ".join(lines) for key in recorded)  # every value is printed


def test_explicit_options_beat_the_recipe_and_the_catalog_is_said():
    options = FinetuneOptions(model="B/16", dataset="x", recipe="paper", steps=7, lr=0.2)
    best = {"adapt_lr": 0.003, "adapt_steps": 2500, "adapt_resolution": 224,
            "adapt_final_val": 0.91, "checkpoint": "B_16-i21k--x-steps_2k-lr_0.003-res_224"}
    settled, lrs, lines = recipes.apply_recipe(options, (0.2,), {"steps", "lr"},
                                               train_examples=3_680, best=best)
    assert settled.steps == 7 and lrs == (0.2,) and settled.lr == 0.2  # given: kept
    assert settled.res == 224 and settled.warmup == 100 and settled.batch == 512
    assert "catalog" in settled.recipe_values["res"]["source"]
    assert "steps" not in settled.recipe_values and "lr" not in settled.recipe_values
    text = "\n".join(lines)
    assert "given on the command line" in text and "91.00%" in text


def test_quick_recipe_is_a_short_single_run():
    options = FinetuneOptions(model="B/16", dataset="x", recipe="quick")
    settled, lrs, _ = recipes.apply_recipe(options, (0.03,), set(), train_examples=10)
    assert len(lrs) == 1 and settled.steps <= 200 and settled.batch <= 64 and settled.res == 224


def test_the_cli_tells_given_options_from_defaults(monkeypatch):
    """click's parameter source, not a comparison with the default: --batch 512 is given."""
    from vitzoo.adapt import sweep
    from vitzoo.cli import app

    seen = {}

    def fake_launch(options, lrs, explicit, *, dry_run=False):
        seen.update(options=options, lrs=lrs, explicit=explicit, dry_run=dry_run)
        return 0

    monkeypatch.setattr(sweep, "launch", fake_launch)
    result = CliRunner().invoke(app, ["finetune", "B/16", "--dataset", "d", "--recipe", "paper",
                                      "--batch", "512", "--lr", "0.01,0.03", "--no-register",
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    explicit = seen["explicit"] - {"allow_cpu", "dry_run"}  # the suite sets VITZOO_ALLOW_CPU
    assert explicit == {"model", "dataset", "recipe", "batch", "lr", "register"}
    assert seen["lrs"] == (0.01, 0.03) and seen["dry_run"] and seen["options"].recipe == "paper"


@pytest.mark.slow
def test_recipe_values_are_recorded_in_run_json(tmp_path):
    data = write_folder(tmp_path / "data", color_image, ["a", "b"], train=6, test=2, size=36)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    work = tmp_path / "run"
    proc = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(work),
                "--recipe", "quick", "--steps", "3", "--batch", "4", "--res", "32",
                "--no-progress", "--no-register"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    options = json.loads((work / "run.json").read_text())["options"]
    assert options["recipe"] == "quick"
    values = options["recipe_values"]
    assert values["lr"]["value"] == [0.01] and values["eval_every"]["value"] == 50
    assert not {"steps", "batch", "res"} & set(values)  # given on the command line
    assert (options["steps"], options["batch"], options["res"], options["lr"]) == (3, 4, 32, 0.01)
    assert "lr = 0.01 (quick recipe" in " ".join(proc.stderr.split())


def test_best_known_ranks_by_validation_never_by_test(monkeypatch):
    """The catalog's row for this upstream file and dataset with the best adapt_final_val."""
    from types import SimpleNamespace

    import pandas as pd

    from vitzoo.catalog import api

    rows = [  # (filename, adapt_ds, lr, steps, res, val, test)
        ("UP", "oxford_iiit_pet", 0.03, 500, 384, 0.90, 0.99),  # best test: must not win
        ("UP", "oxford_iiit_pet", 0.003, 2500, 224, 0.95, 0.80),
        ("UP", "cifar100", 0.01, 10000, 384, 0.99, 0.99),  # another dataset
        ("OTHER", "oxford_iiit_pet", 0.001, 500, 384, 0.99, 0.99),  # another checkpoint
    ]
    frame = pd.DataFrame(rows, columns=["filename", "adapt_ds", "adapt_lr", "adapt_steps",
                                        "adapt_resolution", "adapt_final_val",
                                        "adapt_final_test"])
    frame["checkpoint"] = [f"c{i}" for i in range(len(frame))]
    monkeypatch.setattr(api, "find_checkpoint", lambda name: SimpleNamespace(row={"filename": "UP"}))
    monkeypatch.setattr(api, "load_dataframe", lambda: frame)
    best = recipes.best_known("B/16", "oxford_iiit_pet:3.*")
    assert (best["adapt_lr"], best["adapt_steps"], best["adapt_resolution"], best["checkpoint"]) \
        == (0.003, 2500, 224, "c1")
    assert recipes.best_known("B/16", "kitti") is None
