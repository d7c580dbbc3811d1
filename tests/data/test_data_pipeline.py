"""The tf.data pipelines: order is a function of (seed, step), shards partition batches,
eval covers the split exactly once, preprocessing recipes are data."""

from __future__ import annotations

import numpy as np

from tests.support.adapt_helpers import color_image, write_folder
from vitzoo.data import open_dataset
from vitzoo.data.pipeline import train_batches
from vitzoo.data.preprocess import Preprocess, eval_recipe, train_recipe
from vitzoo.data.tfdata import Layout


def _data(tmp_path, n=5):
    root = write_folder(tmp_path / "d", color_image, ["r", "g", "b"], train=n, test=2, size=20)
    return open_dataset(str(root))


def test_recipes_follow_the_reference_protocol():
    assert train_recipe(384) == Preprocess(resize=448, crop=384, flip=True)
    assert eval_recipe(384) == Preprocess(resize=384)
    assert Preprocess.from_dict(train_recipe(224).as_dict()) == train_recipe(224)


def test_resume_at_step_reproduces_the_same_batches(tmp_path):
    data = _data(tmp_path)
    layout = Layout(global_batch=4, local_devices=2)
    it = train_batches(data.train, train_recipe(16), layout, seed=3)
    batches = [next(it) for _ in range(9)]  # crosses epoch boundaries (15 examples)
    resumed = train_batches(data.train, train_recipe(16), layout, seed=3, start_step=6)
    for want in batches[6:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    assert batches[0]["image"].shape == (2, 2, 16, 16, 3)
    other = next(train_batches(data.train, train_recipe(16), layout, seed=4))
    assert not np.array_equal(other["image"], batches[0]["image"])


def test_every_example_once_per_epoch(tmp_path):
    data = _data(tmp_path, n=4)  # 12 examples, batch 4 -> 3 steps per epoch
    layout = Layout(global_batch=4)
    it = train_batches(data.train, eval_recipe(8), layout, seed=0)
    labels = np.concatenate([next(it)["label"].ravel() for _ in range(3)])
    assert sorted(labels.tolist()) == sorted(data.train.labels.tolist())


def test_process_shards_partition_each_global_batch(tmp_path):
    data = _data(tmp_path)
    whole = train_batches(data.train, train_recipe(16), Layout(8, local_devices=2), seed=1)
    shards = [train_batches(data.train, train_recipe(16),
                            Layout(8, process_count=2, process_index=p, local_devices=1), seed=1)
              for p in range(2)]
    for _ in range(3):
        want = next(whole)
        got = np.concatenate([next(s)["image"] for s in shards], axis=0)
        np.testing.assert_array_equal(got.reshape(want["image"].shape), want["image"])


def test_eval_covers_the_split_exactly_once_with_padding(tmp_path):
    data = _data(tmp_path)
    assert len(data.eval) == 6
    batches = list(data.eval.eval_batches(eval_recipe(8), Layout(global_batch=4, local_devices=2)))
    assert len(batches) == 2
    mask = np.concatenate([b["mask"].ravel() for b in batches])
    labels = np.concatenate([b["label"].ravel() for b in batches])
    assert mask.sum() == 6 and mask.tolist() == [True] * 6 + [False] * 2
    assert sorted(labels[mask].tolist()) == sorted(data.eval.labels.tolist())
    again = list(data.eval.eval_batches(eval_recipe(8), Layout(global_batch=4, local_devices=2)))
    np.testing.assert_array_equal(again[0]["image"], batches[0]["image"])
