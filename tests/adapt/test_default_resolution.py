"""``finetune <patch-14 model>`` without ``--res``: the default 384 is no multiple of the stride
14, so it is rounded to the nearest multiple (378), said in one stderr line and recorded in
run.json; a ``--res 384`` the user gave keeps the one-line error. The DINOv2 stand-in (timm
layout, patch 14) plays the model; the nearest multiple is worked out here by search."""

from __future__ import annotations

import json

import pytest

from tests.support.adapt_helpers import stripes, write_folder
from tests.support.cli_helpers import run_cli
from tests.support.family_standins import write_standin

STRIDE = 14  # the stand-in's patch (tests/support/timm_family_factory.py: dinov2_reg)
DEFAULT = 384  # FinetuneOptions.res, the AugReg papers' fine-tuning resolution
#: the multiple of 14 closest to 384, by search (the code rounds by division)
NEAREST = min(range(STRIDE, 2 * DEFAULT, STRIDE), key=lambda m: abs(m - DEFAULT))


@pytest.fixture
def world(tmp_path):
    make = lambda label, size, rng: stripes(60.0 * label, size, rng, color=True)  # noqa: E731
    data = write_folder(tmp_path / "data", make, ["a", "b"], train=2, test=2, size=24)
    return str(write_standin(tmp_path / "models", "dinov2")), str(data)


def test_the_default_is_rounded_for_a_patch14_model_and_run_json_says_so(world, capsys,
                                                                            tmp_path):
    """A real (head-only) fine-tune: features at 378 px, the exported model's grid 27."""
    from vitzoo.weights.release import load_checkpoint

    model, data = world
    work = tmp_path / "head"
    code, _, err = run_cli(capsys, "finetune", model, "--dataset", data, "--head-only",
                           "--workdir", str(work), "--no-register")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("--res not given")]
    assert len(notes) == 1, err
    assert f"{DEFAULT} is not a multiple" in notes[0] and f"stride {STRIDE}" in notes[0]
    assert f"fine-tuning at {NEAREST}" in notes[0]
    options = json.loads((work / "run.json").read_text())["options"]
    assert (options["res"], options["res_rounded_from"]) == (NEAREST, DEFAULT)
    _, info, _ = load_checkpoint(work / "final.npz")
    assert info["resolution"] == NEAREST


def test_a_full_finetune_without_res_gets_the_rounded_resolution(world, capsys, monkeypatch,
                                                                 tmp_path):
    """Through ``launch`` (the run itself stood in for): the options the run receives."""
    from vitzoo.adapt import runner

    seen = {}

    def fake_run(options, **_):
        seen["options"] = options
        return runner.RunResult(tmp_path, 1, 1, None)

    monkeypatch.setattr(runner, "run", fake_run)
    model, data = world
    code, _, err = run_cli(capsys, "finetune", model, "--dataset", data, "--no-progress",
                           "--workdir", str(tmp_path / "w"))
    assert code == 0, err
    assert (seen["options"].res, seen["options"].res_rounded_from) == (NEAREST, DEFAULT)
    assert f"fine-tuning at {NEAREST}" in err


@pytest.mark.parametrize("head_only", [False, True])
def test_a_res_the_user_gave_is_refused_in_one_line(world, capsys, tmp_path, head_only):
    model, data = world
    code, _, err = run_cli(capsys, "finetune", model, "--dataset", data, "--res", str(DEFAULT),
                           "--workdir", str(tmp_path / "w"), "--no-progress", "--no-register",
                           *(["--head-only"] if head_only else []))
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # (and a line: timm folder converted)
    assert f"resolution {DEFAULT} is not a multiple" in errors[0] and f"stride {STRIDE}" in err
    assert "--res not given" not in err


def test_a_recipes_384_is_rounded_like_the_default_and_said_so(world):
    from vitzoo.adapt.options import FinetuneOptions, fit_resolution

    model, data = world
    recipe = FinetuneOptions(model=model, dataset=data, recipe="paper",
                             recipe_values={"res": {"value": DEFAULT, "source": "paper"}})
    fitted, note = fit_resolution(recipe, set())
    assert (fitted.res, fitted.res_rounded_from) == (NEAREST, DEFAULT)
    assert f"the paper recipe's {DEFAULT}" in note
    kept, none = fit_resolution(FinetuneOptions(model=model, dataset=data, res=NEAREST), set())
    assert (kept.res, kept.res_rounded_from, none) == (NEAREST, None, None)
