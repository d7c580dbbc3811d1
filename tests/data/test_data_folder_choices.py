"""Image folders say what they left out and can be scored whole.

Hidden (``.name``) folders are skipped *and named*; a ``file://`` URL to nothing says the
folder is missing (it is not a TFDS name); ``evaluate --eval-split all`` scores every image
of a plain class folder (and of a train/test folder), which a fine-tune refuses.
"""

from __future__ import annotations

import json

import pytest

from tests.support.adapt_helpers import color_image, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli
from vitzoo.data import open_dataset
from vitzoo.data.folder import load_folder
from vitzoo.errors import VitzooError


def test_hidden_class_folders_are_skipped_and_named(tmp_path):
    root = write_folder(tmp_path / "photos", color_image, ["cat", "dog", ".secret"], train=10, test=None,
                        size=16)
    (root / ".ipynb_checkpoints").mkdir()
    data = load_folder(root, cache_dir=tmp_path / "converted")
    assert data.class_names == ["cat", "dog"]
    (note,) = [n for n in data.notes if "hidden" in n]
    assert "2 hidden folder(s)" in note and ".ipynb_checkpoints, .secret" in note and str(root) in note


def test_hidden_folders_in_train_and_test_are_named(tmp_path):
    root = write_folder(tmp_path / "photos", color_image, ["cat", "dog", ".old"], train=4, test=2, size=16)
    data = load_folder(root, cache_dir=tmp_path / "converted")
    assert data.class_names == ["cat", "dog"]
    hidden = [n for n in data.notes if "hidden" in n]
    assert len(hidden) == 2 and {str(root / "train"), str(root / "test")} == {
        n.split(" in ", 1)[1].split(":")[0] for n in hidden}


def test_a_file_url_to_nothing_says_the_folder_is_missing(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(VitzooError, match=f"dataset folder {missing} does not exist") as caught:
        open_dataset(f"file://{missing}")
    assert "TFDS" not in caught.value.message
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(VitzooError, match="is a file, not a folder"):
        open_dataset(f"file://{tmp_path / 'a.txt'}")
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=3)
    code, _, err = run_cli(capsys, "evaluate", str(ckpt), "--dataset", f"file://{missing}")
    assert code == 2 and "does not exist" in err and "TFDS dataset" not in err
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.npz", num_classes=3))


@pytest.mark.parametrize("layout", ["plain", "train-test"])
def test_evaluate_all_scores_every_image_of_the_folder(layout, ckpt, tmp_path, capsys):
    test = None if layout == "plain" else 5
    root = write_folder(tmp_path / "photos", color_image, ["r", "g", "b"], train=18, test=test, size=16)
    images = sorted(p for p in root.rglob("*.png"))  # the oracle: the files written
    assert len(images) == 3 * (18 + (test or 0))
    code, out, err = run_cli(capsys, "evaluate", ckpt, "--dataset", str(root), "--res", "32",
                             "--eval-split", "all", "--format", "json")
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["examples"] == len(images) and report["split"] == "all"
    assert any("every readable image" in n for n in report["notes"]), report["notes"]
    code, out, err = run_cli(capsys, "evaluate", ckpt, "--dataset", str(root), "--res", "32",
                             "--format", "json")
    held_out = json.loads(out.splitlines()[-1])["examples"]
    assert code == 0 and held_out < len(images)  # without it: the carved or test split only


def test_finetune_refuses_evaluating_on_every_image(tmp_path):
    root = write_folder(tmp_path / "photos", color_image, ["r", "g"], train=4, test=None, size=16)
    with pytest.raises(VitzooError, match="training images included"):
        load_folder(root, eval_split="all", need_train=True, cache_dir=tmp_path / "converted")
