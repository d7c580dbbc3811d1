"""A multi-label image folder: the labels CSV, its splits and its multi-hot rows.

Expected rows are written down here from the CSV text, not from the reader.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitzoo.data import open_dataset
from vitzoo.data.multilabel import parse_labels
from vitzoo.errors import VitzooError


def folder(root, rows: dict[str, str], *, broken: tuple[str, ...] = ()):
    for path in rows:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if path in broken:
            (root / path).write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / path)
    text = "path,labels\n" + "".join(f'"{p}",{labels}\n' for p, labels in rows.items())
    (root / "labels.csv").write_text(text)
    return root


def test_parse_labels_header_empty_sets_and_quoted_paths():
    rows = parse_labels('path,labels\n"a,b.jpg",dog; cat\nx.jpg,\n\ny.jpg,cat;cat\n')
    assert rows == [("a,b.jpg", ["cat", "dog"]), ("x.jpg", []), ("y.jpg", ["cat"])]
    with pytest.raises(VitzooError, match="3 columns"):
        parse_labels("x.jpg,cat,dog\n")
    with pytest.raises(VitzooError, match="no images"):
        parse_labels("path,labels\n")


def test_splits_follow_folders_and_rows_are_multi_hot(tmp_path):
    rows = {"train/0.png": "a;b", "train/1.png": "b", "train/2.png": "", "val/0.png": "c",
            "val/1.png": "a;c", "test/0.png": "a", "test/1.png": "b;c", "test/2.png": "c"}
    data = open_dataset(str(folder(tmp_path, rows)), task="multilabel")
    assert data.task == "multilabel" and data.class_names == ["a", "b", "c"]
    assert data.eval_split == "test"
    np.testing.assert_array_equal(data.train.labels, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(data.validation.labels, [[0, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(data.eval.labels, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    validation = open_dataset(str(tmp_path), task="multilabel", eval_split="val", need_train=False)
    np.testing.assert_array_equal(validation.eval.labels, [[0, 0, 1], [1, 0, 1]])


def test_without_val_folder_training_images_are_held_out(tmp_path):
    rows = {f"train/{i}.png": ("a" if i % 2 else "b") for i in range(10)}
    rows.update({"test/0.png": "a", "test/bad.png": "b"})
    data = open_dataset(str(folder(tmp_path, rows, broken=("test/bad.png",))),
                        task="multilabel", val_fraction=0.2)
    assert (len(data.train), len(data.validation), len(data.eval)) == (8, 2, 1)
    assert [f for f, _ in data.skipped] == ["test/bad.png"]
    assert any("held out 2 of 10" in note for note in data.notes)


def test_mistakes_are_one_line(tmp_path):
    from vitzoo.data.options import DataOptions
    from vitzoo.probe.run import open_probe_dataset

    with pytest.raises(VitzooError, match=r"no labels\.csv"):
        open_dataset(str(tmp_path), task="multilabel")
    with pytest.raises(VitzooError, match="--task multilabel"):
        DataOptions(dataset=str(tmp_path), labels="x.csv").check()
    folder(tmp_path, {"train/0.png": "a", "train/1.png": "b", "test/0.png": "a;b"})
    # the probe takes multi-label datasets now (scored by mAP: test_multilabel_probe)
    assert open_probe_dataset(DataOptions(dataset=str(tmp_path), task="multilabel")).task == \
        "multilabel"
