"""The forward's matrix-product autotune: decided by injected timings, never by a clock.

Oracles: the timings are the test's own (``timer`` seam), so the winner is known in
advance; whether a compiled step really uses oneDNN is read from its lowered program (the
custom call's target) and from :func:`vitzoo.kernels.matmul.count_calls`; outputs are
compared with the same forward traced with XLA's products only.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.support.adapt_helpers import TINY
from tests.support.ckpt_factory import write_tiny_vit
from vitzoo.backbone import forward_tune
from vitzoo.kernels import matmul
from vitzoo.models import build_model
from vitzoo.models.configs import ModelConfig

CONFIG = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=2,
                     patch_size=8, num_heads=2)
ROUTED_FORWARD = 4  # per block: q/k/v, output projection, two MLP layers (scanned: once)


@pytest.fixture
def auto(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``VITZOO_CPU_MATMUL=auto`` and the autotune on (the suite pins xla and off)."""
    monkeypatch.setenv(matmul.ENV, "auto")
    monkeypatch.setenv("VITZOO_AUTOTUNE", "1")
    monkeypatch.setenv("VITZOO_AUTOTUNE_BUDGET", "600")
    matmul.forget_problem()
    for dtype in ("float32", "bfloat16"):
        matmul.use_measured(dtype, None)
    yield kernel
    for dtype in ("float32", "bfloat16"):
        matmul.use_measured(dtype, None)


def _model_and_args(batch: int = 4):
    model = build_model(CONFIG, 5)
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
    params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
    return model, params, images


def _job(batch: int = 4, resolution: int = 32) -> forward_tune.Job:
    return forward_tune.Job("logits", CONFIG, resolution, batch, 1, "float32")


class Timings:
    """The timer seam: runs each call and says how long it took, from a table (plus
    ``compile`` seconds on a candidate's first call); remembers the candidates in the order
    they first ran, what each traced with, and every call."""

    def __init__(self, compile: float = 0.0, **seconds: float) -> None:
        self.seconds, self.compile = seconds, compile
        self.calls: list[str] = []
        self.every: list[str] = []
        self.traced: dict[str, str] = {}

    def __call__(self, backend: str, run):
        first = backend not in self.calls
        self.every.append(backend)
        if not first:
            return run(), self.seconds[backend]
        self.calls.append(backend)
        # What the model really asked while this call traced it: nothing, when JAX reused
        # another candidate's trace (a step over the same function object).
        answers: list[bool] = []
        active = matmul.active
        matmul.active = lambda dtype: answers.append(active(dtype)) or answers[-1]
        try:
            out = run()
        finally:
            matmul.active = active
        self.traced[backend] = ("onednn" if all(answers) else "xla") if answers else "no trace"
        return out, self.seconds[backend] + self.compile


def _decide(timings: Timings, *, job: forward_tune.Job | None = None, batches: int | None = None,
            **seams):
    """decide(), then a race finished on random input: (tuning, winner step, steps, args)."""
    model, params, images = _model_and_args()
    steps: list = []

    def make_step():
        steps.append(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)))
        return steps[-1]

    tuning, race = forward_tune.decide(job or _job(), make_step, batches=batches,
                                       timer=timings, say=lambda _: None, **seams)
    if race is None:
        return tuning, None, steps, (params, images)
    assert race.tuning is tuning
    race.finish(params, images)
    return tuning, race.winner, steps, (params, images)


def _uses_onednn(step, args) -> bool:
    """Whether the compiled step holds the custom call, asked while XLA would be chosen."""
    with matmul.measured("float32", "xla"):
        return matmul.TARGET in step.lower(*args).as_text()


def _cache() -> dict:
    from vitzoo.runtime import autotune_cache_path as cache_path

    return json.loads(cache_path().read_text())


@pytest.mark.parametrize(("seconds", "winner"), [({"xla": 2.0, "onednn": 1.0}, "onednn"),
                                                 ({"xla": 1.0, "onednn": 2.0}, "xla")])
