"""The probe chooses on the dataset's own validation split when it has one beside the split it
reports on (a folder's ``val/`` beside ``test/``, TFDS ``validation`` beside ``test``), and
carves a part of train only when there is none, or when ``--val-fraction`` is given.

Oracles: the image counts are those written here; the choosing side's kNN accuracy is
recomputed here from the cached features of the train and val splits (SciPy's cosine
distances, a plain majority vote); a carve's size is counted per class by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.adapt_helpers import stripes, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli

CLASSES = ["a", "b", "c"]
TRAIN, VAL, TEST = 5, 4, 3  # images per class: distinct split sizes name the cached entries
K = 3


def _draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return stripes(60.0 * label, size, rng)


def _three_splits(root: Path) -> Path:
    """``root/train``, ``root/val`` and ``root/test``, each a folder per class."""
    write_folder(root, _draw, CLASSES, train=TRAIN, test=TEST, size=32, seed=0)
    write_folder(root / "v", _draw, CLASSES, train=VAL, test=1, size=32, seed=1)
    shutil.move(root / "v" / "train", root / "val")
    shutil.rmtree(root / "v")
    return root


def _cached(home: Path, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The cached (features, labels) of the one split with ``rows`` images."""
    (entry,) = [p.parent for p in (home / "features").glob("*/meta.json")
                if json.loads(p.read_text())["num_rows"] == rows]
    chunks = [np.load(c) for c in sorted(entry.glob("chunk-*.npz"))]
    return (np.concatenate([c["features"] for c in chunks])[:rows],
            np.concatenate([c["labels"] for c in chunks])[:rows])


def _knn(train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The majority class of the K nearest training rows by cosine distance (ties: lower class)."""
    from scipy.spatial.distance import cdist

    nearest = np.argsort(cdist(query, train_x, "cosine"), axis=1, kind="stable")[:, :K]
    return np.array([np.bincount(train_y[row], minlength=len(CLASSES)).argmax()
                     for row in nearest])


def _probe(capsys, data: str, ckpt: str, *extra: str) -> dict:
    code, out, err = run_cli(capsys, "probe", "--dataset", data, "--candidates", ckpt,
                             "--shots", "1", "--seeds", "2", "--knn-k", str(K), "--batch", "4",
                             "--format", "json", *extra)
    assert code == 0, err + out[-1500:]
    return json.loads(out)


def test_a_folders_val_split_chooses_and_val_fraction_forces_a_carve(tmp_path, capsys,
                                                                    monkeypatch):
    data = str(_three_splits(tmp_path / "data"))
    ckpt = str(tiny_checkpoint(tmp_path / "tiny.npz", seed=0))
    home = tmp_path / "home"
    monkeypatch.setenv("VITZOO_HOME", str(home))
    report = _probe(capsys, data, ckpt)
    chosen = report["choosing_split"]
    assert (chosen["source"], chosen["name"], chosen["examples"]) == ("dataset", "val", 3 * VAL)
    assert (report["eval_split"], report["eval_examples"]) == ("test", 3 * TEST)
    assert report["train_examples"] == 3 * TRAIN  # nothing carved out of train

    train_x, train_y = _cached(home, 3 * TRAIN)
    val_x, val_y = _cached(home, 3 * VAL)
    np.testing.assert_array_equal(val_y, np.repeat(np.arange(3), VAL))
    expected = float(np.mean(_knn(train_x, train_y, val_x) == val_y))
    (candidate,) = report["candidates"]
    assert candidate["validation"]["knn_accuracy"] == pytest.approx(expected), expected

    carved = _probe(capsys, data, ckpt, "--val-fraction", "0.4")
    split = carved["choosing_split"]
    assert (split["source"], split["name"]) == ("carved", None)
    assert split["examples"] == 3 * round(TRAIN * 0.4)  # 2 of each class's 5
    assert carved["candidates"][0]["knn_accuracy"] == candidate["knn_accuracy"]  # same report

    registry = json.loads((home / "local_runs.json").read_text())
    recorded = [r["probe"]["choosing_split"] for r in registry if r.get("probe")]
    assert recorded and recorded[-1]["source"] == "carved"


def test_a_folder_without_val_carves_and_eval_split_val_reads_val(tmp_path, capsys):
    data = _three_splits(tmp_path / "data")
    ckpt = str(tiny_checkpoint(tmp_path / "tiny.npz", seed=0))
    on_val = _probe(capsys, str(data), ckpt, "--eval-split", "val")
    assert (on_val["eval_split"], on_val["eval_examples"]) == ("val", 3 * VAL)  # not test/
    assert on_val["choosing_split"]["source"] == "carved"  # val/ reports, so it cannot choose
    shutil.rmtree(data / "val")
    plain = _probe(capsys, str(data), ckpt)
    assert plain["choosing_split"]["source"] == "carved"
    assert plain["choosing_split"]["examples"] == 3 * round(TRAIN * 0.2)


def test_tfds_validation_split_chooses(tmp_path, capsys, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    import vitzoo.data.tfds as vtfds
    from tests.support.tfds_mock import pets_examples

    sizes = {"train": 74, "validation": 37, "test": 20}  # pets_examples: label = index % 37
    real = vtfds._builder

    def with_metadata(*args):  # mock_data leaves the split metadata empty: list three splits
        builder = real(*args)
        builder.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name=n, shard_lengths=[c], num_bytes=0) for n, c in sizes.items()]))
        return builder

    monkeypatch.setattr(vtfds, "_builder", with_metadata)
    ckpt = str(tiny_checkpoint(tmp_path / "tiny.npz", seed=0))
    with tfds.testing.mock_data(as_dataset_fn=pets_examples(sizes)):
        report = _probe(capsys, "oxford_iiit_pet", ckpt, "--res", "32")
    chosen = report["choosing_split"]
    assert (chosen["source"], chosen["name"], chosen["examples"]) == ("dataset", "validation", 37)
    assert (report["eval_split"], report["eval_examples"], report["train_examples"]) == ("test", 20, 74)
