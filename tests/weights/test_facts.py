"""One precedence for class names, the same in predict, evaluate and export (the oracle is the
order written down here: class_names.json, then run.json, then ImageNet names, then indices)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.adapt_helpers import color_image, tiny_checkpoint, write_folder

OWN = ["x", "y", "z"]  # class_names.json
RUN = ["p", "q", "r"]  # run.json


def _run_folder(root: Path, *, names_file: bool, run_file: bool) -> Path:
    ckpt = tiny_checkpoint(root / "final.npz", num_classes=3)
    if run_file:
        (root / "run.json").write_text(json.dumps({"dataset": "d", "class_names": RUN}))
    if names_file:
        (root / "class_names.json").write_text(json.dumps({"class_names": OWN}))
    return ckpt


def _predict_names(ckpt: Path) -> list[str] | None:
    from vitzoo.predict import Predictor

    return Predictor(ckpt).labels.names


def _export_names(ckpt: Path, out: Path) -> tuple[list[str] | None, list[str] | None]:
    from vitzoo.weights.export import export_checkpoint, open_source

    cfg = json.loads(export_checkpoint(open_source(ckpt.parent), "timm", out / "timm")[-1]
                     .read_text())
    npz = export_checkpoint(open_source(ckpt.parent), "npz", out / "npz")
    names = json.loads(npz[1].read_text())["class_names"] if len(npz) > 1 else None
    return cfg.get("label_names"), names


@pytest.mark.parametrize(("names_file", "run_file", "expected"), [
    (True, True, OWN), (False, True, RUN), (True, False, OWN), (False, False, None)])
def test_predict_and_export_read_the_same_names(tmp_path, names_file, run_file, expected):
    ckpt = _run_folder(tmp_path / "run", names_file=names_file, run_file=run_file)
    assert _predict_names(ckpt) == expected
    assert _export_names(ckpt, tmp_path / "out") == (expected, expected)


@pytest.mark.slow
def test_evaluate_reads_the_same_names(tmp_path):
    """evaluate notes a checkpoint whose names (by the one precedence) are not the dataset's."""
    from vitzoo.adapt.evaluate import evaluate

    ckpt = _run_folder(tmp_path / "run", names_file=True, run_file=True)
    same = write_folder(tmp_path / "xyz", color_image, OWN, train=2, test=2, size=32)
    other = write_folder(tmp_path / "pqr", color_image, RUN, train=2, test=2, size=32)
    assert not [n for n in evaluate(str(ckpt), str(same), batch=4).notes if "differ" in n]
    (note,) = [n for n in evaluate(str(ckpt), str(other), batch=4).notes if "differ" in n]
    assert "class_names.json" in note and "output 0 is 'x' there, 'p' here" in note


def test_names_that_do_not_fit_the_head_fail_everywhere(tmp_path):
    from vitzoo.errors import VitzooError
    from vitzoo.weights.export import export_checkpoint, open_source

    ckpt = _run_folder(tmp_path / "run", names_file=False, run_file=False)
    (ckpt.parent / "class_names.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(VitzooError, match="2 class names but the checkpoint has 3 outputs"):
        _predict_names(ckpt)
    with pytest.raises(VitzooError, match="2 class names but the checkpoint has 3 outputs"):
        export_checkpoint(open_source(ckpt), "timm", tmp_path / "o")


def test_imagenet_heads_get_wordnet_names_and_ids(tmp_path):
    from vitzoo.weights.facts import find_labels

    labels = find_labels(tmp_path / "x.npz", 1000)
    assert labels.imagenet and labels.ids[285] == "n02124075"
    assert labels.names[285] == "Egyptian cat (n02124075)" and labels(285) == labels.names[285]
    assert find_labels(tmp_path / "x.npz", 7).names is None and find_labels(None, 7)(3) == "3"
