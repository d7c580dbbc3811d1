"""Streaming TFDS splits larger than the memory budget (``vitzoo.data.stream``).

``VITZOO_MEMORY_BUDGET`` is set to a few kB so that the mocked oxford_iiit_pet (encoded
PNGs through ``as_dataset_fn``, see ``tests.support.tfds_mock``) does not fit and is streamed.
The mock ignores file shuffling (it has one "file"), so what these tests pin down is the
part vitzoo owns: the seeded shuffle buffer, epoch boundaries, positions, resume by skip,
pipeline cuts, augmentation seeds, and the padded, masked evaluation pass.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.adapt_helpers import run_python, tiny_checkpoint
from tests.support.tfds_mock import finetune_code, pets_examples

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def tiny_budget(monkeypatch):
    monkeypatch.setenv("VITZOO_MEMORY_BUDGET", "3000")


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_too_large_split_is_streamed_automatically_and_says_so(tiny_budget):
    from vitzoo.data import open_dataset
    from vitzoo.data.stream import StreamSplit

    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 10, "test": 7})):
        data = open_dataset("oxford_iiit_pet")
    assert isinstance(data.train, StreamSplit) and isinstance(data.eval, StreamSplit)
    assert (len(data.train), len(data.eval)) == (10, 7) and data.train.counted
    assert 1000 < data.train.avg_bytes < 3000  # measured on the partial read
    note = next(n for n in data.notes if n.startswith("streaming train"))
    assert "does not fit" in note and "VITZOO_MEMORY_BUDGET" in note
    assert data.describe()["streaming"] == {"train": True, "eval": True}


def test_budget_env_and_explicit_stream(monkeypatch):
    from vitzoo.data import Examples, open_dataset
    from vitzoo.data.memory import memory_budget
    from vitzoo.data.stream import StreamSplit
    from vitzoo.errors import VitzooError

    monkeypatch.setenv("VITZOO_MEMORY_BUDGET", "100000000")
    assert memory_budget() == 100_000_000 and memory_budget(0.125) == 50_000_000
    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 10, "test": 7})):
        fits = open_dataset("oxford_iiit_pet")
        forced = open_dataset("oxford_iiit_pet", stream=True)
        monkeypatch.setenv("VITZOO_MEMORY_BUDGET", "3000")
        with pytest.raises(VitzooError, match="this run reads it in memory"):
            open_dataset("oxford_iiit_pet", stream=False)
    assert isinstance(fits.train, Examples) and not any("stream" in n for n in fits.notes)
    assert isinstance(forced.train, StreamSplit) and "as asked" in forced.notes[0]
    monkeypatch.setenv("VITZOO_MEMORY_BUDGET", "lots")
    with pytest.raises(VitzooError, match="not a number of bytes"):
        memory_budget()


def test_stream_batches_are_a_function_of_seed_and_position(tiny_budget, monkeypatch):
    """Batches from step 3 equal steps 3.. of an uninterrupted stream, across epochs and cuts."""
    from vitzoo.data import open_dataset, train_recipe
    from vitzoo.data import stream as vstream
    from vitzoo.data.tfdata import Layout

    layout = Layout(4, local_devices=2)
    recipe = train_recipe(16)
    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 10, "test": 3})):
        source = open_dataset("oxford_iiit_pet").train

        def run(start_step, count, seed=3):
            it = vstream.stream_train_batches(source, recipe, layout, seed=seed,
                                              shuffle_buffer=5, start_step=start_step)
            return _take(it, count)

        whole = run(0, 8)  # 32 positions: epochs 0, 1, 2 and part of 3
        resumed = run(3, 5)
        other_seed = run(0, 3, seed=4)
        monkeypatch.setattr(vstream, "EPOCHS_PER_PIPELINE", 1)  # a cut after every epoch
        cut = run(1, 7)
    assert whole[0]["image"].shape == (2, 2, 16, 16, 3) and whole[0]["label"].shape == (2, 2)
    for got, want in zip(resumed, whole[3:], strict=True):
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    for got, want in zip(cut, whole[1:], strict=True):
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    labels = np.concatenate([b["label"].ravel() for b in whole])
    epochs = [labels[i * 10:(i + 1) * 10] for i in range(3)]
    for epoch in epochs:  # each epoch is a permutation of the split (labels are 0..9)
        assert sorted(epoch.tolist()) == list(range(10))
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled per epoch
    assert epochs[0].tolist() != list(range(10))  # and shuffled at all
    other = np.concatenate([b["label"].ravel() for b in other_seed])
    assert other.tolist() != labels[:12].tolist()
    # the same example seen in two epochs gets a different augmentation
    first = np.concatenate([b["image"].reshape(-1, 16, 16, 3) for b in whole])
    a, b = int(np.flatnonzero(labels[:10] == 0)[0]), 10 + int(np.flatnonzero(epochs[1] == 0)[0])
    assert not np.array_equal(first[a], first[b])


def test_shuffle_buffer_follows_the_budget(monkeypatch):
    from vitzoo.data.stream import StreamSplit, shuffle_buffer_size

    source = StreamSplit(None, "train", "image", "label", num_examples=1_000_000,
                         avg_bytes=100_000.0)
    assert shuffle_buffer_size(source, budget=10**9) == 5000
    assert shuffle_buffer_size(source, budget=10**15) == 1_000_000
    assert shuffle_buffer_size(source, budget=10) == 1


def test_stream_eval_covers_every_example_once_with_padding_masked(tiny_budget):
    from vitzoo.data import eval_recipe, open_dataset
    from vitzoo.data.tfdata import Layout

    with tfds.testing.mock_data(as_dataset_fn=pets_examples({"train": 4, "test": 7})):
        source = open_dataset("oxford_iiit_pet").eval
        batches = source.eval_batches(eval_recipe(16), Layout(4, local_devices=2))
        first, second = list(batches), list(batches)
    assert (len(batches), batches.num_examples) == (2, 7)
    mask = np.concatenate([b["mask"].ravel() for b in first])
    labels = np.concatenate([b["label"].ravel() for b in first])
    images = np.concatenate([b["image"].reshape(-1, 16, 16, 3) for b in first])
    assert mask.tolist() == [True] * 7 + [False]
    assert labels[mask].tolist() == list(range(7))  # file order, each example once
    assert np.all(images[~mask] == 0) and images.min() >= -1 and images.max() <= 1
    for a, b in zip(first, second, strict=True):  # re-iterable, same examples
        # (labels and mask only: the mock's generator draws new pixels on each pass)
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["mask"], b["mask"])


@pytest.mark.slow
def test_finetune_streams_a_tfds_dataset_end_to_end(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    work = tmp_path / "pets"
    code = finetune_code(str(ckpt), str(work), {"train": 12, "test": 5},
                         "--steps", "4", "--warmup", "1", "--batch", "8", "--res", "32",
                         "--eval-every", "2", "--log-every", "2")
    proc = run_python(code, devices=2, env={"VITZOO_MEMORY_BUDGET": "4000"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does not fit" in " ".join(proc.stderr.split())
    assert (work / "final.npz").is_file()
    run = json.loads((work / "run.json").read_text())
    assert run["dataset"]["streaming"] == {"train": True, "eval": True}
    assert run["final_metrics"]["eval_examples"] == 5
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert records[-1]["eval_examples"] == 5 and np.isfinite(records[-1]["train_loss"])
    log = (work / "run.log").read_text()
    assert "streaming train" in log and "shuffle buffer of" in log
    from vitzoo.adapt.train_state import read_meta

    assert read_meta(work)["data"]["train_streaming"] is True
