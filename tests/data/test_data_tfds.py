"""TFDS datasets offline, through ``tfds.testing.mock_data`` (tensorflow-datasets 4.9.x).

The examples come from ``tests.support.tfds_mock.pets_examples`` (why: see there).
"""

from __future__ import annotations

import pytest

from tests.support.tfds_mock import pets_examples
from vitzoo.errors import VitzooError

tfds = pytest.importorskip("tensorflow_datasets")


def test_oxford_iiit_pet_under_mock_data():
    from vitzoo.data import open_dataset

    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 10, "test": 7})):
        data = open_dataset("oxford_iiit_pet")
        sliced = open_dataset("oxford_iiit_pet", train_split="train[:50%]", eval_split="test[2:]")
    assert data.num_classes == 37 and data.class_names[0] == "Abyssinian"
    assert (len(data.train), len(data.eval), data.eval_split) == (10, 7, "test")
    assert data.train.payload[0][:4] == b"\x89PNG"
    assert (sliced.train_split, sliced.eval_split) == ("train[:50%]", "test[2:]")
    assert sliced.train.labels.tolist() == [0, 1, 2, 3, 4]  # the first half of train's 10
    assert sliced.eval.labels.tolist() == [2, 3, 4, 5, 6]  # test's 7 from the third on


def test_carved_validation_split_when_asked_split_is_missing(monkeypatch):
    from vitzoo.data import tfds as vtfds

    monkeypatch.setattr(vtfds, "_has_split", lambda builder, split: False)
    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 20})):
        data = vtfds.load_tfds("oxford_iiit_pet", val_fraction=0.25)
    assert (len(data.train), len(data.eval)) == (15, 5)
    assert any("carved" in note for note in data.notes)


def test_unknown_tfds_name_is_a_clear_error():
    from vitzoo.data import open_dataset

    with pytest.raises(VitzooError, match="unknown TFDS dataset"):
        open_dataset("no_such_dataset_xyz")
