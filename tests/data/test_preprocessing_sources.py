"""A checkpoint in timm's layout given as a local folder: converted once into the cache, and
its preprocessing travels with the conversion (the config.json is not beside the npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.ckpt_factory import write_tiny_vit
from vitzoo.data.preprocess import VIT_JAX, Preprocessing
from vitzoo.errors import VitzooError

CLIP = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center"}


@pytest.fixture
def timm_folder(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A tiny ViT exported to timm's layout, its config.json given another pretrained_cfg
    (as a timm checkpoint of another family would have), and the source npz."""
    from vitzoo.weights.export import export_checkpoint, open_source

    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "home"))
    src = write_tiny_vit(tmp_path / "src" / "tiny.npz", num_classes=3)
    folder = tmp_path / "my timm model"
    export_checkpoint(open_source(src), "timm", folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("vitzoo")  # as timm itself writes it
    config["pretrained_cfg"].update(CLIP)
    (folder / "config.json").write_text(json.dumps(config))
    return folder, src


def test_a_timm_folder_resolves_to_its_weights_with_its_preprocessing(timm_folder):
    from vitzoo.backbone import load
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.weights.release import load_npz

    folder, src = timm_folder
    converted = resolve_checkpoint(str(folder))
    assert converted.suffix == ".npz"
    want = load_npz(src)
    got = load_npz(converted)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    again = resolve_checkpoint(str(folder))  # converted once, then reused
    assert again == converted and again.stat().st_mtime_ns == converted.stat().st_mtime_ns
    backbone = load(folder)
    rule = backbone.preprocessing
    assert (list(rule.mean), list(rule.std), rule.crop_pct, rule.interpolation, rule.antialias) == (
        CLIP["mean"], CLIP["std"], 0.9, "bicubic", True)
    assert rule.origin.startswith(f"timm pretrained_cfg of {folder / 'config.json'}")
    assert rule.origin.endswith(".npz.json")  # recorded in the conversion's sidecar
    assert backbone.eval_recipe().resize == int(backbone.resolution / 0.9)
    # an edited folder is converted again, and the new rule is the one used
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["crop_pct"] = 1.0
    (folder / "config.json").write_text(json.dumps(config))
    assert load(folder).preprocessing.crop_pct == 1.0


def test_vitzoos_own_timm_export_keeps_the_vit_jax_rule(tmp_path, monkeypatch):
    from vitzoo.backbone import load
    from vitzoo.weights.export import export_checkpoint, open_source

    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "home"))
    src = write_tiny_vit(tmp_path / "tiny.npz", num_classes=3)
    export_checkpoint(open_source(src), "timm", tmp_path / "out")
    assert load(tmp_path / "out").preprocessing == VIT_JAX


def test_folders_that_are_not_timm_checkpoints_say_so(tmp_path, timm_folder):
    from vitzoo.download.resolve import resolve_checkpoint

    (tmp_path / "empty").mkdir()
    with pytest.raises(VitzooError, match=r"is a folder, not a checkpoint"):
        resolve_checkpoint(str(tmp_path / "empty"))
    folder, _ = timm_folder
    (folder / "config.json").write_text(json.dumps({"pretrained_cfg": {"crop_mode": "border"}}))
    with pytest.raises(VitzooError, match="crop_mode 'border' is not supported"):
        resolve_checkpoint(str(folder))
    assert Preprocessing.from_dict(VIT_JAX.as_dict()) == VIT_JAX
