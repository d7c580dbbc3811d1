"""``finetune --head-only --task multilabel``: a sigmoid head on frozen features.

Oracles: the closed-form ridge and AP of ``test_multilabel_probe``/``test_multilabel_metrics``,
the textbook binary cross-entropy (to find the temperature by brute force over the same grid)
and counted F1 (to find the threshold); end to end, the NumPy forward of the exported
``final.npz`` (:func:`tests.support.numpy_models.np_vit`, no vitzoo model code) scored by those
oracles must give the run's recorded mAP and F1, and ``evaluate`` must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.adapt.test_multilabel_metrics import bce_oracle, f1_oracle, macro_f1_oracle
from tests.adapt.test_multilabel_probe import map_oracle, ridge_oracle
from vitzoo.probe.scores import L2_GRID


def test_head_is_the_ridge_probe_scaled_by_the_bce_temperature_with_the_f1_threshold():
    from vitzoo.probe.head import SMOOTHING, TEMPERATURES, fit_multilabel_head

    rng = np.random.default_rng(2)
    y = (rng.uniform(size=(120, 3)) < 0.4).astype(np.int32)
    x = rng.normal(size=(120, 10)) + 1.2 * np.c_[y, np.zeros((120, 7))]
    (fx, fy), (hx, hy) = (x[:90], y[:90]), (x[90:], y[90:])
    head = fit_multilabel_head(fx, fy, hx, hy)
    held_maps = [map_oracle(ridge_oracle(fx, fy, l2)(hx), hy) for l2 in L2_GRID]
    assert held_maps[L2_GRID.index(head["l2"])] == pytest.approx(max(held_maps))
    assert head["validation_map"] == pytest.approx(max(held_maps))
    outputs = ridge_oracle(fx, fy, head["l2"])(hx)
    smoothed = hy * (1 - SMOOTHING) + SMOOTHING / 2
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # inf at the grid's far end
        losses = [bce_oracle(t * outputs, smoothed).mean() for t in TEMPERATURES]
    assert head["temperature"] == TEMPERATURES[int(np.argmin(losses))]
    assert 0.1 < head["temperature"] < 1e5  # inside the grid: a finite, fitted scale
    np.testing.assert_allclose(hx @ head["kernel"] + head["bias"], head["temperature"] * outputs,
                               rtol=1e-6, atol=1e-6)
    probabilities = 1 / (1 + np.exp(-head["temperature"] * outputs))
    f1s = {t: f1_oracle(probabilities, hy, t) for t in np.round(np.arange(1, 20) * 0.05, 2)}
    assert f1s[head["threshold"]] == pytest.approx(max(f1s.values()))


@pytest.mark.slow
def test_head_only_multilabel_run_through_evaluate_and_predict(tmp_path, capsys):
    from tests.adapt.test_multilabel_learns import write_two_region_folder
    from tests.support.adapt_helpers import load_params, tiny_checkpoint
    from tests.support.cli_helpers import run_cli
    from tests.support.numpy_models import np_vit
    from vitzoo.predict import preprocess

    data = write_two_region_folder(tmp_path / "data", train=80, test=40)
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", seed=0)
    work = tmp_path / "head"
    code, _, err = run_cli(capsys, "finetune", str(ckpt), "--dataset", str(data), "--task",
                           "multilabel", "--head-only", "--res", "32", "--workdir", str(work),
                           "--name", "two-region-head")
    assert code == 0, err
    assert "head-only fine-tune finished" in err and "eval mAP" in err
    run = json.loads((work / "run.json").read_text())
    m = run["final_metrics"]
    assert run["head_only"] is True and run["options"]["task"] == "multilabel"
    assert run["class_names"] == ["a", "b"] and "eval_accuracy" not in m
    assert m["eval_map"] >= 0.9 and m["eval_examples"] == 40 and 0 < m["eval_threshold"] < 1
    assert "sigmoid temperature" in run["method"]

    rows = [line.split(",") for line in (data / "labels.csv").read_text().splitlines()[1:]]
    test = sorted((path, labels) for path, labels in rows if path.startswith("test/"))
    pixels = np.stack([preprocess(data / path, 32) for path, _ in test])
    targets = np.array([[n in labels.split(";") for n in ("a", "b")] for _, labels in test],
                       np.int32)
    logits = np_vit(load_params(work / "final.npz"), pixels)
    probabilities = 1 / (1 + np.exp(-logits))
    t = m["eval_threshold"]
    assert m["eval_map"] == pytest.approx(map_oracle(probabilities, targets), abs=1e-6)
    assert m["eval_f1"] == pytest.approx(f1_oracle(probabilities, targets, t), abs=1e-6)
    assert m["eval_macro_f1"] == pytest.approx(macro_f1_oracle(probabilities, targets, t), abs=1e-6)
    assert m["eval_loss"] == pytest.approx(bce_oracle(logits, targets).mean(), rel=1e-4)

    code, out, err = run_cli(capsys, "evaluate", "two-region-head", "--dataset", str(data),
                             "--format", "json")
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["task"] == "multilabel" and evaluated["threshold"] == t
    for name in ("map", "f1", "macro_f1"):
        assert evaluated[name] == pytest.approx(m[f"eval_{name}"], abs=1e-6), name

    code, out, err = run_cli(capsys, "predict", str(work / "final.npz"),
                             str(data / test[0][0]), "--format", "json")
    assert code == 0, err
    listed = json.loads(out)[0]["labels"]
    assert [e["index"] for e in listed] == [k for k in np.argsort(-probabilities[0])
                                            if probabilities[0][k] >= t]