def test_trial_keeps_the_faster_compiled_step_and_remembers_it(auto, seconds, winner):
    timings = Timings(**seconds)
    tuning, step, steps, args = _decide(timings)
    assert timings.calls == ["xla", "onednn"]  # the rule's (float32: XLA) first
    assert timings.traced == {"xla": "xla", "onednn": "onednn"}  # each traced as its candidate
    assert (tuning.source, tuning.backend) == ("trial", winner)
    assert len(steps) == 2 and step is steps[["xla", "onednn"].index(winner)]  # no third compile
    assert _uses_onednn(step, args) == (winner == "onednn")
    rates = {m["backend"]: m["img_per_sec"] for m in tuning.measurements}
    assert rates == {b: 4 / s for b, s in seconds.items()}
    assert f"onednn {4 / seconds['onednn']:.1f} img/s" in tuning.reason
    assert f"xla {4 / seconds['xla']:.1f} img/s" in tuning.reason
    assert matmul.matmul_backend("float32")[0] == winner  # later traces use the winner
    cache = _cache()
    (text, entry), = cache[forward_tune.SECTION].items()
    assert entry["backend"] == winner and "entries" not in cache  # its own section
    key = json.loads(text)
    assert {key["resolution"], key["per_device_batch"], key["devices"], key["dtype"]} == \
        {32, 4, 1, "float32"}
    assert key["model"]["hidden_size"] == 32 and key["cpu"] and key["jax"] == jax.__version__
    assert {"physical_cores", "jaxlib", "malloc", "program"} <= set(key)

    again = Timings(xla=1.0, onednn=1.0)
    cached, step, _, _ = _decide(again)
    assert (cached.source, cached.backend, step, again.calls) == ("cache", winner, None, [])
    record = cached.record("float32")
    assert record["backend"] == winner and record["autotune"]["source"] == "cache"


def test_the_answer_is_keyed_by_the_shapes(auto):
    _decide(Timings(xla=2.0, onednn=1.0))
    other = Timings(xla=1.0, onednn=2.0)
    tuning, _, _, _ = _decide(other, job=_job(resolution=48))
    assert (tuning.source, tuning.backend, other.calls) == ("trial", "xla", ["xla", "onednn"])
    assert len(_cache()[forward_tune.SECTION]) == 2


def test_no_trial_when_off_fixed_unavailable_or_tiny(auto, monkeypatch):
    timings = Timings(xla=1.0, onednn=1.0)
    tuning, step, _, _ = _decide(timings, batches=forward_tune.MIN_BATCHES - 1)
    assert (tuning.source, step) == ("skipped", None) and "too short for a trial" in tuning.reason
    monkeypatch.setenv("VITZOO_AUTOTUNE", "0")
    assert _decide(timings)[0].source == "off"
    monkeypatch.setenv("VITZOO_AUTOTUNE", "1")
    monkeypatch.setenv(matmul.ENV, "xla")
    tuning = _decide(timings)[0]
    assert (tuning.source, tuning.reason) == ("skipped", f"{matmul.ENV}=xla fixes the backend")
    monkeypatch.setenv(matmul.ENV, "auto")
    monkeypatch.setattr(matmul, "kernel_problem", lambda: "no oneDNN wheel")
    tuning = _decide(timings)[0]
    assert tuning.source == "skipped" and "no oneDNN wheel" in tuning.reason
    assert timings.calls == []
    from vitzoo.runtime import autotune_cache_path as cache_path

    assert not cache_path().exists()  # nothing measured, nothing remembered


