"""The first hour of a new user, offline: honest head-only runs, ``random:ARCH``, one unit rule,
``doctor``'s devices, the offline reason said once.

Oracles are independent of the code under test: percentages are computed here from the JSON
fractions, the untrained weights are rebuilt here with Flax's own ``init``, the device count
finetune uses is read from a finetune run's own ``run.json``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.support.adapt_helpers import stripes, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli

HEAD_ONLY_REFUSED = ("--steps", "--warmup", "--lr", "--accum", "--eval-every",
                     "--checkpoint-every", "--log-every", "--seed", "--label-smoothing")


@pytest.fixture
def task(tmp_path):
    def draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
        return stripes(60.0 * label, size, rng)

    data = write_folder(tmp_path / "data", draw, ["a", "b", "c"], train=8, test=4, size=32)
    return data, str(tiny_checkpoint(tmp_path / "tiny.npz", num_classes=3, seed=0))


# --- honest head-only runs ------------------------------------------------------------


@pytest.mark.parametrize("option", HEAD_ONLY_REFUSED)
def test_head_only_refuses_each_option_it_does_not_use_even_at_its_default(option, capsys, tmp_path):
    """Given explicitly, even with the default value (which a comparison with the default
    would let through), each refused option is one line, exit 2, before anything is read."""
    from vitzoo.adapt.options import FinetuneOptions

    default = getattr(FinetuneOptions, option[2:].replace("-", "_"))
    code, _, err = run_cli(capsys, "finetune", str(tmp_path / "none.npz"), "--dataset",
                             str(tmp_path / "missing"), "--head-only", option, str(default))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{option} does not apply to --head-only" in lines[0]
    assert [o for o in HEAD_ONLY_REFUSED if re.search(rf"{o}\b", lines[0])] == [option]


def test_head_only_run_json_records_only_what_it_used(task, capsys, tmp_path):
    data, ckpt = task
    work = tmp_path / "head"
    code, _, err = run_cli(capsys, "finetune", ckpt, "--dataset", str(data), "--head-only",
                           "--res", "32", "--workdir", str(work), "--no-register")
    assert code == 0, err
    run = json.loads((work / "run.json").read_text())
    unused = {o[2:].replace("-", "_") for o in HEAD_ONLY_REFUSED}
    assert not unused & set(run["options"]), run["options"]
    assert {"model", "dataset", "res", "batch", "dtype", "workdir"} <= set(run["options"])
    assert run["source"]["untrained"] is False
    # top-5 means nothing with 3 classes: null here, as evaluate says
    assert run["final_metrics"]["eval_top5"] is None


# --- random:ARCH ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """``random:Ti/16`` built once for this module, in its own VITZOO_HOME."""
    import os

    from vitzoo.download.resolve import resolve_checkpoint

    home = tmp_path_factory.mktemp("untrained_home")
    old = os.environ.get("VITZOO_HOME")
    os.environ["VITZOO_HOME"] = str(home)
    try:
        return resolve_checkpoint("random:Ti/16")
    finally:
        if old is None:
            del os.environ["VITZOO_HOME"]
        else:
            os.environ["VITZOO_HOME"] = old


def test_random_arch_is_flax_init_with_seed_zero_in_the_release_layout(untrained):
    """The file equals Flax's own ``init`` of the Ti/16 model at seed 0 (rebuilt here),
    converted to the release layout; its sidecar says untrained."""
    import jax
    import jax.numpy as jnp

    from vitzoo.models import build_model, get_config, infer_config
    from vitzoo.weights.release import load_npz, release_to_params

    flat = load_npz(untrained)
    config, info = infer_config(flat)
    assert (config.name, info["num_classes"], info["resolution"]) == ("Ti/16", 1000, 224)
    model = build_model(get_config("Ti/16"), 1000)
    expected = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False)["params"]
    got = release_to_params(flat, config)
    leaves = jax.tree_util.tree_leaves_with_path(expected)
    assert len(leaves) == len(jax.tree_util.tree_leaves(got))
    for path, leaf in leaves:
        node = got
        for key in path:
            node = node[key.key]
        np.testing.assert_allclose(np.asarray(node), np.asarray(leaf), rtol=1e-6, atol=1e-7)
    sidecar = json.loads(untrained.with_name(untrained.name + ".json").read_text())
    assert sidecar["untrained"] is True and sidecar["seed"] == 0


def test_untrained_is_labelled_in_run_json_probe_exports_and_predict(untrained, task, capsys,
                                                                   tmp_path):
    data, _ = task
    ckpt = str(untrained)  # the built file; random:Ti/16 resolves to it (tested above)
    work = tmp_path / "head"
    code, _, err = run_cli(capsys, "finetune", ckpt, "--dataset", str(data), "--head-only",
                           "--res", "32", "--workdir", str(work), "--no-register")
    assert code == 0, err
    assert json.loads((work / "run.json").read_text())["source"]["untrained"] is True

    code, out, err = run_cli(capsys, "export", ckpt, "--to", "timm", "--out", str(tmp_path / "t"))
    assert code == 0, err
    assert json.loads((tmp_path / "t" / "config.json").read_text())["vitzoo"]["untrained"] is True
    code, out, err = run_cli(capsys, "export", ckpt, "--to", "npz", "--out", str(tmp_path / "n"))
    assert code == 0, err
    from vitzoo.weights.untrained import is_untrained

    assert is_untrained(tmp_path / "n" / "model.npz")
    code, out, err = run_cli(capsys, "export", str(work), "--to", "timm", "--out", str(tmp_path / "r"))
    assert code == 0, err  # the head-only run: the backbone is still random
    note = json.loads((tmp_path / "r" / "config.json").read_text())["vitzoo"]
    assert note["untrained"] is True and "random" in note["untrained_because"]
    code, out, err = run_cli(capsys, "predict", ckpt, str(next(data.rglob("*.png"))), "--top-k", "2")
    assert code == 0, err
    assert "untrained" in out and "chance" in out


def test_random_spelling_errors_are_one_line(capsys):
    for argument, says in (("random:", "names no architecture"), ("random:Q/99", "Q/99")):
        code, _, err = run_cli(capsys, "predict", argument, "x.png")
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


# --- one unit rule ----------------------------------------------------------------------


def test_text_percent_is_the_one_rule():
    from vitzoo.text import percent

    assert [percent(v) for v in (0.8396, 1, 0.0)] == ["84.0%", "100.0%", "0.0%"]
    assert percent(0.8396, 2) == "83.96%" and percent(0.85588, None) == "85.588%"
    assert percent(None) == "?" and percent(float("nan"), unknown="n/a") == "n/a"


def test_evaluate_and_predict_tables_say_percentages_json_fractions(task, capsys):
    data, ckpt = task
    code, out, err = run_cli(capsys, "evaluate", ckpt, "--dataset", str(data), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert 0.0 <= report["top1"] <= 1.0 and report["top5"] is None  # 3 classes
    code, out, err = run_cli(capsys, "evaluate", ckpt, "--dataset", str(data))
    assert code == 0, err
    assert f"{100 * report['top1']:.2f}%" in out and "n/a" in out

    image = str(next(data.rglob("*.png")))
    code, out, err = run_cli(capsys, "predict", ckpt, image, "--format", "json")
    assert code == 0, err
    probabilities = [e["probability"] for e in json.loads(out)[0]["top_k"]]
    code, out, err = run_cli(capsys, "predict", ckpt, image)
    assert code == 0, err
    for p in probabilities:
        assert f"{100 * p:.2f}%" in out
    assert not re.search(r"\b0\.\d{4}\b", out)  # no fraction printed for a person


def test_list_table_says_percentages(capsys, monkeypatch):
    """The embedded catalog's published fractions: JSON fractions, the table percentages
    (show: tests/catalog/test_measured.py)."""
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run_cli(capsys, "list", "--where", "adapt_final_test > 0", "--columns",
                           "checkpoint,adapt_final_test", "--format", "json", "--limit", "3")
    rows = json.loads(out)
    if not rows:
        pytest.skip("the embedded catalog has no adapt_final_test")
    code, out, err = run_cli(capsys, "list", "--where", "adapt_final_test > 0", "--columns",
                             "checkpoint,adapt_final_test", "--limit", "3")
    assert code == 0, err
    for row in rows:
        assert f"{100 * row['adapt_final_test']:.2f}%" in out
    assert not re.search(r"\b0\.\d{4}\b", out)


def test_probe_plot_axis_reads_percent(tmp_path):
    """The probe plot's score axis ticks are percentages (the zoo plot's already are)."""
    import matplotlib

    matplotlib.use("Agg")
    from vitzoo.probe import report
    from vitzoo.probe.run import CandidateResult

    results = [CandidateResult(f"c{i}", "Ti/16") for i in range(2)]
    for r, (acc, speed) in zip(results, ((0.5, 100.0), (0.75, 50.0)), strict=True):
        r.linear_accuracy, r.img_per_sec = acc, speed
        r.scores = {"choose": {"linear": {"accuracy": acc}}, "report": {"linear": {"accuracy": acc}}}
    import matplotlib.pyplot as plt

    seen = {}
    real = plt.Figure.savefig

    def capture(fig, *args, **kwargs):
        fig.canvas.draw()
        seen["ticks"] = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        return real(fig, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(plt.Figure, "savefig", capture)
    try:
        report.plot(results, "linear_accuracy", tmp_path / "p.png")
    finally:
        mp.undo()
    assert seen["ticks"] and all(t.endswith("%") for t in seen["ticks"] if t), seen


# --- doctor and offline -------------------------------------------------------------------


def test_doctor_devices_are_the_ones_finetune_configures():
    """doctor's device line equals what runtime.configure (finetune's first call) gives JAX,
    in a fresh process where XLA_FLAGS is unset (2+ physical cores: more than one device)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = ("from vitzoo import doctor, runtime; import jax\n"
            "lines = doctor.accelerators()\n"
            "line = next(l for l in lines if l.item == 'devices')\n"
            "print(line.value.split(' x ')[0], jax.local_device_count(),"
            " runtime.cpu_info().physical_cores)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    shown, used, cores = (int(v) for v in out[-3:])
    assert shown == used == max(cores, 1)


def test_offline_reason_is_said_once_per_probe(task, capsys, monkeypatch):
    """Three uncached catalog candidates offline (GCS's host name does not resolve): the
    failure is said for the first only; the others are skipped in one short line."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://vitzoo-offline.invalid:9")
    data, ckpt = task
    code, out, err = run_cli(capsys, "probe", "--dataset", str(data), "--candidates",
                             f"{ckpt},Ti/16,S/16,B/16", "--shots", "1", "--seeds", "1",
                             "--res", "32", "--format", "json")
    assert code == 0, err
    skipped = [c["skipped"] for c in json.loads(out)["candidates"] if c["skipped"]]
    assert len(skipped) == 3
    assert err.count("cannot reach") == 1, err  # the resolver's progress, first candidate only
    assert sum("not in the cache, and offline" in s for s in skipped) == 2


def test_evaluate_refuses_a_split_an_image_folder_does_not_have(task, capsys):
    """Found by benchmarks/bad_inputs.py: ``--eval-split bogus`` scored the carved split."""
    data, ckpt = task
    code, _, err = run_cli(capsys, "evaluate", ckpt, "--dataset", str(data), "--eval-split", "bogus")
    assert code == 2 and "not a split of an image folder" in err and len(err.strip().splitlines()) == 1


def test_readme_architecture_table_is_one_table_without_duplicate_rows():
    from tests.support import REPO_ROOT

    section = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("## Architecture", 1)[1]
    section = section.split("\n## ", 1)[0]
    lines = section.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("| ")]
    assert rows == list(range(rows[0], rows[-1] + 1)), "a blank line splits the table"
    paths = [lines[i].split("|")[1].strip() for i in rows[2:]]
    assert len(paths) == len(set(paths)), sorted(p for p in paths if paths.count(p) > 1)
    named = [p.strip("` ") for cell in paths for p in cell.split(",")]
    assert len(named) == len(set(named)), sorted(p for p in named if named.count(p) > 1)
