"""The multi-label linear probe against a closed-form ridge oracle written here.

Oracle: standardise with the fit set's mean/std (+1e-5), append a constant column of 100,
solve ``(X^T X + l2 I) W = X^T Y`` with ``Y`` in {-1, 1}, score by AP per class (the oracle
of ``test_multilabel_metrics``). The probe must give the oracle's outputs for any l2,
choose the l2 with the best held-out mAP, and report the oracle's mAP for it; informative
features must score far above the same features with shuffled labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.adapt.test_multilabel_metrics import ap_oracle
from vitzoo.data.source import carve
from vitzoo.probe.multilabel import fit, linear_probe_map, scores
from vitzoo.probe.scores import HOLDOUT_FRACTION, L2_GRID


def ridge_oracle(x, y, l2):
    mean, std = x.mean(0), x.std(0) + 1e-5
    design = np.c_[(x - mean) / std, np.full(len(x), 100.0)]
    w = np.linalg.solve(design.T @ design + l2 * np.eye(design.shape[1]), design.T @ (2.0 * y - 1))
    return lambda z: np.c_[(z - mean) / std, np.full(len(z), 100.0)] @ w


def map_oracle(s, y):
    aps = [ap_oracle(s[:, k], y[:, k]) for k in range(y.shape[1])]
    return float(np.mean([a for a in aps if a is not None]))


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=(90, 4)) < 0.4).astype(np.int32)
    x = rng.normal(size=(90, 12)) + 2.5 * np.c_[y, y, np.zeros((90, 4))]
    return x[:60], y[:60], x[60:], y[60:]


def test_probe_outputs_equal_the_closed_form(features):
    tx, ty, ex, _ = features
    path = fit(tx, ty)
    for l2 in (0.01, 1.0, 300.0):
        np.testing.assert_allclose(scores(path, ex, l2), ridge_oracle(tx, ty, l2)(ex),
                                   rtol=1e-6, atol=1e-8)


def test_probe_chooses_on_held_out_training_images_and_reports_map(features):
    tx, ty, ex, ey = features
    result = linear_probe_map(tx, ty, ex, ey)
    keep, held = carve(len(ty), HOLDOUT_FRACTION)
    held_maps = [map_oracle(ridge_oracle(tx[keep], ty[keep], l2)(tx[held]), ty[held])
                 for l2 in L2_GRID]
    assert held_maps[L2_GRID.index(result["l2"])] == pytest.approx(max(held_maps))
    assert result["map"] == pytest.approx(map_oracle(ridge_oracle(tx, ty, result["l2"])(ex), ey))
    shuffled = linear_probe_map(tx, ty[np.random.default_rng(1).permutation(len(ty))], ex, ey)
    assert result["map"] >= 0.9 and result["map"] >= shuffled["map"] + 0.25, (result, shuffled)


def knn_oracle(tx, ty, ex, k):
    """Share of the k most cosine-similar training rows carrying each class (a full sort)."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argsort(-(unit(ex) @ unit(tx).T), axis=1, kind="stable")[:, :k]
    return ty[nearest].mean(axis=1)


