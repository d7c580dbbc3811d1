"""timm's measured accuracies in the catalog: on the rows timm measured, nowhere else.

The oracle reads the committed results file and the timm name -> file mapping with the
csv module (not vitzoo's loader) and divides the percentages itself.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run
from vitzoo.catalog import api
from vitzoo.catalog.measured import apply_measured

SOURCES = REPO_ROOT / "index" / "sources"
SETS = ("imagenet", "imagenet_real", "imagenetv2_mf", "sketch", "imagenet_a", "imagenet_r")
ACCURACIES = tuple(f"{s}_{k}" for s in SETS for k in ("top1", "top5"))
MEASURED = (*ACCURACIES, "measured_resolution", "measured_crop_pct", "measured_source")
#: The older collections' files timm copied (timm's default_cfgs url), typed by hand.
LEGACY_FILES = {"vit_base_patch16_224.sam_in1k": "sam/ViT-B_16",
                "vit_base_patch32_224.sam_in1k": "sam/ViT-B_32"}


def _reference() -> dict[str, dict[str, str]]:
    lines = (SOURCES / "timm_results.csv").read_text(encoding="utf-8").splitlines()
    return {r["timm_name"]: r for r in csv.DictReader(line for line in lines if not line.startswith("#"))}


def _family_reference() -> dict[str, dict[str, str]]:
    lines = (SOURCES / "timm_results_families.csv").read_text(encoding="utf-8").splitlines()
    return {r["timm_name"]: r for r in csv.DictReader(lines[1:])}


def _measured_by_checkpoint() -> dict[str, dict[str, str]]:
    """Catalog checkpoint -> its measured line: Google's files by the mapping, the other
    families' files under their own timm names."""
    reference = _reference()
    return {**{c: reference[n] for n, c in _expected_files().items()}, **_family_reference()}


def _expected_files() -> dict[str, str]:
    """timm name -> catalog checkpoint for every measured name that is a release file."""
    with (SOURCES / "timm_checkpoints.csv").open(newline="") as handle:
        augreg = {r["timm_name"]: r["augreg_filename"] for r in csv.DictReader(handle)
                  if "--" in r["augreg_filename"]}
    return {n: f for n, f in {**augreg, **LEGACY_FILES}.items() if n in _reference()}


@pytest.fixture(scope="module")
def catalog():
    return api.load_dataframe(str(REPO_ROOT / "index"))