def test_the_budget_keeps_the_rules_backend_when_the_second_would_not_fit(auto, monkeypatch):
    """On random input the whole trial is overhead: a first candidate of 3 + 5 x 1 s, its
    estimated twin included, passes a 10 s budget; the answer is remembered as partial."""
    monkeypatch.setenv("VITZOO_AUTOTUNE_BUDGET", "10")
    timings = Timings(compile=3.0, xla=1.0, onednn=0.5)
    tuning, step, steps, _ = _decide(timings)
    assert timings.calls == ["xla"] and (tuning.source, tuning.backend) == ("trial", "xla")
    assert step is steps[0] and "not tried" in tuning.measurements[1]["error"]
    assert "20 s budget" not in tuning.measurements[1]["error"]
    assert timings.every == ["xla"] * (forward_tune.WARMUP + forward_tune.REPEATS)
    again = Timings(compile=3.0, xla=1.0, onednn=0.5)  # remembered: no cost next time
    assert _decide(again)[0].source == "cache" and again.calls == []
    monkeypatch.setenv("VITZOO_AUTOTUNE_BUDGET", "30")  # until the budget grows
    assert _decide(Timings(compile=3.0, xla=1.0, onednn=0.5))[0].backend == "onednn"
    settled = Timings(compile=3.0, xla=1.0, onednn=0.5)
    assert _decide(settled)[0].backend == "onednn" and settled.calls == []


def test_a_race_on_the_jobs_batches_computes_them_and_pays_one_compile(auto, monkeypatch):
    """Real work: every call returns the forward of its own input (oracle: XLA's products
    alone); the second candidate's extra cost is its compile only, so a 6 s compile fits a
    10 s budget that the same trial on random input would pass."""
    monkeypatch.setenv("VITZOO_AUTOTUNE_BUDGET", "10")
    model, params, _ = _model_and_args()
    plain = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    timings = Timings(compile=6.0, xla=1.0, onednn=0.5)
    steps: list = []

    def make_step():
        steps.append(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)))
        return steps[-1]

    tuning, race = forward_tune.decide(_job(), make_step, batches=50, timer=timings,
                                       say=lambda _: None)
    rng = np.random.default_rng(3)
    for index in range(forward_tune.MIN_BATCHES + 2):
        batch = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
        with matmul.measured("float32", "xla"):
            expected = np.asarray(plain(params, batch))
        np.testing.assert_allclose(np.asarray(race(params, batch)), expected,
                                   rtol=1e-4, atol=1e-4)
        assert race.done == (index >= forward_tune.MIN_BATCHES - 1) != tuning.pending
    warm, rounds = ["xla"] * forward_tune.WARMUP, ["xla", "onednn"] * forward_tune.REPEATS
    assert timings.every == warm + ["onednn"] * forward_tune.WARMUP + rounds  # alternating
    assert (tuning.source, tuning.backend, len(steps)) == ("trial", "onednn", 2)
    assert race.winner is steps[1] and tuning.spent_s == 6.0  # the second compile, no more
    rates = {m["backend"]: m["img_per_sec"] for m in tuning.measurements}
    assert rates == {"xla": 4.0, "onednn": 8.0}
    small = np.zeros((2, 32, 32, 3), np.float32)  # a smaller last batch: the winner retraces
    assert np.asarray(race(params, small)).shape == (2, 5)


def test_an_unfinished_race_decides_and_remembers_nothing(auto):
    model, params, images = _model_and_args()
    tuning, race = forward_tune.decide(
        _job(), lambda: jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)),
        timer=Timings(xla=1.0, onednn=0.5), say=lambda _: None)
    for _ in range(3):
        race(params, images)
    assert not race.done and tuning.backend is None and "unfinished" in tuning.reason
    assert tuning.pending
    assert tuning.record("float32")["backend"] == "xla"  # the rule's, said so
    from vitzoo.runtime import autotune_cache_path as cache_path

    assert not cache_path().exists()


def test_the_default_budget_is_the_fine_tune_trials_share_per_candidate(auto, monkeypatch):
    from vitzoo.runtime import AUTOTUNE_SHARE_S

    monkeypatch.delenv("VITZOO_AUTOTUNE_BUDGET")
    tuning, _, _, _ = _decide(Timings(xla=0.2, onednn=0.1), batches=100)
    assert tuning.source == "trial" and tuning.backend == "onednn"
    assert tuning.budget_s == 2 * AUTOTUNE_SHARE_S  # two candidates: XLA's and oneDNN's


def test_a_tiny_job_uses_a_remembered_answer(auto):
    _decide(Timings(xla=2.0, onednn=1.0))
    tuning, _, _, _ = _decide(Timings(xla=1.0, onednn=1.0), batches=1)
    assert (tuning.source, tuning.backend) == ("cache", "onednn")


