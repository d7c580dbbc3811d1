"""The catalog side of the second first-hour pass: each friction, as a new user met it."""

from __future__ import annotations

import csv
import fnmatch
import json
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run
from tests.support.cli_helpers import table_at
from vitzoo.catalog.api import find_checkpoint

INDEX = str(REPO_ROOT / "index")
B16_I21K = "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"


# --- --where evaluation errors ---------------------------------------------------------------

@pytest.mark.parametrize(("expression", "says"), [
    ("1/0 > 0", "division by zero in '1/0'"),
    ("adapt_final_val / 0 > 1", "division by zero in 'adapt_final_val / 0'"),
    ("abs(name) > 0", "'abs(name)' does arithmetic on the text"),
    ("name + 1 > 0", "'name + 1' does arithmetic on the text"),
    ("-name > 0", "'-name' does arithmetic on the text"),
    ("name > 1", "cannot compare"),
])
def test_where_evaluation_errors_are_one_line_naming_the_expression(capsys, expression, says):
    code, out, err = run(capsys, "list", "--where", expression, "--index", INDEX)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: --where {expression!r}: ") and says in err


def test_where_arithmetic_on_numbers_still_works(capsys):
    code, out, err = run(capsys, "list", "--where", "abs(-adapt_final_val) / 2 > 0.48",
                         "--columns", "adapt_final_val", "--format", "json", "--index", INDEX)
    assert code == 0, err
    assert json.loads(out) and all(r["adapt_final_val"] / 2 > 0.48 for r in json.loads(out))


# --- column lists in errors name 'available' -----------------------------------------------------

@pytest.mark.parametrize("args", [
    ("--columns", "checkpoint,nope"), ("--sort", "nope"), ("--where", "nope > 1"),
    ("--distinct", "nope"), ("--pretrained", "--columns", "nope"),
])
def test_column_lists_in_errors_name_available(capsys, args):
    code, _, err = run(capsys, "list", *args, "--index", INDEX)
    assert code == 2 and "columns are:" in err.lower()
    assert "available" in err.lower().split("columns are:", 1)[1].strip().rstrip(".").split(", ")


# --- exact names select exactly their file ------------------------------------------------------

@pytest.mark.parametrize("name", [
    "vit_base_patch16_224.augreg_in21k",  # timm, pre-trained
    "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",  # Hugging Face, fine-tuned
    "hf-hub:timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
    B16_I21K,  # release stem, pre-trained
    f"{B16_I21K}--imagenet2012-steps_20k-lr_0.01-res_224",  # release stem, fine-tuned
    "sam/ViT-B_16",
])
def test_an_exact_name_selects_the_checkpoint_show_resolves(capsys, name):
    code, out, err = run(capsys, "list", "--name", name, "--columns", "checkpoint", "--format",
                         "json", "--index", INDEX)
    assert code == 0, err
    info = find_checkpoint(name, INDEX)
    expected = info.filename if info.kind != "pretrained" or info.collection == "augreg" else (
        f"{info.collection}/{info.filename}")
    assert [r["checkpoint"] for r in json.loads(out)] == [expected]


def test_a_pretrained_name_says_how_to_list_its_finetunes(capsys):
    code, _, err = run(capsys, "list", "--name", "vit_base_patch16_224.augreg_in21k", "--format",
                       "csv", "--index", INDEX)
    assert code == 0 and f"filename == \"{B16_I21K}\"" in err
    code, out, _ = run(capsys, "list", "--where", f'filename == "{B16_I21K}"', "--format", "json",
                       "--index", INDEX)
    assert len(json.loads(out)) == 68


def test_partial_names_and_globs_still_match_many(capsys):
    # the other families' files answer to their timm names (read from their source with csv)
    lines = (REPO_ROOT / "index" / "sources" / "timm_families.csv").read_text().splitlines()[1:]
    families = sum(fnmatch.fnmatch(r["timm_name"], "vit_base_patch16*") for r in csv.DictReader(lines))
    assert families == 41
    for pattern, count in (("augreg_in21k_ft_in1k", 19), ("vit_base_patch16*", 70 + families)):
        code, out, _ = run(capsys, "list", "--name", pattern, "--format", "json", "--index", INDEX)
        assert code == 0 and len(json.loads(out)) == count, pattern


# --- tables keep what was asked for ---------------------------------------------------------------

def test_list_columns_keeps_an_asked_column_unknown_in_every_row(capsys, monkeypatch):
    header, body, out = table_at(capsys, monkeypatch, 80, "list", "--arch", "B/16", "--limit", "3",
                                 "--columns", "checkpoint,md5,adapt_final_val", "--index", INDEX)
    assert "md5" in " ".join(header) and "final_val" in " ".join(header)
    assert all(line.rstrip().endswith("?") for line in body) and "not shown" not in out


def test_pareto_prints_one_table_per_dataset_with_throughput_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run(capsys, "recommend", "--pareto", "--index", INDEX)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    titles = [line.strip() for line in out.splitlines() if ": Pareto front of " in line]
    assert [t.split(":")[0] for t in titles] == ["imagenet2012", "oxford_iiit_pet"]
    headers = [line for line in out.splitlines() if line.lstrip().startswith("infer_samples_")
               or " infer_samples_ " in f" {line} "]
    assert len(headers) == 2 and all("adapt_" in h for h in headers)