def test_the_committed_file_cites_its_public_source():
    first = (SOURCES / "timm_results.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and "huggingface/pytorch-image-models" in first
    assert "aa4b5850c1543fa488abf260f18390eda46cf85d" in first
    assert "../shared" not in first and len(_reference()) == 34


def test_every_value_is_the_reference_over_100_on_its_row_and_null_elsewhere(catalog):
    reference, files = _reference(), _expected_files()
    assert len(files) == 27  # 25 AugReg fine-tunes + 2 SAM files; the other 7 have no release file
    by_checkpoint = {row["checkpoint"]: row for row in catalog.to_dict("records")}
    for name, checkpoint in files.items():
        row, measured = by_checkpoint[checkpoint], reference[name]
        for column in ACCURACIES:
            assert row[column] == pytest.approx(float(measured[column]) / 100, abs=1e-12), (name, column)
        assert row["measured_resolution"] == int(measured["img_size"])
        assert row["measured_crop_pct"] == float(measured["crop_pct"])
        assert name in row["measured_source"] and "aa4b5850c1543fa488abf260f18390eda46cf85d" in row[
            "measured_source"]
        if row["adapt_resolution"] is not None and row["adapt_resolution"] == row["adapt_resolution"]:
            assert row["adapt_resolution"] == int(measured["img_size"])
    google = catalog[catalog["family"].isna()]  # the other families: test_families_catalog.py
    others = google[~google["checkpoint"].isin(list(files.values()))]
    assert int(others[list(MEASURED)].notna().sum().sum()) == 0
    assert int(google["imagenet_top1"].notna().sum()) == len(files)


def test_names_without_a_row_are_reported_with_the_reason():
    families = _family_reference()
    result = apply_measured([], SOURCES)  # no rows at all: every name is reported, none dropped
    assert set(result.unmapped) == set(_reference()) | set(families)
    manifest = json.loads((REPO_ROOT / "index" / (REPO_ROOT / "index" / "CURRENT").read_text().strip()
                           / "manifest.json").read_text())
    # every family name is a row of its own (timm_families.csv); 27 of Google's 34 have one
    assert manifest["measured"]["rows"] == 27 + len(families) == 77
    assert manifest["measured"]["names"] == 34 + len(families)
    assert set(manifest["measured"]["unmapped"]) == set(_reference()) - set(_expected_files())
    assert all(manifest["measured"]["unmapped"].values())


def test_a_384_figure_never_lands_on_a_224_row(tmp_path):
    """Plant the bug: the mapping says the 384 px timm name is the 224 px file."""
    sources = tmp_path / "sources"
    shutil.copytree(SOURCES, sources)
    path = sources / "timm_checkpoints.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_name = {r["timm_name"]: r for r in rows}
    at_224 = by_name["vit_base_patch16_224.augreg_in21k_ft_in1k"]["augreg_filename"]
    by_name["vit_base_patch16_384.augreg_in21k_ft_in1k"]["augreg_filename"] = at_224
    del by_name["vit_base_patch16_224.augreg_in21k_ft_in1k"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(by_name.values())
    catalog_rows = [{"checkpoint": at_224, "adapt_resolution": 224}]
    result = apply_measured(catalog_rows, sources)
    assert "384 px" in result.unmapped["vit_base_patch16_384.augreg_in21k_ft_in1k"]
    assert result.rows == 0 and catalog_rows[0].get("imagenet_top1") is None


def test_list_filters_and_sorts_on_them(capsys):
    measured = _measured_by_checkpoint()
    code, out, err = run(capsys, "list", "--where", "imagenet_r_top1 > 0.6", "--sort",
                         "imagenet_r_top1", "--desc", "--columns", "checkpoint,imagenet_r_top1",
                         "--format", "json", "--limit", "1000")
    assert code == 0, err
    expected = sorted(((c, float(r["imagenet_r_top1"]) / 100) for c, r in measured.items()
                       if float(r["imagenet_r_top1"]) > 60), key=lambda x: -x[1])
    assert [(r["checkpoint"], pytest.approx(r["imagenet_r_top1"], abs=1e-12))
            for r in json.loads(out)] == expected


def test_show_prints_percentages_and_json_gives_fractions(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run(capsys, "show", "vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert code == 0, err
    measured = _reference()["vit_base_patch16_224.augreg_in21k_ft_in1k"]
    line = next(li for li in out.splitlines() if li.startswith("imagenet_r_top1/5"))
    assert line.split()[-2:] == [f"{float(measured['imagenet_r_top1']):g}%",
                                 f"{float(measured['imagenet_r_top5']):g}%"]
    assert "measured by timm at 224 px, crop 0.9" in out
    code, out, err = run(capsys, "show", "sam/ViT-B_16", "--format", "json")
    fields = {f["field"]: f for f in json.loads(out)["fields"]}
    sam = _reference()["vit_base_patch16_224.sam_in1k"]
    assert fields["imagenet_a_top1"]["value"] == pytest.approx(float(sam["imagenet_a_top1"]) / 100)
    assert "pytorch-image-models" in fields["imagenet_a_top1"]["source"]


def test_recommend_by_ranks_each_architecture_by_the_measured_column(capsys):
    code, out, err = run(capsys, "recommend", "--by", "imagenet_r_top1", "--format", "json")
    assert code == 0, err
    catalog = api.load_dataframe(str(REPO_ROOT / "index"))
    arch_of = dict(zip(catalog["checkpoint"], catalog["name"], strict=True))
    best: dict[str, tuple[float, str]] = {}
    for checkpoint, entry in _measured_by_checkpoint().items():  # every collection, families too
        value = float(entry["imagenet_r_top1"])
        arch = arch_of[checkpoint]
        best[arch] = max(best.get(arch, (-1.0, "")), (value, checkpoint))
    assert {r["name"]: r["checkpoint"] for r in json.loads(out)} == {
        a: c for a, (_, c) in best.items()}
    assert "known for 77 of the" in err
    code, _, err = run(capsys, "recommend", "--by", "adapt_final_test")
    assert code == 2 and "never used to choose" in err


def test_index_info_counts_them(capsys):
    code, out, err = run(capsys, "index", "info", "--index", str(REPO_ROOT / "index"), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["measured"]["rows"] == 77  # 27 Google files + 50 other families'
    assert "imagenet_top1: known for 77 of" in " ".join(json.loads(out)["missing"])
