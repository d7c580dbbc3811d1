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
        if first:
            self.calls.append(backend)
            self.traced[backend] = matmul.matmul_backend("float32")[0]
        self.every.append(backend)
        return run(), self.seconds[backend] + (self.compile if first else 0.0)


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
    assert timings.calls == ["xla", "onednn"] and timings.traced["onednn"] == "onednn"
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


def test_evaluate_traces_with_the_remembered_backend_and_reports_it(auto, tmp_path, monkeypatch):
    """``evaluate`` takes the forward's decision for its own program (a remembered answer here)."""
    from tests.support.adapt_helpers import color_image, write_folder
    from vitzoo.adapt.evaluate import evaluate

    folder = write_folder(tmp_path / "data", color_image, ["r", "g", "b"], train=2, test=3,
                          size=32)
    path = write_tiny_vit(tmp_path / "vit.npz", **{**TINY, "num_classes": 3})
    monkeypatch.setattr(forward_tune, "_timed", Timings(xla=2.0, onednn=1.0))
    first = evaluate(str(path), str(folder), batch=4)  # 9 images: too few for a trial
    assert first.matmul["backend"] == "xla" and first.matmul["autotune"]["source"] == "skipped"
    from vitzoo.backbone import Forward, load

    Forward(load(path), batch=4, batches=100).tune()  # a big job decides for these shapes
    matmul.use_measured("float32", None)  # a new process: only the remembered answer is left
    traced: list[str] = []
    active = matmul.active
    monkeypatch.setattr(matmul, "active", lambda dtype: traced.append(
        matmul.matmul_backend(dtype)[0]) or active(dtype))
    tuned = evaluate(str(path), str(folder), batch=4)
    assert tuned.matmul["backend"] == "onednn" and tuned.matmul["autotune"]["source"] == "cache"
    # loading the checkpoint traces the model first (shapes); the evaluator's program is last
    assert traced[-1] == "onednn"
    assert tuned.examples == first.examples == 9
    assert tuned.loss == pytest.approx(first.loss, rel=1e-4)
    assert tuned.top1 == first.top1
