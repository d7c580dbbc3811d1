"""Image-folder datasets: layouts, formats, conversions, skipped files and every user error."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.adapt_helpers import color_image, write_folder
from tests.support.images import mixed_image_folder
from vitzoo.data import open_dataset
from vitzoo.errors import VitzooError


def test_mixed_formats_decode_to_rgb_and_corrupt_file_is_listed(tmp_path):
    from vitzoo.data.preprocess import eval_recipe
    from vitzoo.data.tfdata import Layout

    data = open_dataset(str(mixed_image_folder(tmp_path / "pets")), val_fraction=0.3)
    assert data.class_names == ["cat", "dog"]
    assert len(data.train) + len(data.eval) == 10
    assert data.skipped == [("dog/broken.jpg", "OSError: Truncated File Read")]
    assert any("skipped 1" in n for n in data.notes)
    assert any("carved" in n for n in data.notes)
    assert any("converted" in n for n in data.notes)
    everything = data.train
    layout = Layout(global_batch=len(everything))
    (batch,) = list(everything.eval_batches(eval_recipe(16), layout))
    assert batch["image"].shape == (1, len(everything), 16, 16, 3)
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    assert batch["mask"].all()


def test_train_test_layout_and_val_alias(tmp_path):
    root = write_folder(tmp_path / "d", color_image, ["r", "g", "b"], train=4, test=2)
    data = open_dataset(str(root))
    assert (len(data.train), len(data.eval), data.eval_split) == (12, 6, "test")
    assert sorted(np.bincount(data.eval.labels).tolist()) == [2, 2, 2]
    (root / "test").rename(root / "val")
    assert open_dataset(str(root)).eval_split == "val"


def test_carved_split_is_deterministic_and_stratified(tmp_path):
    root = write_folder(tmp_path / "d", color_image, ["r", "g"], train=10, test=None)
    a = open_dataset(str(root), val_fraction=0.2)
    b = open_dataset(str(root), val_fraction=0.2)
    assert a.eval.payload == b.eval.payload
    assert np.bincount(a.eval.labels).tolist() == [2, 2]
    assert not set(a.eval.payload) & set(a.train.payload)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("no_classes", "no class folders"),
    ("one_class", "only one class"),
    ("empty_class", "have no readable images"),
    ("only_corrupt", "no readable images"),
    ("eval_extra_class", "lacks"),
])
def test_bad_folders_fail_with_clear_errors(tmp_path, case, message):
    root = tmp_path / "d"
    if case == "no_classes":
        root.mkdir()
        (root / "x.png").write_bytes(b"")
    elif case == "one_class":
        write_folder(root, color_image, ["only"], train=3, test=None)
    elif case == "empty_class":
        write_folder(root, color_image, ["a", "b"], train=3, test=None)
        (root / "empty").mkdir()
    elif case == "only_corrupt":
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
            (root / name / "x.jpg").write_bytes(b"garbage")
    elif case == "eval_extra_class":
        write_folder(root, color_image, ["a", "b"], train=2, test=1)
        write_folder(root / "test", color_image, ["zebra"], train=1, test=None)
    target = str(root) if case != "missing" else str(tmp_path / "nope")
    with pytest.raises(VitzooError, match=message):
        open_dataset(target)


def test_path_that_does_not_exist_is_not_taken_for_a_tfds_name(tmp_path):
    with pytest.raises(VitzooError, match="does not exist"):
        open_dataset("./no/such/folder")