def test_recommend_notes_say_what_they_count(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, err = run(capsys, "recommend", "--index", INDEX)
    assert code == 0, err
    assert "final_val known for 0 of the 28 i21k pre-trained checkpoints of its architecture" in out
    assert "final_val known for 1 of the 28 i21k pre-trained checkpoints of its architecture" in out


# --- show PATH ----------------------------------------------------------------------------------------

def test_show_a_checkpoint_file(capsys, tmp_path):
    from tests.support.ckpt_factory import write_tiny_vit

    path = write_tiny_vit(tmp_path / "final.npz")
    code, out, err = run(capsys, "show", str(path), "--format", "json", "--index", INDEX)
    assert code == 0, err
    details = json.loads(out)
    facts = {f["field"]: f["value"] for f in details["fields"]}
    assert details["kind"] == "file" and facts["path"] == str(path.resolve())
    assert facts["size_bytes"] == path.stat().st_size and facts["num_classes"] == 10
    import numpy as np

    with np.load(path) as arrays:
        assert facts["params"] == sum(arrays[k].size for k in arrays.files)
    code, out, err = run(capsys, "show", str(path), "--index", INDEX)
    assert code == 0 and "not in the catalog: a file of your own" in out


def test_show_a_registered_runs_file_gives_its_catalog_entry(capsys, tmp_path):
    from tests.support.ckpt_factory import write_tiny_vit
    from vitzoo.runs.registry import register_run

    path = write_tiny_vit(tmp_path / "run" / "final.npz")
    register_run("my-run", path, {"name": "B/16", "adapt_ds": "cifar10", "adapt_final_val": 0.5})
    code, out, err = run(capsys, "show", str(path), "--format", "json", "--index", INDEX)
    assert code == 0, err
    details = json.loads(out)
    assert (details["kind"], details["checkpoint"]) == ("local", "my-run")
    assert {f["field"] for f in details["file"]} >= {"path", "params", "num_classes"}


def test_show_a_missing_path_is_one_line(capsys):
    code, out, err = run(capsys, "show", "./no/such/final.npz", "--index", INDEX)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no such checkpoint file './no/such/final.npz'" in err


# --- cache verify, plot --local ---------------------------------------------------------------------

def test_cache_verify_on_an_empty_cache_says_what_it_checked(capsys):
    code, out, err = run(capsys, "cache", "verify")
    assert code == 0, err
    assert out.startswith("checked 0 files: the cache (") and "holds no complete checkpoint" in out


def _register(tmp_path: Path, name: str, accuracy: float, img_per_sec: float | None) -> None:
    from tests.support.ckpt_factory import write_tiny_vit
    from vitzoo.runs.registry import register_run

    workdir = tmp_path / name
    path = write_tiny_vit(workdir / "final.npz")
    if img_per_sec is not None:
        (workdir / "run.json").write_text(json.dumps({"final_metrics": {"img_per_sec": img_per_sec}}))
    register_run(name, path, {"name": "B/16", "adapt_ds": "cifar10", "adapt_resolution": 32,
                              "adapt_final_val": accuracy})


def test_plot_local_draws_your_runs_against_their_measured_speed(capsys, tmp_path):
    code, _, err = run(capsys, "plot", "--local", "--out", str(tmp_path / "a.png"))
    assert code == 2 and "no registered runs to plot" in err and "vitzoo finetune" in err
    _register(tmp_path, "fast", 0.5, 100.0)
    _register(tmp_path, "slow", 0.7, 50.0)
    _register(tmp_path, "unknown", 0.6, None)
    from vitzoo.catalog.api import load_table
    from vitzoo.catalog.query import Filters
    from vitzoo.plot import RUN_THROUGHPUT, scatter_data

    data = scatter_data(load_table(INDEX), filters=Filters(), local_only=True)
    assert data.x == RUN_THROUGHPUT
    points = {r["checkpoint"]: (r[RUN_THROUGHPUT], r["adapt_final_val"])
              for r in data.points.to_pylist()}
    assert points == {"fast": (100.0, 0.5), "slow": (50.0, 0.7)}
    code, out, err = run(capsys, "plot", "--local", "--out", str(tmp_path / "b.png"))
    assert code == 0, err
    assert out.strip() == str(tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size
    assert "2 points" in err and "1 of 3 matching rows lack" in err
    code, _, err = run(capsys, "plot", "--local", "--y", "adapt_final_test", "--out",
                       str(tmp_path / "c.png"))
    assert code == 2 and "3 lack adapt_final_test, 1 lack train_img_per_sec" in err
    assert "index.csv" not in err


def test_show_counts_the_finetunes_of_this_file_not_of_its_namesakes(capsys):
    """Older collections repeat stems: sam/ViT-B_32 has no fine-tunes; imagenet21k/ViT-B_32 has
    the one in imagenet21k+imagenet2012."""
    for name, expected in (("sam/ViT-B_32", []), ("imagenet21k/ViT-B_32", [("imagenet2012", 1)])):
        code, out, err = run(capsys, "show", name, "--format", "json", "--index", INDEX)
        assert code == 0, err
        assert [(f["adapt_ds"], f["count"]) for f in json.loads(out)["finetunes"]] == expected
