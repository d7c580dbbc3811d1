"""``finetune --task multilabel`` learns labels decided by two independent image regions.

The folder: gray noise; a red top half means class ``a``, a blue bottom half class ``b``,
each present with probability 1/2 independently of the other (top/bottom, because the
training recipe flips left-right). A labels CSV describes train/ and test/. The same
fine-tune with the training rows' label sets shuffled among themselves (test truth kept)
can only learn the base rate, so its mAP stays near the positive rate while the real run's
is near 1. The run records the task and the threshold chosen on validation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.adapt_helpers import cli, tiny_checkpoint

pytestmark = pytest.mark.slow


def write_two_region_folder(root: Path, *, train: int = 64, test: int = 32, seed: int = 0,
                            shuffle_train: bool = False) -> Path:
    """``root/train|test/*.png`` and ``root/labels.csv`` (see the module docstring)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for split, count in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        sets = []
        for i in range(count):
            a, b = rng.uniform() < 0.5, rng.uniform() < 0.5
            image = rng.integers(60, 140, (32, 32, 3)).astype(np.int32)
            image[:16, :, 0] += 110 * a
            image[16:, :, 2] += 110 * b
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / split / f"{i}.png")
            sets.append(";".join(name for name, on in (("a", a), ("b", b)) if on))
        if shuffle_train and split == "train":
            sets = [sets[j] for j in np.random.default_rng(seed + 1).permutation(count)]
        rows += [f"{split}/{i}.png,{labels}" for i, labels in enumerate(sets)]
    (root / "labels.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
    return root


def finetune(data: Path, ckpt: Path, work: Path) -> dict:
    run = cli(["finetune", str(ckpt), "--dataset", str(data), "--task", "multilabel",
               "--workdir", str(work), "--steps", "30", "--warmup", "3", "--lr", "0.03",
               "--batch", "16", "--res", "32", "--eval-every", "0", "--no-progress",
               "--no-register"])
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((work / "run.json").read_text())


def test_multilabel_finetune_beats_shuffled_labels(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10, seed=3)
    real = finetune(write_two_region_folder(tmp_path / "real"), ckpt, tmp_path / "run-real")
    shuffled = finetune(write_two_region_folder(tmp_path / "shuffled", shuffle_train=True), ckpt,
                        tmp_path / "run-shuffled")
    m_real, m_shuffled = real["final_metrics"], shuffled["final_metrics"]
    assert m_real["eval_map"] >= 0.9, m_real
    assert m_real["eval_map"] >= m_shuffled["eval_map"] + 0.2, (m_real, m_shuffled)
    assert m_real["eval_f1"] >= 0.8, m_real
    assert real["options"]["task"] == real["dataset"]["task"] == "multilabel"
    assert real["class_names"] == ["a", "b"]
    assert 0.0 < m_real["eval_threshold"] < 1.0
    assert m_real["eval_examples"] == 32 and "eval_accuracy" not in m_real
    assert any("validation" in note for note in real["dataset"]["notes"])
