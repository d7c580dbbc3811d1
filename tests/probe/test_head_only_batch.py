"""``finetune --head-only --batch N`` extracts N images at a time, as asked (it used to cap N at
64 without a word); without ``--batch`` it extracts 64 at a time (not finetune's training
batch of 512) and run.json says where the number came from."""

from __future__ import annotations

import json

import numpy as np

from tests.support.adapt_helpers import stripes, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli


def _draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return stripes(60.0 * label, size, rng)


def test_head_only_honours_batch_and_records_where_it_came_from(tmp_path, capsys):
    import jax

    devices = jax.local_device_count()
    data = write_folder(tmp_path / "data", _draw, ["a", "b"], train=4, test=2, size=32)
    ckpt = str(tiny_checkpoint(tmp_path / "tiny.npz", num_classes=2, seed=0))
    asked = 96 * devices  # above the old cap of 64, a multiple of the device count
    runs = {"given": ["--batch", str(asked)], "default": []}
    for name, extra in runs.items():
        code, _, err = run_cli(capsys, "finetune", ckpt, "--dataset", str(data), "--head-only",
                               "--res", "32", "--workdir", str(tmp_path / name), "--no-register",
                               *extra)
        assert code == 0, err
    given = json.loads((tmp_path / "given" / "run.json").read_text())
    default = json.loads((tmp_path / "default" / "run.json").read_text())
    assert given["feature_extraction"]["batch"] == given["options"]["batch"] == asked
    assert given["feature_extraction"]["batch_from"] == "--batch"
    expected_default = max(devices, 64 - 64 % devices)
    assert default["feature_extraction"]["batch"] == expected_default
    assert default["options"]["batch"] == 64
    assert "--batch not given" in default["feature_extraction"]["batch_from"]
    assert "512" in default["feature_extraction"]["batch_from"]
