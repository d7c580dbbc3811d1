"""TFDS multi-label datasets: ``voc``'s ``labels`` (``Sequence(ClassLabel)``) as multi-hot rows.

Offline through ``tfds.testing.mock_data`` with the dataset's real feature metadata (20
class names) and examples supplied by ``as_dataset_fn`` (encoded PNGs and label
sequences of 0 to 3 classes, repeats included), so the expected rows are known here.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")


def sequence(split: str, i: int) -> list[int]:
    """Example ``i``'s label sequence: 0-3 classes, a repeat in some (an object seen twice)."""
    return [(i * 3 + len(split)) % 20, (i * 7) % 20, (i * 3 + len(split)) % 20][: i % 4]


def voc_examples(num: dict[str, int]):
    import tensorflow as tf
    from PIL import Image

    def as_dataset(self, split, decoders=None, **kwargs):
        name = str(split).split("[")[0]

        def gen():
            for i in range(num.get(name, 4)):
                buf = io.BytesIO()
                Image.fromarray(np.full((12, 16, 3), i * 9 % 255, np.uint8)).save(buf, format="PNG")
                yield {"image": buf.getvalue(), "image/filename": f"{i}.jpg".encode(),
                       "labels": np.asarray(sequence(name, i), np.int64),
                       "labels_no_difficult": np.asarray(sequence(name, i), np.int64)}

        return tf.data.Dataset.from_generator(gen, output_signature={
            "image": tf.TensorSpec((), tf.string), "image/filename": tf.TensorSpec((), tf.string),
            "labels": tf.TensorSpec((None,), tf.int64),
            "labels_no_difficult": tf.TensorSpec((None,), tf.int64)})

    return as_dataset


def expected_rows(split: str, count: int) -> np.ndarray:
    rows = np.zeros((count, 20), np.int32)
    for i in range(count):
        for k in sequence(split, i):
            rows[i, k] = 1
    return rows


def test_voc_labels_become_multi_hot_rows_and_validation_chooses():
    from vitzoo.data import open_dataset

    with tfds.testing.mock_data(as_dataset_fn=voc_examples({"train": 9, "validation": 5,
                                                            "test": 6})):
        data = open_dataset("voc", task="multilabel")
    assert data.task == "multilabel" and data.num_classes == 20
    assert data.class_names[:3] == ["aeroplane", "bicycle", "bird"]
    assert data.eval_split == "test"
    np.testing.assert_array_equal(data.train.labels, expected_rows("train", 9))
    np.testing.assert_array_equal(data.eval.labels, expected_rows("test", 6))
    np.testing.assert_array_equal(data.validation.labels, expected_rows("validation", 5))
    assert data.train.payload[0][:4] == b"\x89PNG"


def test_voc_without_task_multilabel_says_how():
    from vitzoo.data import open_dataset
    from vitzoo.errors import VitzooError

    with tfds.testing.mock_data(as_dataset_fn=voc_examples({})), \
            pytest.raises(VitzooError) as caught:
        open_dataset("voc")
    assert "--task multilabel" in caught.value.hint