def bootstrap_oracle(s, y, resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        if y[rows].sum() > 0:
            values.append(map_oracle(s[rows], y[rows]))
    return np.quantile(values, [0.025, 0.975])


def test_both_sides_equal_the_oracles_and_choose_on_training_images_only(features):
    from vitzoo.probe import multilabel
    from vitzoo.probe.scores import VALIDATION_FRACTION, VALIDATION_SEED

    tx, ty, ex, ey = features
    out = multilabel.score_all((tx, ty), (ex, ey), knn_k=5)
    report, choose = out["report"], out["choose"]
    assert out["task"] == "multilabel" and report["fewshot"] == {} == choose["fewshot"]
    assert any("few-shot scores do not apply" in n for n in out["notes"])
    linear = ridge_oracle(tx, ty, report["linear"]["l2"])(ex)
    assert report["linear"]["map"] == pytest.approx(map_oracle(linear, ey), abs=1e-12)
    knn = knn_oracle(tx, ty, ex, 5)
    assert report["knn"]["map"] == pytest.approx(map_oracle(knn, ey), abs=1e-12)
    assert report["metrics"] == {"examples": 30, "linear_map": report["linear"]["map"],
                                 "knn_map": report["knn"]["map"]}
    for name, s in (("linear", linear), ("knn", knn)):
        assert report[name]["interval"] == pytest.approx(bootstrap_oracle(s, ey), abs=1e-9)
        low, high = report[name]["interval"]
        assert low <= report[name]["map"] <= high
    # the choosing side: fitted without its validation part, scored on it, per image kept
    fit_rows, val = carve(len(ty), VALIDATION_FRACTION, seed=VALIDATION_SEED)
    assert choose["examples"] == len(val) == 12
    held = ridge_oracle(tx[fit_rows], ty[fit_rows], choose["linear"]["l2"])(tx[val])
    assert choose["linear"]["map"] == pytest.approx(map_oracle(held, ty[val]), abs=1e-12)
    np.testing.assert_allclose(multilabel.unpack_matrix(choose["linear"]["per_image"]["scores"]),
                               held, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(multilabel.unpack_matrix(choose["per_image"]["targets"]), ty[val])
    assert choose["smallest_class"] == int(ty[val].sum(0).min())
    # nothing chooses on the evaluation labels: poisoning them moves no choice
    poisoned = multilabel.score_all((tx, ty), (ex, 1 - ey), knn_k=5)
    assert poisoned["report"]["linear"]["l2"] == report["linear"]["l2"]
    assert poisoned["choose"]["linear"]["map"] == choose["linear"]["map"]


def test_paired_bootstrap_tells_a_better_candidate_from_a_worse_one(features):
    from vitzoo.probe import multilabel

    tx, ty, ex, ey = features
    good = multilabel.score_all((tx, ty), (ex, ey))["choose"]
    noise = np.random.default_rng(5).normal(size=tx.shape)
    bad = multilabel.score_all((noise, ty), (ex, ey))["choose"]
    apart = multilabel.paired_map_test(good["linear"], bad["linear"], good["per_image"]["targets"])
    same = multilabel.paired_map_test(good["linear"], good["linear"], good["per_image"]["targets"])
    assert apart["p_value"] < 0.05 and apart["resamples"] == 1000
    assert same["p_value"] == 1.0


@pytest.fixture(scope="module")
def two_region(tmp_path_factory):
    """The two-region folders (real and shuffled training label sets) and two tiny ViTs."""
    from tests.adapt.test_multilabel_learns import write_two_region_folder
    from tests.support.adapt_helpers import tiny_checkpoint

    root = tmp_path_factory.mktemp("probe-multilabel")
    return {"real": write_two_region_folder(root / "real", train=80, test=40),
            "shuffled": write_two_region_folder(root / "shuffled", train=80, test=40,
                                                shuffle_train=True),
            "ckpts": [str(tiny_checkpoint(root / f"tiny{i}.npz", seed=i)) for i in (0, 1)]}


def _features_and_targets(data, ckpt, split):
    """Oracle inputs: the NumPy forward's pre-logits and the labels CSV's label sets."""
    from tests.support.adapt_helpers import load_params
    from tests.support.numpy_models import np_vit_outputs
    from vitzoo.predict import preprocess

    rows = [line.split(",") for line in (data / "labels.csv").read_text().splitlines()[1:]]
    rows = sorted((path, labels) for path, labels in rows if path.startswith(f"{split}/"))
    pixels = np.stack([preprocess(data / path, 32) for path, _ in rows])
    targets = np.array([[name in labels.split(";") for name in ("a", "b")] for _, labels in rows],
                       np.int32)
    return np_vit_outputs(load_params(ckpt), pixels)[0], targets, [path for path, _ in rows]


@pytest.mark.slow
def test_probe_cli_scores_multilabel_by_map_far_above_shuffled_labels(two_region, capsys):
    from tests.support.cli_helpers import run_cli

    def probe(name, *extra):
        code, out, err = run_cli(capsys, "probe", "--dataset", str(two_region[name]), "--task",
                                 "multilabel", "--candidates", ",".join(two_region["ckpts"]),
                                 "--batch", "16", "--format", "json", *extra)
        assert code == 0, err
        return json.loads(out)

    real, shuffled = probe("real"), probe("shuffled")
    assert real["task"] == "multilabel" and real["sort"] == "linear_map"
    assert (real["eval_split"], real["eval_examples"], real["num_classes"]) == ("test", 40, 2)
    by_name = {c["checkpoint"]: c for c in real["candidates"]}
    for ckpt in two_region["ckpts"]:
        c, other = by_name[ckpt], next(s for s in shuffled["candidates"] if s["checkpoint"] == ckpt)
        assert c["linear_map"] >= 0.9 and c["linear_map"] >= other["linear_map"] + 0.25, (c, other)
        assert "linear_accuracy" not in c and c["fewshot"] == {}
        assert set(c["validation"]) == {"linear_map", "knn_map"}
        low, high = c["intervals"]["linear_map"]
        assert low <= c["linear_map"] <= high
        # the reported mAP is the oracle's: NumPy features, closed-form ridge, AP by definition
        tx, ty, _ = _features_and_targets(two_region["real"], ckpt, "train")
        ex, ey, _ = _features_and_targets(two_region["real"], ckpt, "test")
        l2 = c["scores"]["report"]["linear"]["l2"]
        assert c["linear_map"] == pytest.approx(map_oracle(ridge_oracle(tx, ty, l2)(ex), ey),
                                                abs=1e-3)
        assert c["knn_map"] == pytest.approx(map_oracle(knn_oracle(tx, ty, ex, 10), ey), abs=1e-3)
    assert any("few-shot scores do not apply" in n for n in real["notes"])
    from vitzoo.catalog.local import read_runs

    registered = {r["probe"]["candidate"]: r for r in read_runs()
                  if r["row_source"] == "probe" and r["adapt_ds"] == real["dataset"]}
    for ckpt in two_region["ckpts"]:
        row = registered[ckpt]
        assert row["probe"]["linear_map"] == by_name[ckpt]["linear_map"]
        assert "linear_accuracy" not in row["probe"] and "linear mAP" in row["note"]
    ranked = [c["validation"]["linear_map"] for c in real["candidates"]]
    assert ranked == sorted(ranked, reverse=True)  # ranked on the validation part

    code, out, err = run_cli(capsys, "probe", "--dataset", str(two_region["real"]), "--task",
                             "multilabel", "--candidates", two_region["ckpts"][0], "--format",
                             "csv", "--sort", "knn")
    assert code == 0 and "extracting" not in err, err  # features and scores from the cache
    assert out.splitlines()[0].startswith("checkpoint,name,architecture,img_per_sec,"
                                          "img_per_sec_min,img_per_sec_max,linear_map,"
                                          "linear_map_low,linear_map_high,knn_map,")


@pytest.mark.slow
def test_recommend_by_data_on_multilabel_chooses_on_validation(two_region, capsys):
    from tests.support.cli_helpers import run_cli

    code, out, err = run_cli(capsys, "recommend", "--dataset", str(two_region["real"]), "--task",
                             "multilabel", "--candidates", ",".join(two_region["ckpts"]),
                             "--format", "json")
    assert code == 0, err
    choice = json.loads(out)
    assert choice["by"] == "linear_map" and choice["choosing_split"] == "validation"
    assert choice["value"] == max(r["validation"] for r in choice["ranking"])
    # 80 training images less the 8 the folder holds out as its validation split: 20 % of 72
    assert choice["test"].startswith("paired bootstrap of the mAP difference over the same 14 "
                                     "validation images")
    assert 0.0 < choice["p_value"] <= 1.0 and isinstance(choice["distinguishable"], bool)
    assert set(choice["scores"]) == {"linear_map", "knn_map", "img_per_sec"}
    low, high = choice["reported_interval"]
    assert low <= choice["reported_value"] <= high

    code, out, _ = run_cli(capsys, "recommend", "--dataset", str(two_region["real"]), "--task",
                           "multilabel", "--candidates", ",".join(two_region["ckpts"]))
    text = " ".join(out.split())  # the table's notes wrap to the terminal
    assert code == 0 and "mAP in %, ± the wider side of the 95% bootstrap interval" in text
    assert "NOT distinguishable: paired bootstrap" in text or "(distinguishable: paired" in text


@pytest.mark.parametrize("extra, message", [
    (["--task", "multilabel", "--sort", "5shot"],
     "error: --sort 5shot: few-shot scores are not measured on a multi-label dataset"),
    (["--sort", "linear_map"],
     "error: --sort linear_map: mAP scores belong to multi-label datasets and this one is "
     "single-label. Use linear_accuracy, or add --task multilabel"),
])
def test_probe_refuses_scores_the_task_does_not_measure(extra, message, capsys, tmp_path):
    from tests.support.cli_helpers import run_cli

    code, _, err = run_cli(capsys, "probe", "--dataset", str(tmp_path), "--candidates", "x.npz",
                           *extra)
    assert code != 0 and err.strip().startswith(message), err


def test_resampled_map_is_the_map_of_the_resampled_rows_with_ties_and_empty_classes():
    """The vectorised bootstrap (weights per image) against mAP recomputed on drawn rows."""
    from vitzoo.probe.intervals import bootstrap_counts
    from vitzoo.probe.multilabel import resampled_map

    rng = np.random.default_rng(7)
    y = (rng.uniform(size=(40, 5)) < 0.1).astype(np.int32)
    s = np.round(rng.normal(size=y.shape) + y, 1)  # many ties
    counts = bootstrap_counts(40, resamples=60, seed=3)
    draws = np.random.default_rng(3)
    expected = []
    for _ in range(60):
        rows = draws.integers(0, 40, 40)
        expected.append(map_oracle(s[rows], y[rows]) if y[rows].sum() else np.nan)
    np.testing.assert_allclose(resampled_map(s, y, counts), expected, atol=1e-12)
    assert np.isnan(resampled_map(s, np.zeros_like(y), counts)).all()


def test_the_dataset_s_own_validation_split_chooses_when_given(features):
    from vitzoo.probe import multilabel

    tx, ty, ex, ey = features
    vx, vy = ex[:12], ey[:12]  # stands for a validation split of the dataset's own
    out = multilabel.score_all((tx, ty), (ex, ey), validation=(vx, vy), validation_name="val")
    choose = out["choose"]
    assert choose["source"] == "dataset" and "own val split" in choose["split"]
    assert choose["examples"] == 12
    fitted = ridge_oracle(tx, ty, choose["linear"]["l2"])(vx)  # the whole training split fitted
    assert choose["linear"]["map"] == pytest.approx(map_oracle(fitted, vy), abs=1e-12)