def test_forward_extracts_the_same_features_with_the_winner(auto, tmp_path, monkeypatch):
    """End to end through :class:`vitzoo.backbone.Forward`: the trial's step does the work."""
    from vitzoo.backbone import Forward, load

    backbone = load(write_tiny_vit(tmp_path / "vit.npz", **TINY))
    images = np.random.default_rng(1).uniform(-1, 1, (1, 4, 32, 32, 3)).astype(np.float32)
    timings = Timings(xla=2.0, onednn=1.0)
    monkeypatch.setattr(forward_tune, "_timed", timings)
    forward = Forward(backbone, batch=4)
    steps: list = []
    make_step = forward._make_step
    forward._make_step = lambda: steps.append(make_step()) or steps[-1]
    for _ in range(forward_tune.MIN_BATCHES):  # the job's batches run the trial
        forward(images)
    assert forward.tuning is not None and forward.tuning.source == "trial"
    assert timings.calls == ["xla", "onednn"]
    assert timings.traced == {"xla": "xla", "onednn": "onednn"}  # each traced its own program
    assert len(steps) == 2 and forward._race.winner is steps[1]  # oneDNN's, no 3rd compile
    traces = []
    active = matmul.active
    monkeypatch.setattr(matmul, "active", lambda dtype: traces.append(dtype) or active(dtype))
    tuned = forward(images)
    assert traces == []  # the compiled step ran: no trace under whatever is in effect now
    record = forward.matmul_record()
    assert record["backend"] == "onednn" and record["autotune"]["source"] == "trial"

    monkeypatch.setenv(matmul.ENV, "xla")
    plain = Forward(backbone, batch=4)
    reference = plain(images)
    assert plain.tuning is not None and plain.tuning.source == "skipped"
    np.testing.assert_allclose(tuned, reference, rtol=1e-4, atol=1e-4)
    monkeypatch.setenv(matmul.ENV, "auto")
    model = backbone.module("float32")
    with matmul.measured("float32", "onednn"):
        jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x, train=False))(
            backbone.params, images[0])
    assert matmul.count_calls(jaxpr) == ROUTED_FORWARD


def test_predict_of_a_few_images_runs_no_trial(auto, tmp_path, monkeypatch):
    from PIL import Image

    from vitzoo.predict import Predictor

    timings = Timings(xla=2.0, onednn=1.0)
    monkeypatch.setattr(forward_tune, "_timed", timings)
    path = write_tiny_vit(tmp_path / "vit.npz", **TINY)
    picture = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(picture)
    predictor = Predictor(path)
    predictor.predict([picture], top_k=1)
    record = predictor.matmul_record()
    assert record is not None and record["autotune"]["source"] == "skipped"
    assert record["backend"] == "xla" and timings.calls == []  # float32: the rule's XLA
    many = Predictor(path)
    many.predict([picture] * forward_tune.MIN_BATCHES, top_k=1, batch_size=1)
    assert many.tuning is not None and (many.tuning.source, many.tuning.backend) == (
        "trial", "onednn")


