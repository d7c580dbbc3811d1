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


def _example_index(images: np.ndarray) -> np.ndarray:
    """Example ``i`` is a flat image of value ``i * 9``: read ``i`` back from the pixels."""
    values = (images.reshape(len(images), -1).mean(axis=1) + 1) / 2 * 255
    return np.rint(values / 9).astype(int)


def test_voc_streams_multi_hot_rows_for_training_evaluation_and_features(tmp_path, monkeypatch):
    """``--stream``: labels scattered in the tf.data map give the in-memory rows, each with
    its own image; evaluation pads with all-zero rows; the probe's extraction keeps them."""
    from vitzoo.data import Layout, eval_recipe, open_dataset, train_recipe

    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "home"))
    with tfds.testing.mock_data(as_dataset_fn=voc_examples({"train": 9, "validation": 5,
                                                            "test": 6})):
        data = open_dataset("voc", task="multilabel", stream=True)
        assert data.train.streamed and data.eval.streamed and data.validation.streamed
        assert any("streaming train" in note for note in data.notes)

        batches = data.train.train_batches(train_recipe(16), Layout(3), seed=0)
        seen = [next(batches) for _ in range(3)]  # one epoch of 9
        images = np.concatenate([b["image"].reshape(-1, 16, 16, 3) for b in seen])
        labels = np.concatenate([b["label"].reshape(-1, 20) for b in seen])
        order = _example_index(images)
        assert sorted(order.tolist()) == list(range(9))  # a shuffled epoch, each image once
        np.testing.assert_array_equal(labels, expected_rows("train", 9)[order])

        rows, masks = [], []
        for batch in data.eval.eval_batches(eval_recipe(16), Layout(4)):
            assert batch["label"].shape == (1, 4, 20)
            rows.append(batch["label"].reshape(-1, 20))
            masks.append(batch["mask"].reshape(-1))
        rows, mask = np.concatenate(rows), np.concatenate(masks).astype(bool)
        np.testing.assert_array_equal(rows[mask], expected_rows("test", 6))  # file order
        assert len(rows) == 8 and not rows[~mask].any()  # 2 padding rows, no class

        from tests.support.adapt_helpers import tiny_checkpoint
        from vitzoo.probe.features import Extractor, load_backbone

        extractor = Extractor(load_backbone(tiny_checkpoint(tmp_path / "tiny.npz")), batch=4)
        features, labels = extractor.extract(data.eval).load()
    assert features.shape == (6, 32)
    np.testing.assert_array_equal(labels, expected_rows("test", 6))


def test_streamed_training_split_without_validation_split_says_how():
    from types import SimpleNamespace

    from vitzoo.data.stream import StreamSplit
    from vitzoo.data.tfds import _threshold_split
    from vitzoo.errors import VitzooError

    builder = SimpleNamespace(name="voc", info=SimpleNamespace(splits={"train": 0, "test": 0}))
    reader = SimpleNamespace(builder=builder, notes=[])
    train = StreamSplit(builder, "train", "image", "labels", 9, 100.0, multi_hot=20)
    with pytest.raises(VitzooError) as caught:
        _threshold_split(reader, train, train, "test", "train", 0.1)
    assert caught.value.message.startswith("voc has no validation split to choose the F1 threshold")
    assert "drop --stream" in caught.value.hint
