"""A multi-label run's head through ``evaluate``, ``predict`` and ``export``.

The run is a tiny random 2-class ViT beside a ``run.json`` that records ``task:
multilabel`` and a threshold of 0.35 (not the default 0.5, so a command that ignores the
recorded threshold gives other numbers). Oracles: the NumPy forward of the release arrays
(:func:`tests.support.numpy_models.np_vit`, no vitzoo model code), sigmoid, and the
AP/F1/BCE oracles of ``test_multilabel_metrics``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.adapt.test_multilabel_learns import write_two_region_folder
from tests.adapt.test_multilabel_metrics import ap_oracle, bce_oracle, f1_oracle, macro_f1_oracle
from tests.support.adapt_helpers import cli, load_params, tiny_checkpoint
from tests.support.numpy_models import np_vit

THRESHOLD = 0.35


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    data = write_two_region_folder(root / "data", train=6, test=12, seed=4)
    folder = root / "run"
    folder.mkdir()
    npz = tiny_checkpoint(folder / "final.npz", num_classes=2, seed=5)
    (folder / "run.json").write_text(json.dumps({
        "class_names": ["a", "b"], "options": {"task": "multilabel"},
        "final_metrics": {"eval_threshold": THRESHOLD}}))
    rows = [line.split(",") for line in (data / "labels.csv").read_text().splitlines()[1:]]
    test = [(data / path, [name in labels.split(";") for name in ("a", "b")])
            for path, labels in rows if path.startswith("test/")]
    from vitzoo.predict import preprocess

    pixels = np.stack([preprocess(path, 32) for path, _ in test])
    logits = np_vit(load_params(npz), pixels)
    targets = np.array([t for _, t in test], np.int32)
    return {"data": data, "folder": folder, "npz": npz, "images": [p for p, _ in test],
            "logits": logits, "targets": targets}


def test_evaluate_scores_map_and_f1_at_the_recorded_threshold(run):
    proc = cli(["evaluate", str(run["npz"]), "--dataset", str(run["data"]), "--format", "json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    logits, targets = run["logits"], run["targets"]
    probabilities = 1 / (1 + np.exp(-logits))
    assert report["task"] == "multilabel" and report["split"] == "test"
    assert report["examples"] == 12 and report["top1"] is None
    assert report["threshold"] == THRESHOLD
    assert report["map"] == pytest.approx(
        np.mean([ap_oracle(probabilities[:, k], targets[:, k]) for k in range(2)]), abs=1e-6)
    assert report["f1"] == pytest.approx(f1_oracle(probabilities, targets, THRESHOLD), abs=1e-6)
    assert report["macro_f1"] == pytest.approx(
        macro_f1_oracle(probabilities, targets, THRESHOLD), abs=1e-6)
    # the fixture tells the recorded threshold from the default
    assert f1_oracle(probabilities, targets, THRESHOLD) != f1_oracle(probabilities, targets, 0.5)
    assert report["loss"] == pytest.approx(bce_oracle(logits, targets).mean(), rel=1e-4)


def test_predict_lists_every_class_above_the_threshold(run):
    proc = cli(["predict", str(run["npz"]), *map(str, run["images"]), "--format", "json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    probabilities = 1 / (1 + np.exp(-run["logits"]))
    counts = set()
    for result, row in zip(results, probabilities, strict=True):
        expected = [k for k in np.argsort(-row) if row[k] >= THRESHOLD]
        assert [e["index"] for e in result["labels"]] == [int(k) for k in expected]
        assert [e["probability"] for e in result["labels"]] == pytest.approx(
            [row[k] for k in expected], abs=1e-5)
        assert [e["label"] for e in result["labels"]] == [["a", "b"][k] for k in expected]
        assert result["threshold"] == THRESHOLD
        counts.add(len(expected))
    assert len(counts) > 1 or counts != {0}, "the fixture should exercise some classes"


def test_export_says_multi_label(run, tmp_path):
    from vitzoo.weights.export import export_checkpoint, open_source
    from vitzoo.weights.task import head_task

    source = open_source(run["folder"])
    export_checkpoint(source, "transformers", tmp_path / "hf")
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf["problem_type"] == "multi_label_classification"
    assert hf["id2label"] == {"0": "a", "1": "b"}
    export_checkpoint(source, "timm", tmp_path / "timm")
    timm = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert timm["vitzoo"]["task"]["task"] == "multilabel"
    assert timm["vitzoo"]["task"]["threshold"] == THRESHOLD
    export_checkpoint(source, "npz", tmp_path / "npz")
    again = head_task(tmp_path / "npz" / "model.npz")
    assert (again.task, again.threshold) == ("multilabel", THRESHOLD)
