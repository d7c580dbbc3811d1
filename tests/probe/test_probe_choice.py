"""Choosing between probed candidates: on validation only, with intervals, margins and caveats.

Oracles: Newcombe (1998, Statistics in Medicine 17:857, table I) for the Wilson interval;
hand-counted binomial tails for the exact McNemar test; the scores computed with clean
evaluation labels for the poisoning test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitzoo.errors import VitzooError
from vitzoo.probe import choice, intervals, scores, speed
from vitzoo.probe.run import CandidateResult, reported_fields


@pytest.mark.parametrize("correct, n, low, high", [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718), (29, 29, 0.8830, 1.0),
])
def test_wilson_equals_newcombe_table(correct, n, low, high):
    got = intervals.wilson(correct, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_exact_mcnemar_counts_only_discordant_images():
    # 6 images only the first gets right, 1 only the second: p = 2 * (C(7,0)+C(7,1)) / 2^7
    a = [1] * 6 + [0] + [1] * 10 + [0] * 5
    b = [0] * 6 + [1] + [1] * 10 + [0] * 5
    test = intervals.paired_test(a, b)
    assert (test["first_better"], test["second_better"]) == (6, 1)
    assert test["p_value"] == pytest.approx(2 * 8 / 128)
    assert intervals.paired_test([1, 0], [1, 0])["p_value"] == 1.0  # nothing to tell apart


def _blobs(n_per_class, classes, dim, spread, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    x = centers[labels] + spread * rng.normal(0, 1, (len(labels), dim))
    return x.astype(np.float32), labels.astype(np.int32)


def _result(name, train, evaluation, classes, shots=(1, 3)):
    result = CandidateResult(name, "arch-" + name, eval_split="test", throughput={
        "img_per_sec": 100.0, "img_per_sec_min": 90.0, "img_per_sec_max": 110.0})
    result.img_per_sec = 100.0
    reported_fields(result, scores.score_all(train, evaluation, classes, shots=shots, seeds=2))
    return result


def _task(classes=4):
    """Two 'checkpoints': the same images seen through a sharp and a blurry feature map."""
    tx, ty = _blobs(30, classes, 20, 1.5, seed=1)  # hard enough that the regulariser matters
    ex, ey = _blobs(15, classes, 20, 1.5, seed=2)
    noise = np.random.default_rng(3)
    blur = lambda x: x + 1.5 * noise.normal(0, 1, x.shape).astype(np.float32)  # noqa: E731
    return (tx, ty), (ex, ey), (blur(tx), ty), (blur(ex), ey)


def test_poisoned_evaluation_labels_change_no_choice_and_no_regulariser():
    classes = 4
    sharp_train, sharp_eval, blur_train, blur_eval = _task(classes)
    rng = np.random.default_rng(0)
    poison = rng.permutation(classes)[sharp_eval[1]]  # every evaluation label relabelled

    def run(labels):
        return [_result("sharp", sharp_train, (sharp_eval[0], labels), classes),
                _result("blur", blur_train, (blur_eval[0], labels), classes)]

    clean, poisoned = run(sharp_eval[1]), run(poison)
    for result, train in zip(poisoned, (sharp_train, blur_train), strict=True):
        # the regulariser the training images alone choose (test_probe_scores checks that
        # choice against a lstsq oracle)
        assert result.scores["report"]["linear"]["l2"] == scores.linear_probe(*train, classes)[1]
    for c, p in zip(clean, poisoned, strict=True):
        assert c.scores["choose"] == p.scores["choose"]  # every validation number, per image
        assert c.scores["report"]["linear"]["l2"] == p.scores["report"]["linear"]["l2"]
        for k in c.scores["report"]["fewshot"]:
            assert c.scores["report"]["fewshot"][k]["l2"] == p.scores["report"]["fewshot"][k]["l2"]
        assert c.linear_accuracy != p.linear_accuracy  # the reported side did read the labels
    for score in ("linear_accuracy", "knn_accuracy", "fewshot_3_mean"):
        a, b = (choice.choose(x, score, eval_split="test") for x in (clean, poisoned))
        keys = ("checkpoint", "runner_up", "margin", "p_value", "distinguishable", "value")
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert choice.choose(clean, "linear_accuracy", eval_split="test")["checkpoint"] == "sharp"


def test_choice_states_split_margin_and_every_score_beside_the_runner_up():
    classes = 4
    sharp_train, sharp_eval, blur_train, blur_eval = _task(classes)
    results = [_result("blur", blur_train, blur_eval, classes),
               _result("sharp", sharp_train, sharp_eval, classes)]
    made = choice.choose(results, "knn_accuracy", eval_split="test")
    assert (made["checkpoint"], made["runner_up"]) == ("sharp", "blur")
    assert made["choosing_split"] == "validation" and made["reported_split"] == "test"
    assert made["choosing_examples"] == 4 * 6 and made["reported_examples"] == 4 * 15
    sharp, blur = results[1], results[0]
    assert made["margin"] == pytest.approx(choice.value(sharp, "knn_accuracy")
                                           - choice.value(blur, "knn_accuracy"))
    assert made["test"].startswith("exact McNemar test on the same 24 validation images")
    assert set(made["scores"]) == {"linear_accuracy", "knn_accuracy", "fewshot_1_mean",
                                   "fewshot_3_mean", "img_per_sec"}
    assert made["scores"]["linear_accuracy"]["runner_up"]["reported"] == blur.linear_accuracy
    # 6 validation images per class: below the minimum, so the choice says so
    assert made["reliable"] is False
    assert made["not_reliable_because"] == [
        "the validation part has 6 image(s) in its smallest class (fewer than 10)"]
    text = "\n".join(choice.explain(made))
    assert "reported on test (60 images, not used to choose)" in text
    assert "margin over the runner-up blur" in text and "not reliable:" in text
    assert "100 img/s vs       100 img/s" in text  # measured once: no validation/reported pair
    # the reported interval is Wilson's on the evaluation images
    report = sharp.scores["report"]
    assert sharp.intervals["linear_accuracy"] == list(
        intervals.wilson(report["linear"]["correct"], report["examples"]))


def test_one_candidate_on_a_tiny_evaluation_is_not_reliable():
    tx, ty = _blobs(12, 3, 4, 0.5, seed=4)
    ex, ey = _blobs(2, 3, 4, 0.5, seed=5)
    made = choice.choose([_result("only", (tx, ty), (ex, ey), 3, shots=(1,)),
                          CandidateResult("gone", skipped="could not fetch")],
                         "linear_accuracy", eval_split="test")
    assert made["checkpoint"] == "only" and made["runner_up"] is None and made["margin"] is None
    assert made["reliable"] is False
    assert made["not_reliable_because"][0] == "only one candidate was measured, so nothing was compared"
    assert any("evaluation split has 2 image(s)" in r for r in made["not_reliable_because"])
    assert made["skipped"] == [{"checkpoint": "gone", "reason": "could not fetch"}]
    assert "not reliable: only one candidate" in "\n".join(choice.explain(made))
    with pytest.raises(VitzooError, match="no candidate could be probed"):
        choice.choose([CandidateResult("gone", skipped="x")], "linear_accuracy", eval_split="test")


@pytest.mark.parametrize("given, expected", [
    ("linear", "linear_accuracy"), ("linear_accuracy", "linear_accuracy"),
    ("val_linear_accuracy", "linear_accuracy"), ("knn", "knn_accuracy"),
    ("10shot", "fewshot_10_mean"), ("fewshot_5_mean", "fewshot_5_mean"),
    ("speed", "img_per_sec"), ("img_per_sec", "img_per_sec"),
])
def test_score_names_are_the_column_names(given, expected):
    assert choice.score_name(given, (1, 5, 10)) == expected


def test_a_kshot_not_measured_is_refused():
    with pytest.raises(VitzooError, match=r"--by 3shot: 3 is not among --shots \(1,5\)"):
        choice.score_name("3shot", (1, 5), "--by")
    with pytest.raises(VitzooError, match="unknown --sort 'best'"):
        choice.score_name("best", (1, 5))


def test_ranking_uses_validation_never_the_reported_value():
    a, b = CandidateResult("a"), CandidateResult("b")
    a.scores = {"choose": {"linear": {"accuracy": 0.6}}, "report": {"linear": {"accuracy": 0.9}}}
    b.scores = {"choose": {"linear": {"accuracy": 0.7}}, "report": {"linear": {"accuracy": 0.5}}}
    skipped = CandidateResult("c", skipped="no")
    assert [r.checkpoint for r in choice.rank([skipped, a, b], "linear_accuracy")] == ["b", "a", "c"]


def test_speed_times_each_batch_after_a_warm_up_and_keeps_the_spread():
    calls, ticks = [], iter([0.0, 1.0, 1.0, 3.0, 3.0, 3.5, 10.0, 10.5, 20.0, 24.0])
    seconds = speed.time_batches(lambda: calls.append(1), repeats=5, warmup=1,
                                 clock=lambda: next(ticks))
    assert len(calls) == 6 and seconds == [1.0, 2.0, 0.5, 0.5, 4.0]
    out = speed.summary(seconds, batch=8)
    assert (out["img_per_sec"], out["img_per_sec_min"], out["img_per_sec_max"]) == (8.0, 2.0, 16.0)
    assert out["timed_batches"] == 5 >= 3


def test_a_local_run_shows_as_its_run_name(tmp_path):
    run = tmp_path / "workdir"
    run.mkdir()
    (run / "final.npz").write_bytes(b"")
    (run / "run.json").write_text(json.dumps({"run_name": "pets-head"}))
    assert choice.display_name(str(run / "final.npz")) == "pets-head"
    assert choice.display_name(str(tmp_path / "tiny0.npz")) == "tiny0"
    assert choice.display_name("Ti/16") == "Ti/16"
