"""The catalog commands end to end: exact rows, formats, errors, start-up cost."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run

VITZOO = [sys.executable, "-m", "vitzoo"]
PETS_BEST = ("R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"
             "--oxford_iiit_pet-steps_0k-lr_0.003-res_224")


def run_json(capsys, *args: str):
    code, out, err = run(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_pretrained_view_gives_the_twelve_b16_medium1_checkpoints(capsys):
    rows = run_json(capsys, "list", "--arch", "B/16", "--aug", "medium1", "--pretrained")
    assert len(rows) == 12
    assert {(r["ds"], r["wd"], r["do"]) for r in rows} == {
        (ds, wd, do) for ds in ("i1k", "i21k", "i21k_30") for wd in (0.03, 0.1) for do in (0.0, 0.1)}
    assert {r["finetunes"] for r in rows} == {68}
    assert all(r["checkpoint"].startswith("B_16-") for r in rows)


def test_every_filter_together(capsys):
    rows = run_json(capsys, "list", "--arch", "B_16", "--arch", "ViT-S_16", "--ds", "imagenet21k",
                    "--aug", "none", "--wd", "0.1", "--do", "0.0", "--sd", "0.0", "--adapt-ds",
                    "cifar100", "--res", "384", "--adapt-lr", "0.01", "--steps", "2500",
                    "--collection", "augreg")
    assert sorted(r["checkpoint"] for r in rows) == [
        "B_16-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0--cifar100-steps_2k-lr_0.01-res_384",
        "S_16-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0--cifar100-steps_2k-lr_0.01-res_384",
    ]


def test_where_sort_limit_columns(capsys):
    rows = run_json(capsys, "list", "--where", "adapt_final_val > 0.96 and ds == 'i21k'",
                    "--sort", "adapt_final_val", "--desc", "--limit", "3",
                    "--columns", "checkpoint,adapt_final_val")
    assert [r["adapt_final_val"] for r in rows] == [0.967391, 0.967391, 0.964674]
    assert set(rows[0]) == {"checkpoint", "adapt_final_val"}
    everything = run_json(capsys, "list", "--where", "adapt_final_val > 0.96")
    assert len(everything) == 6


def test_csv_and_jsonl_formats(capsys):
    code, out, _ = run(capsys, "list", "--arch", "B/8", "--adapt-ds", "imagenet2012",
                       "--format", "csv", "--columns", "all", "--where", "notnull(adapt_final_test)")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["adapt_final_test"] == "0.85578"
    assert rows[0]["final_val"] == ""  # unknown is empty in CSV, never nan
    header = out.splitlines()[0].split(",")
    assert header[:21] == ["name", "ds", "epochs", "lr", "aug", "wd", "do", "sd", "best_val",
                           "final_val", "final_test", "adapt_ds", "adapt_lr", "adapt_steps",
                           "adapt_resolution", "adapt_final_val", "adapt_final_test", "params",
                           "infer_samples_per_sec", "filename", "adapt_filename"]
    code, out, _ = run(capsys, "list", "--arch", "Ti/16", "--limit", "4", "--format", "jsonl")
    lines = out.splitlines()
    assert len(lines) == 4 and all(json.loads(line)["name"] == "Ti/16" for line in lines)
    assert json.loads(lines[0])["adapt_final_val"] is None


def test_collections_and_legacy_rows(capsys):
    rows = run_json(capsys, "list", "--collection", "imagenet21k+imagenet2012", "--columns", "all")
    assert rows and all(r["url"].startswith("gs://vit_models/imagenet21k/") for r in rows if r["url"])
    names = {r["checkpoint"] for r in rows}
    assert "imagenet21k+imagenet2012/ViT-B_16-224" in names


def test_long_table_is_cut_with_a_hint(capsys):
    code, out, _ = run(capsys, "list", "--arch", "L/16")
    assert code == 0 and "showing 50" in out and "--limit" in out


def test_show_gives_fields_sources_finetunes_and_downloads(capsys):
    details = run_json(capsys, "show", "B/16")
    assert details["checkpoint"] == "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
    fields = {f["field"]: f for f in details["fields"]}
    assert fields["aug"]["value"] == "medium1"
    assert fields["final_val"] == {"field": "final_val", "value": None, "source": "unknown"}
    assert fields["upstream_hf_repo"]["source"].startswith("timm")
    assert details["architecture"]["params_k1000_224"] == "86567656"
    assert details["architecture"]["tokens_384"] == "577"
    by_ds = {f["adapt_ds"]: f for f in details["finetunes"]}
    assert by_ds["imagenet2012"]["count"] == 4 and by_ds["oxford_iiit_pet"]["count"] == 16
    assert any(d["location"].startswith("gs://vit_models/augreg/B_16-") for d in details["downloads"])
    assert any(d["location"].startswith("hf://timm/") for d in details["downloads"])
    code, out, _ = run(capsys, "show", "B/16")
    assert code == 0 and "release grid" in out and "download from" in out


def test_show_flags_uncertain_names(capsys):
    details = run_json(capsys, "show", "S_16-i21k-30ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0")
    assert any(c.startswith("unconfirmed_name: the filename spelling is reconstructed")
               for c in details["caveats"])
    assert not any("per_arch_throughput" in c for c in details["caveats"])  # its fine-tunes' only
    best = run_json(capsys, "show", PETS_BEST)
    fields = {f["field"]: f for f in best["fields"]}
    assert fields["adapt_final_val"]["value"] == 0.967391
    assert "vit_jax_augreg.ipynb" in fields["adapt_final_val"]["source"]


def test_recommend_reproduces_the_readme_table(capsys):
    rows = run_json(capsys, "recommend")
    assert [r["name"] for r in rows] == ["L/16", "B/16", "S/16", "R50+L/32", "R26+S/32", "Ti/16",
                                         "B/32", "S/32", "R+Ti/16", "B/8"]
    assert [r["aug"] for r in rows] == ["strong1", "medium1", "light1", "medium1", "light1", "none",
                                        "light1", "none", "none", "medium2"]
    code, out, _ = run(capsys, "recommend")
    assert code == 0 and "published recommendation" in out


def test_recommend_for_a_dataset_uses_validation(capsys):
    rows = run_json(capsys, "recommend", "--arch", "R26+S/32", "--adapt-ds", "oxford_iiit_pet")
    assert len(rows) == 1
    assert rows[0]["adapt_final_val"] == 0.967391
    assert rows[0]["checkpoint"].endswith("res_224")  # the cheaper of the two 0.967391 ties
    assert "16 of 1,344" in rows[0]["basis"]
    _, out, _ = run(capsys, "recommend", "--help")
    assert "never used to choose" in " ".join(out.split())


def test_recommend_throughput_budget_and_pareto(capsys):
    rows = run_json(capsys, "recommend", "--min-throughput", "2000", "--res", "384")
    assert {r["name"] for r in rows} == {"S/32", "R+Ti/16"}
    assert all(r["infer_samples_per_sec"] >= 2000 for r in rows)
    front = run_json(capsys, "recommend", "--pareto", "--adapt-ds", "imagenet2012", "--metric",
                     "adapt_final_test")
    speeds = [r["infer_samples_per_sec"] for r in front]
    accs = [r["adapt_final_test"] for r in front]
    assert speeds == sorted(speeds, reverse=True) and accs == sorted(accs)
    assert front[-1]["name"] == "R50+L/32"  # the most accurate published ImageNet fine-tune


def test_index_build_info_and_precedence(capsys, tmp_path, monkeypatch):
    code, out, err = run(capsys, "index", "build", "--source", "embedded")
    assert code == 0 and "built:" in out
    info = run_json(capsys, "index", "info")
    assert info["origin"] == "user" and info["rows"] > 51_509
    code, out, err = run(capsys, "index", "build", "--source", "embedded")
    assert code == 0 and "unchanged" in out and "up to date" in err
    monkeypatch.setenv("VITZOO_INDEX", str(tmp_path / "missing"))
    code, out, err = run(capsys, "index", "info")
    assert code == 2 and "VITZOO_INDEX" in err
    code, out, err = run(capsys, "list", "--index", str(REPO_ROOT / "index"), "--limit", "1",
                         "--format", "csv")
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = run(capsys, "index", "info", "--index", str(REPO_ROOT / "index"))
    assert code == 0 and "embedded" in out and "missing:" in out


@pytest.mark.parametrize(("args", "fragment"), [
    (["list", "--arch", "Q/99"], "unknown architecture 'Q/99'. Known architectures: Ti/16"),
    (["list", "--arch", "vit_base_pach16_224"], "Did you mean 'vit_base_patch16'?"),
    (["list", "--aug", "medum1"], "unknown augmentation 'medum1'. Did you mean 'medium1'?"),
    (["list", "--res", "300"], "no checkpoint has --res 300. Valid values: 224, 384"),
    (["list", "--steps", "123"], "no checkpoint has --steps 123. Valid values: 500, 2500, 10000, 20000"),
    (["list", "--wd", "0.5"], "no checkpoint has --wd 0.5. Valid values: 0.03, 0.1"),
    (["list", "--limit", "0"], "--limit must be at least 1, got 0"),
    (["list", "--sort", "adapt_final_vall"], "Did you mean 'adapt_final_val'?"),
    (["list", "--format", "yaml"], "'yaml' is not one of 'table', 'csv', 'json', 'jsonl'"),
    (["show", "B/16", "--format", "xml"], "invalid value for '--format': 'xml'"),
    (["show", "X/99"], "unknown architecture 'X/99'. Known architectures: Ti/16"),
    (["show", "vit_giant_patch14_224"], "unknown architecture 'vit_giant_patch14_224'"),
    (["show", "b16"], "unknown checkpoint or architecture 'b16'. Did you mean 'B/16'?"),
    (["show", "B_16-i21k-300ep-lr_0.001-aug_medum1-wd_0.1-do_0.0-sd_0.0"],
     "Did you mean 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0'?"),
    (["show", "S_16-i1k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0--cifar100-steps_0k-lr_0.01-res_385"],
     "is not an AugReg checkpoint: no fine-tune at res_385 (released: 224, 384)"),
    (["recommend", "--adapt-ds", "cifar100"],
     "cannot recommend: adapt_final_val is unknown for all 12,320 cifar100 fine-tunes"),
    (["recommend", "--res", "300"], "no checkpoint has --res 300"),
    (["recommend", "--pareto", "--metric", "adapt_final_vall"], "Did you mean 'adapt_final_val'?"),
    (["list", "--aug", "medium3"], "unknown augmentation 'medium3'"),
    (["list", "--ds", "jft"], "unknown pre-training dataset 'jft'"),
    (["list", "--adapt-ds", "mnist"], "unknown fine-tuning dataset 'mnist'"),
    (["list", "--collection", "nope"], "unknown collection 'nope'"),
    (["list", "--wd", "lots"], "--wd expects a number, got 'lots'"),
    (["list", "--format", "xml"], "invalid value for '--format': 'xml'"),
    (["list", "--sort", "speed"], "cannot sort by unknown column 'speed'"),
    (["list", "--columns", "name,speed"], "unknown column(s) speed"),
    (["list", "--limit", "-1"], "--limit must be at least 1"),
    (["list", "--where", "final_val >"], "cannot parse --where"),
    (["list", "--where", "speed > 3"], "unknown column 'speed'"),
    (["list", "--where", "__import__('os')"], "unsupported call"),
    (["list", "--where", "final_val.real > 1"], "unsupported syntax 'final_val.real'"),
    (["list", "--where", "final_val"], "is not a condition"),
    (["show", "no-such-model"], "unknown checkpoint 'no-such-model'"),
    (["show", "S_16-i1k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0--cifar100-steps_0k-lr_0.5-res_224"],
     "follows the AugReg naming but is not in this catalog"),
    (["recommend", "--arch", "B/8", "--min-throughput", "1"], "no candidate checkpoints"),
    (["recommend", "--pareto", "--metric", "best_val"], "no rows have both best_val"),
])
def test_user_errors_are_one_line(capsys, args, fragment):
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and fragment in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_real_process_error_and_exit_code():
    result = subprocess.run([*VITZOO, "list", "--arch", "Q/99"], capture_output=True, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown architecture 'Q/99'")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_catalog_commands_import_no_heavy_libraries(tmp_path):
    from tests.support.ckpt_factory import write_tiny_vit

    npz = write_tiny_vit(tmp_path / "final.npz")  # `show PATH` reads the file with numpy only
    probe = (
        "import json, sys\n"
        "from vitzoo.cli import main\n"
        "for args in (['list', '--arch', 'B/16', '--format', 'csv', '--limit', '2'],"
        " ['show', 'B/16', '--format', 'json'], ['recommend', '--format', 'json'],"
        " ['index', 'info', '--format', 'json'], ['list', '--distinct', 'name', '--format', 'csv'],"
        " ['recommend', '--by', 'imagenet_r_top1', '--format', 'json'],"
        " ['recommend', '--pareto', '--format', 'json'], ['show', sys.argv[1], '--format', 'json'],"
        " ['list', '--collection', 'timm-families', '--ds', 'lvd142m', '--format', 'csv'],"
        " ['show', 'vit_small_patch14_dinov2.lvd142m', '--format', 'json']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "heavy = [m for m in ('jax', 'flax', 'tensorflow', 'pandas', 'torch') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + json.dumps(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(npz)], capture_output=True,
                            text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stderr.rsplit("HEAVY=", 1)[1] == "[]"


def test_registered_runs_are_listed_and_resolvable(capsys, tmp_path):
    from vitzoo.catalog.api import find_checkpoint
    from vitzoo.errors import VitzooError
    from vitzoo.runs.registry import register_run

    npz = tmp_path / "final.npz"
    npz.write_bytes(b"PK\x03\x04")
    register_run("pets-b16", npz, {"name": "B/16", "adapt_ds": "oxford_iiit_pet",
                                   "adapt_resolution": 224, "adapt_final_test": 0.91,
                                   "filename": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
                                   "workdir": str(tmp_path), "not_a_column": 1})
    rows = run_json(capsys, "list", "--local", "--columns", "checkpoint,name,adapt_ds,adapt_final_test")
    assert rows == [{"checkpoint": "pets-b16", "name": "B/16", "adapt_ds": "oxford_iiit_pet",
                     "adapt_final_test": 0.91}]
    info = find_checkpoint("pets-b16")
    assert info.kind == "local" and info.local_path == str(npz.resolve()) and info.url is None
    register_run("pets-b16", npz, {"name": "B/16", "adapt_final_test": 0.93})  # replaced, not added
    assert [r["adapt_final_test"] for r in run_json(capsys, "list", "--local")] == [0.93]
    with pytest.raises(VitzooError, match="unsafe run name"):
        register_run("../escape", npz, {})


def test_version(capsys):
    from vitzoo import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"vitzoo {__version__}"