class Outputs(Timings):
    """:class:`Timings` that also keeps what each timed call returned."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.outputs: list = []

    def __call__(self, backend: str, run):
        out, seconds = super().__call__(backend, run)
        self.outputs.append(out)
        return out, seconds


@pytest.fixture
def no_forward(monkeypatch):
    """``evaluate`` builds no :class:`~vitzoo.backbone.Forward` and replicates the params
    once; returns the count of replications."""
    from vitzoo import backbone
    from vitzoo.backbone import parallel

    class Refused:
        def __init__(self, *args, **kwargs):
            raise AssertionError("evaluate built a Forward")

    monkeypatch.setattr(parallel, "Forward", Refused)
    monkeypatch.setattr(backbone, "Forward", Refused)
    copies: list[int] = []
    replicate = parallel.Placement.replicate
    monkeypatch.setattr(parallel.Placement, "replicate",
                        lambda self, tree: copies.append(1) or replicate(self, tree))
    return copies


def _evaluation_data(tmp_path: Path, per_class: int) -> tuple[Path, Path]:
    from tests.support.adapt_helpers import color_image, write_folder

    folder = write_folder(tmp_path / f"data{per_class}", color_image, ["r", "g", "b"], train=2,
                          test=per_class, size=32)
    return folder, write_tiny_vit(tmp_path / "vit.npz", **{**TINY, "num_classes": 3})


def _eval_layout(batch: int):
    from vitzoo.backbone import Placement, start

    start(guard=False)
    return Placement.here().layout(batch)


def test_evaluate_races_its_own_step_on_its_batches_and_remembers(auto, tmp_path, monkeypatch,
                                                                  no_forward):
    """A long enough split: the evaluator's own step computes its first batches with each
    backend (the timer sees the step's sums, whose counts are the split's real rows: no
    random input, no Forward), the report says so, and the metrics are XLA's alone; the
    next evaluate uses the remembered answer; a short one was skipped before it."""
    from vitzoo.adapt.evaluate import evaluate

    layout = _eval_layout(4)
    per_class = -(-forward_tune.MIN_BATCHES * layout.global_batch // 3) + 1
    big, path = _evaluation_data(tmp_path, per_class)
    small, _ = _evaluation_data(tmp_path, 3)  # 9 images: fewer batches than a trial
    batches = -(-3 * per_class // layout.global_batch)
    assert batches >= forward_tune.MIN_BATCHES
    monkeypatch.setenv(matmul.ENV, "xla")
    reference = evaluate(str(path), str(big), batch=4)  # XLA's products only: the oracle
    assert reference.matmul["autotune"]["source"] == "skipped"
    monkeypatch.setenv(matmul.ENV, "auto")
    timings = Outputs(xla=2.0, onednn=1.0)
    monkeypatch.setattr(forward_tune, "_timed", timings)

    short = evaluate(str(path), str(small), batch=4)
    assert (short.matmul["backend"], short.matmul["autotune"]["source"]) == ("xla", "skipped")
    assert "too short for a trial" in short.matmul["autotune"]["reason"]
    assert timings.calls == []

    raced = evaluate(str(path), str(big), batch=4)
    warm, rounds = ["xla"] * forward_tune.WARMUP, ["xla", "onednn"] * forward_tune.REPEATS
    assert timings.every == warm + ["onednn"] * forward_tune.WARMUP + rounds
    assert timings.traced == {"xla": "xla", "onednn": "onednn"}
    counts = [float(np.asarray(out["count"]).reshape(-1)[0]) for out in timings.outputs]
    assert counts == [layout.global_batch] * forward_tune.MIN_BATCHES  # the split's own rows
    tune = raced.matmul["autotune"]
    assert (raced.matmul["backend"], tune["source"]) == ("onednn", "trial")
    assert tune["measured_at"] and "unfinished" not in tune["reason"] and "evaluate" in tune["reason"]
    rates = {m["backend"]: m["img_per_sec"] for m in tune["measurements"]}
    assert rates == {"xla": layout.global_batch / 2.0, "onednn": layout.global_batch / 1.0}
    assert raced.examples == reference.examples == 3 * per_class
    assert (raced.top1, raced.top5) == (reference.top1, reference.top5)
    assert raced.loss == pytest.approx(reference.loss, rel=1e-4)
    (text, entry), = _cache()[forward_tune.SECTION].items()
    assert json.loads(text)["program"] == "evaluate" and entry["backend"] == "onednn"

    matmul.use_measured("float32", None)  # a new process: only the remembered answer is left
    traced: list[str] = []
    active = matmul.active
    monkeypatch.setattr(matmul, "active", lambda dtype: traced.append(
        matmul.matmul_backend(dtype)[0]) or active(dtype))
    again = evaluate(str(path), str(big), batch=4)
    assert (again.matmul["backend"], again.matmul["autotune"]["source"]) == ("onednn", "cache")
    assert traced[-1] == "onednn"  # the evaluator's program, traced last, with the answer
    assert len(timings.every) == forward_tune.MIN_BATCHES  # no second trial
    assert (again.top1, again.examples) == (reference.top1, reference.examples)
    assert again.loss == pytest.approx(reference.loss, rel=1e-4)
    tiny = evaluate(str(path), str(small), batch=4)  # a short split takes the answer too
    assert (tiny.matmul["backend"], tiny.matmul["autotune"]["source"]) == ("onednn", "cache")
    assert (tiny.top1, tiny.examples) == (short.top1, short.examples)
    assert no_forward == [1] * 5  # one copy of the params per evaluate


def test_evaluate_reports_a_race_its_split_left_unfinished(auto, tmp_path, monkeypatch,
                                                           no_forward):
    """A race still running when the split ends (here: a trial length the split passes the
    skip check for, but cannot finish) decides and remembers nothing, and says so."""
    from vitzoo.adapt.evaluate import evaluate

    small, path = _evaluation_data(tmp_path, 3)
    batches = -(-9 // _eval_layout(4).global_batch)
    assert batches < forward_tune.MIN_BATCHES  # shorter than the race's plan
    monkeypatch.setenv(matmul.ENV, "xla")
    reference = evaluate(str(path), str(small), batch=4)
    monkeypatch.setenv(matmul.ENV, "auto")
    timings = Timings(xla=2.0, onednn=1.0)
    monkeypatch.setattr(forward_tune, "_timed", timings)
    monkeypatch.setattr(forward_tune, "MIN_BATCHES", 1)
    report = evaluate(str(path), str(small), batch=4)
    tune = report.matmul["autotune"]
    assert (report.matmul["backend"], tune["source"]) == ("xla", "trial")
    assert "unfinished" in tune["reason"] and "measured_at" not in tune
    assert len(timings.every) == batches  # every batch ran in the race, which never ended
    assert (report.top1, report.examples) == (reference.top1, reference.examples)
    assert report.loss == pytest.approx(reference.loss, rel=1e-4)
    from vitzoo.runtime import autotune_cache_path as cache_path

    assert not cache_path().exists()


def test_multilabel_evaluate_races_its_logits_step(auto, tmp_path, monkeypatch, no_forward):
    """The multi-label evaluation's own (all-gathering) logits step is raced, under its own
    key; mAP and F1 equal the XLA-only evaluation's."""
    from tests.adapt.test_multilabel_learns import write_two_region_folder
    from vitzoo.adapt.evaluate import evaluate

    layout = _eval_layout(4)
    test = forward_tune.MIN_BATCHES * layout.global_batch + 1
    data = write_two_region_folder(tmp_path / "data", train=2, test=test, seed=4)
    folder = tmp_path / "run"
    folder.mkdir()
    path = write_tiny_vit(folder / "final.npz", **{**TINY, "num_classes": 2})
    (folder / "run.json").write_text(json.dumps({
        "class_names": ["a", "b"], "options": {"task": "multilabel"},
        "final_metrics": {"eval_threshold": 0.35}}))
    monkeypatch.setenv(matmul.ENV, "xla")
    reference = evaluate(str(path), str(data), batch=4)
    monkeypatch.setenv(matmul.ENV, "auto")
    timings = Outputs(xla=1.0, onednn=2.0)
    monkeypatch.setattr(forward_tune, "_timed", timings)
    report = evaluate(str(path), str(data), batch=4)
    assert report.task == "multilabel"
    tune = report.matmul["autotune"]
    assert (report.matmul["backend"], tune["source"]) == ("xla", "trial") and tune["measured_at"]
    assert timings.calls == ["xla", "onednn"] and len(timings.every) == forward_tune.MIN_BATCHES
    assert all(out["logits"].shape[-1] == 2 for out in timings.outputs)  # the step's rows
    (text, _), = _cache()[forward_tune.SECTION].items()
    assert json.loads(text)["program"] == "evaluate multilabel"
    assert report.examples == reference.examples == test
    for name in ("map", "f1", "macro_f1", "loss"):
        assert getattr(report, name) == pytest.approx(getattr(reference, name), abs=1e-5), name
    assert report.threshold == reference.threshold == 0.35
