"""Where ``finetune --lr a,b`` chooses when the held-out split is test: on the dataset's own
validation split (a folder's ``val/``) when it has one, as the probe does; else, or when
``--val-fraction`` is given, on a part carved from train. No training: the split counts
differ per layout (3 val/ images per class against 1 or 2 carved), so each says which it is.
"""

from __future__ import annotations

import pytest

from tests.support.adapt_helpers import color_image, write_folder
from vitzoo.adapt.options import FinetuneOptions
from vitzoo.adapt.sweep import choice_data, sweep_data
from vitzoo.data import options as data_options

CLASSES = ["green", "red"]


@pytest.fixture(autouse=True)
def nothing_given():
    """Each test states what the command line gave; the record is left empty after."""
    data_options.remember_given(())
    yield
    data_options.remember_given(())


def _folder(root, *, val: bool):
    write_folder(root, color_image, CLASSES, train=10, test=4, size=24)
    if val:
        write_folder(root / "_val", color_image, CLASSES, train=3, test=None, size=24, seed=1)
        (root / "_val").rename(root / "val")
    return root


def _choice(root, **given):
    options = FinetuneOptions(dataset=str(root), model="Ti/16", **given)
    data = sweep_data(options)  # as launch opens it for a sweep
    assert data.eval_split == "test"
    return choice_data(options, data)


def test_a_folder_with_val_chooses_on_val_and_reports_test(tmp_path):
    chosen, test_split = _choice(_folder(tmp_path / "data", val=True))
    assert (chosen.eval_split, test_split) == ("val", "test")
    assert len(chosen.eval) == 2 * 3 and len(chosen.train) == 2 * 10  # nothing carved
    assert sorted(chosen.eval.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert chosen.train_split == "train"
    assert any("chose on the dataset's own val split (6 images" in n for n in chosen.notes)


def test_a_folder_without_val_carves_as_before(tmp_path):
    chosen, test_split = _choice(_folder(tmp_path / "data", val=False))
    assert (chosen.eval_split, test_split) == ("train[carved 10%]", "test")
    assert len(chosen.eval) == 2 * 1 and len(chosen.train) == 2 * 9
    assert any("carved from train" in n for n in chosen.notes)


def test_an_explicit_val_fraction_carves_even_beside_val(tmp_path):
    data_options.remember_given({"val_fraction"})
    chosen, test_split = _choice(_folder(tmp_path / "data", val=True), val_fraction=0.2)
    assert (chosen.eval_split, test_split) == ("train[carved 20%]", "test")
    assert len(chosen.eval) == 2 * 2 and len(chosen.train) == 2 * 8


def test_the_sweep_reads_the_cli_s_record_of_val_fraction(tmp_path, capsys):
    """``--val-fraction`` on the command line is what forces the carve (the CLI records it for
    every data command; ``probe`` reads the same record)."""
    from tests.support.cli_helpers import run_cli

    run_cli(capsys, "probe", "--dataset", str(tmp_path / "missing"), "--val-fraction", "0.1")
    assert data_options.forced_carve(FinetuneOptions(dataset="x", model="Ti/16")) == 0.1
    run_cli(capsys, "probe", "--dataset", str(tmp_path / "missing"))
    assert data_options.forced_carve(FinetuneOptions(dataset="x", model="Ti/16")) is None


@pytest.mark.slow
def test_a_sweep_over_a_folder_with_val_chooses_there_and_scores_test(tmp_path):
    """End to end: ``sweep.json`` and every run say val/, and test is scored once, for the
    chosen run."""
    import json

    from tests.support.adapt_helpers import cli, tiny_checkpoint

    data = _folder(tmp_path / "data", val=True)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    sweep_dir = tmp_path / "sweep"
    proc = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(sweep_dir),
                "--lr", "1e-06,0.1", "--steps", "4", "--warmup", "1", "--batch", "8",
                "--res", "32", "--no-progress", "--no-register"],
               env={"VITZOO_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert (record["chosen_on"], record["test_split"]) == ("val", "test")
    for lr in ("1e-06", "0.1"):
        run = json.loads((sweep_dir / f"lr_{lr}" / "run.json").read_text())
        assert run["dataset"]["eval_split"] == "val" and run["dataset"]["eval_examples"] == 6
    assert record["test"]["split"] == "test" and record["test"]["examples"] == 2 * 4
    assert "chose on the dataset's own val split (6 images" in proc.stderr
