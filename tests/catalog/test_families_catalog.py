"""The other families' checkpoints (DeiT, DeiT III, DINO, DINOv2, MAE, CLIP, SigLIP) in the catalog.

Two halves. The generation script's row logic runs on hand-written stand-ins of timm's
pretrained-config records (no torch, no timm). The built catalog is checked against the
committed source files read with the csv module and pandas (not vitzoo's loader) and against
values typed by hand from timm's configurations (e.g. DINOv2 S/14: patch 14, 518 px, no head).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run
from vitzoo.catalog import api
from vitzoo.catalog.families import family_rows
from vitzoo.errors import VitzooError

SOURCES = REPO_ROOT / "index" / "sources"
FAMILIES_CSV = SOURCES / "timm_families.csv"
RESULTS_CSV = SOURCES / "timm_results_families.csv"


def _script():
    spec = importlib.util.spec_from_file_location("timm_families", REPO_ROOT / "index" / "tools"
                                                  / "timm_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    before = set(sys.modules)
    module = _script()
    assert not {"torch", "timm"} & (set(sys.modules) - before)  # the row logic needs neither
    return module


def _source() -> pd.DataFrame:
    return pd.read_csv(FAMILIES_CSV, skiprows=1)


def _measured() -> dict[str, dict[str, str]]:
    lines = RESULTS_CSV.read_text(encoding="utf-8").splitlines()
    return {r["timm_name"]: r for r in csv.DictReader(lines[1:])}


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    return api.load_dataframe(str(REPO_ROOT / "index"))


def _row(catalog: pd.DataFrame, name: str) -> dict:
    rows = catalog[catalog["checkpoint"] == name].to_dict("records")
    assert len(rows) == 1, name
    return rows[0]


# --- the generation script, on stand-ins of timm's records ----------------------------------

#: What timm 1.0.31's get_pretrained_cfg(...).to_dict() gives for DeiT-Ti distilled (abridged).
DEIT_TI_DISTILLED_CFG = {
    "hf_hub_id": "timm/deit_tiny_distilled_patch16_224.fb_in1k", "input_size": (3, 224, 224),
    "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "num_classes": 1000,
    "license": "apache-2.0",
}
#: The facts its meta-device model shows (a plain ViT with a distillation token).
DEIT_TI_DISTILLED_FACTS = {
    "model_class": "VisionTransformerDistilled", "block_class": "Block",
    "patch_embed_class": "PatchEmbed", "mlp_class": "Mlp", "act": "GELU(approximate='none')",
    "patch_size": (16, 16), "width": 192, "depth": 12, "heads": 3, "mlp": 768,
    "param_count": 5910800, "class_token": True, "dist_token": True, "reg_tokens": 0,
    "no_embed_class": False, "pre_norm": False, "layer_scale": False, "norm_eps": 1e-6,
    "global_pool": "token", "fc_norm": False, "patch_bias": True, "qkv_bias": True,
    "qk_norm": False, "attn_norm": False,
}


@pytest.mark.parametrize(("name", "family"), [
    ("deit_tiny_patch16_224.fb_in1k", "deit"),
    ("deit_base_distilled_patch16_384.fb_in1k", "deit"),
    ("deit3_medium_patch16_224.fb_in22k_ft_in1k", "deit3"),
    ("vit_small_patch16_224.dino", "dino"),
    ("vit_small_patch14_reg4_dinov2.lvd142m", "dinov2"),
    ("vit_huge_patch14_224.mae", "mae"),
    ("vit_large_patch14_clip_quickgelu_336.openai", "clip"),
    ("vit_base_mci_224.apple_mclip", "clip"),  # MobileCLIP: a CLIP, skipped later for its stem
    ("vit_so400m_patch14_siglip_gap_448.pali_pt", "siglip"),
    ("vit_base_patch16_224.augreg_in21k", None),
    ("vit_base_patch16_224.orig_in21k", None),
    ("eva02_base_patch14_224.mim_in22k", None),
    ("convnext_tiny.fb_in1k", None),
])
def test_family_of_a_timm_name(script, name, family):
    assert script.family_of(name) == family


@pytest.mark.parametrize(("tag", "expected"), [
    ("fb_in1k", ("i1k", "in1k")),  # DeiT: supervised on ImageNet-1k throughout
    ("fb_in22k_ft_in1k", ("i21k", "in1k")),
    ("dino", ("i1k", None)),
    ("mae", ("i1k", None)),
    ("lvd142m", ("lvd142m", None)),
    ("openai", ("openai", None)),
    ("laion2b_ft_in12k", ("laion2b", "in12k")),
    ("laion2b_ft_in12k_in1k", ("laion2b", "in1k")),
    ("webli_ft_in1k", ("webli", "in1k")),
])
def test_pretraining_data_and_head_data_from_the_tag(script, tag, expected):
    assert script.pretraining_of(tag) == expected


def test_head_kind(script):
    assert script.head_of("clip", 512, None) == "projection"
    assert script.head_of("clip", 1000, "in1k") == "classifier"
    assert script.head_of("deit", 1000, "in1k") == "classifier"
    assert script.head_of("dinov2", 0, None) == "none"
    assert script.head_of("siglip", 0, None) == "none"


@pytest.mark.parametrize(("change", "reason"), [
    ({"mlp_class": "GluMlp"}, "gated MLP"),
    ({"patch_embed_class": "HybridEmbed"}, "HybridEmbed stem"),
    ({"act": "SiLU()"}, "activation SiLU()"),
    ({"patch_size": (16, 8)}, "non-square patches"),
    ({"qk_norm": True}, "qk-norm"),
    ({"attn_norm": True}, "norm inside attention"),
    ({"global_pool": "avgmax"}, "pooling 'avgmax'"),
    ({"block_class": "ParallelScalingBlock"}, "ParallelScalingBlock blocks"),
    ({"model_class": "Eva"}, "model class Eva"),
])
def test_features_vitzoo_does_not_model_are_skipped_with_the_reason(script, change, reason):
    assert script.unsupported(DEIT_TI_DISTILLED_FACTS) is None
    assert reason in script.unsupported({**DEIT_TI_DISTILLED_FACTS, **change})


def test_architecture_name_from_the_shapes(script):
    registry = [SimpleNamespace(name="X/16", family="vit", hidden=192, mlp=768, layers=12, heads=3,
                                patch=16),
                SimpleNamespace(name="Mix/16", family="mixer", hidden=192, mlp=768, layers=12,
                                heads=3, patch=16)]
    assert script.arch_name(DEIT_TI_DISTILLED_FACTS, registry) == "X/16"
    assert script.arch_name({**DEIT_TI_DISTILLED_FACTS, "patch_size": (14, 14)}, registry) is None
    from vitzoo.arch_registry import ARCHITECTURES

    dinov2_small = {**DEIT_TI_DISTILLED_FACTS, "width": 384, "mlp": 1536, "heads": 6,
                    "patch_size": (14, 14)}
    assert script.arch_name(dinov2_small, ARCHITECTURES) == "S/14"


def test_one_row_from_a_stand_in_record(script):
    row = script.catalog_row("deit_tiny_distilled_patch16_224.fb_in1k", DEIT_TI_DISTILLED_CFG,
                             DEIT_TI_DISTILLED_FACTS, "Ti/16")
    assert set(row) == set(script.COLUMNS)
    assert row == {
        "timm_name": "deit_tiny_distilled_patch16_224.fb_in1k",
        "hf_hub_id": "timm/deit_tiny_distilled_patch16_224.fb_in1k", "family": "deit",
        "architecture": "deit_tiny_distilled_patch16_224", "tag": "fb_in1k", "arch": "Ti/16",
        "pretrain_data": "i1k", "head_data": "in1k", "head": "classifier", "num_classes": 1000,
        "resolution": 224, "patch": 16, "width": 192, "depth": 12, "heads": 3, "mlp": 768,
        "param_count": 5910800, "class_token": "yes", "dist_token": "yes", "reg_tokens": 0,
        "no_embed_class": "no", "pre_norm": "no", "layer_scale": "no", "act": "gelu",
        "norm_eps": "1e-06", "global_pool": "token", "fc_norm": "no", "patch_bias": "yes",
        "qkv_bias": "yes", "mean": "0.485 0.456 0.406", "std": "0.229 0.224 0.225",
        "interpolation": "bicubic", "crop_pct": "0.9", "crop_mode": "center",
        "license": "apache-2.0", "timm_notes": "",
    }
    backbone = script.catalog_row("vit_small_patch14_dinov2.lvd142m", {
        **DEIT_TI_DISTILLED_CFG, "hf_hub_id": "timm/vit_small_patch14_dinov2.lvd142m",
        "input_size": (3, 518, 518), "crop_pct": 1.0, "num_classes": 0}, {
        **DEIT_TI_DISTILLED_FACTS, "dist_token": False, "layer_scale": True, "patch_size": (14, 14)},
        "S/14")
    assert (backbone["head"], backbone["head_data"], backbone["num_classes"]) == ("none", "", 0)
    assert (backbone["resolution"], backbone["patch"], backbone["crop_pct"]) == (518, 14, "1.0")


def test_csv_text_has_the_provenance_line_then_sorted_rows(script):
    rows = [script.catalog_row(n, DEIT_TI_DISTILLED_CFG, DEIT_TI_DISTILLED_FACTS, "Ti/16")
            for n in ("deit_tiny_patch16_224.fb_in1k", "deit3_small_patch16_224.fb_in1k")]
    text = script.csv_text(rows, {"timm": "9.9.9"})
    first, *rest = text.splitlines()
    assert first.startswith("# timm 9.9.9 pretrained configurations")
    parsed = list(csv.DictReader(rest))
    assert [r["timm_name"] for r in parsed] == ["deit_tiny_patch16_224.fb_in1k",
                                                "deit3_small_patch16_224.fb_in1k"]  # deit < deit3
    assert [r["family"] for r in parsed] == ["deit", "deit3"]


# --- the committed source and its provenance ------------------------------------------------

def test_committed_source_and_provenance_agree():
    source = _source()
    first = FAMILIES_CSV.read_text(encoding="utf-8").splitlines()[0]
    provenance = (SOURCES / "timm_families.md").read_text(encoding="utf-8")
    version = first.split()[2]
    assert first.startswith("# timm ") and f"timm {version}" in provenance
    assert f"{len(source)} rows" in provenance
    for family, count in source["family"].value_counts().items():
        assert f"| {family} | {count} |" in provenance
    assert "vit_giant_patch14_dinov2.lvd142m | gated MLP" in provenance  # SwiGLU: skipped
    assert not source["timm_name"].str.contains("giant_patch14_dinov2|_mci_").any()
    # the repo is timm/<name>, except the quick-GELU CLIP names, which serve their twin's weights
    twin = source["timm_name"].str.replace("_quickgelu", "", regex=False)
    assert (source["hf_hub_id"] == "timm/" + twin).all()
    assert (source["hf_hub_id"] != "timm/" + source["timm_name"]).sum() == 17
    assert set(source.loc[source["timm_name"] != twin, "act"]) == {"quick_gelu"}
    assert "vit_base_patch16_clip_quickgelu_224.openai` -> `timm/vit_base_patch16_clip_224.openai" in (
        provenance)
    assert source["timm_name"].is_unique
    assert set(source["family"]) == {"deit", "deit3", "dino", "dinov2", "mae", "clip", "siglip"}


def test_measured_file_cites_its_public_source_and_every_name_is_a_row():
    first = RESULTS_CSV.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and "huggingface/pytorch-image-models" in first
    assert "aa4b5850c1543fa488abf260f18390eda46cf85d" in first and "../shared" not in first
    measured = _measured()
    assert len(measured) == 50 and set(measured) <= set(_source()["timm_name"])
    # timm's own parameter counts (its results files, in millions) agree with the script's
    counts = _source().set_index("timm_name")["param_count"]
    for name, entry in measured.items():
        assert counts[name] / 1e6 == pytest.approx(float(entry["param_count_m"]), abs=0.005), name


# --- the built catalog --------------------------------------------------------------------

def test_hand_checked_rows(catalog):
    dinov2 = _row(catalog, "vit_small_patch14_dinov2.lvd142m")
    assert (dinov2["name"], dinov2["family"], dinov2["resolution"]) == ("S/14", "dinov2", 518)
    assert (dinov2["head"], dinov2["num_classes"], dinov2["ds"]) == ("none", 0, "lvd142m")
    assert dinov2["collection"] == "timm-families/dinov2"
    assert dinov2["upstream_hf_repo"] == "timm/vit_small_patch14_dinov2.lvd142m"
    assert dinov2["mean"] == "0.485 0.456 0.406" and dinov2["crop_pct"] == 1.0
    assert "layer scale" in dinov2["switches"] and "class token" in dinov2["switches"]
    assert pd.isna(dinov2["imagenet_top1"]) and pd.isna(dinov2["adapt_filename"])

    reg4 = _row(catalog, "vit_small_patch14_reg4_dinov2.lvd142m")
    assert "4 register tokens" in reg4["switches"]
    assert "position embedding without prefix tokens" in reg4["switches"]

    deit = _row(catalog, "deit_tiny_patch16_224.fb_in1k")
    measured = _measured()["deit_tiny_patch16_224.fb_in1k"]
    assert (deit["name"], deit["head"], deit["num_classes"], deit["ds"]) == (
        "Ti/16", "classifier", 1000, "i1k")
    assert deit["imagenet_top1"] == pytest.approx(float(measured["imagenet_top1"]) / 100, abs=1e-12)
    assert deit["imagenet_top1"] == pytest.approx(0.7219, abs=1e-12)  # typed from the file (72.190 %)
    assert "aa4b5850c1543fa488abf260f18390eda46cf85d" in deit["measured_source"]
    assert deit["params"] == 5717416

    clip = _row(catalog, "vit_base_patch16_clip_224.openai")
    assert (clip["head"], clip["num_classes"], clip["ds"]) == ("projection", 512, "openai")
    assert "quick" not in clip["switches"] and "LayerNorm eps 1e-05" in clip["switches"]
    quick = _row(catalog, "vit_base_patch16_clip_quickgelu_224.openai")
    assert "quick_gelu" in quick["switches"] and "pre-norm" in quick["switches"]
    assert "natively QuickGELU" in clip["note"]  # timm's own note on the exact-GELU twin
    assert "same weights as vit_base_patch16_clip_224.openai" in quick["note"]
    assert quick["upstream_hf_repo"] == clip["upstream_hf_repo"]
    siglip = _row(catalog, "vit_so400m_patch14_siglip_378.webli_ft_in1k")
    assert (siglip["name"], siglip["head_ds"], siglip["crop_mode"]) == ("So400m/14", "in1k", "squash")
    assert "pool map" in siglip["switches"] and "class token" not in siglip["switches"]


def test_measured_values_are_on_the_measured_rows_only(catalog):
    measured = _measured()
    families = catalog[catalog["family"].notna()]
    assert len(families) == len(_source())
    for row in families.to_dict("records"):
        entry = measured.get(row["checkpoint"])
        if entry is None:
            assert pd.isna(row["imagenet_top1"]) and pd.isna(row["measured_source"]), row["checkpoint"]
            continue
        for column in ("imagenet_top1", "imagenet_top5", "imagenet_r_top1", "sketch_top5"):
            assert row[column] == pytest.approx(float(entry[column]) / 100, abs=1e-12)
        assert row["measured_resolution"] == int(entry["img_size"]) == row["resolution"]
    backbones = families[families["head"] == "none"]
    assert len(backbones) > 0 and backbones["imagenet_top1"].isna().all()


def test_the_join_from_the_sources_fills_exactly_the_measured_rows():
    """The build step itself (not the committed index): the family rows from the source file,
    then timm's results applied to them."""
    from vitzoo.catalog.measured import apply_measured

    rows = family_rows(SOURCES)
    result = apply_measured(rows, SOURCES)
    measured = _measured()
    assert not set(result.unmapped) & set(measured) and result.rows == len(measured)
    for row in rows:
        entry = measured.get(row["checkpoint"])
        if entry is None:
            assert row.get("imagenet_top1") is None, row["checkpoint"]
        else:
            assert row["imagenet_top1"] == pytest.approx(float(entry["imagenet_top1"]) / 100,
                                                         abs=1e-12)
            assert row["measured_crop_pct"] == float(entry["crop_pct"])


@pytest.mark.parametrize("collection", ["timm-families", "timm-families/dinov2",
                                        "timm-families/clip", "timm-families/deit3"])
def test_list_collection_counts_equal_the_source(capsys, collection):
    source = _source()
    family = collection.partition("/")[2]
    expected = int((source["family"] == family).sum()) if family else len(source)
    for extra in ([], ["--pretrained"]):
        code, out, err = run(capsys, "list", "--collection", collection, *extra, "--format", "csv",
                             "--limit", "1000")
        assert code == 0, err
        listed = pd.read_csv(io.StringIO(out))
        assert len(listed) == expected, (collection, extra)
        assert set(listed["checkpoint"]) <= set(source["timm_name"])


def test_list_of_the_families_shows_their_own_columns_by_default(capsys):
    code, out, err = run(capsys, "list", "--collection", "timm-families/deit", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert list(rows[0]) == ["checkpoint", "name", "family", "ds", "resolution", "head", "head_ds",
                             "params", "imagenet_top1", "license", "available", "caveats"]
    tiny = next(r for r in rows if r["checkpoint"] == "deit_tiny_patch16_224.fb_in1k")
    assert (tiny["resolution"], tiny["head"], tiny["params"]) == (224, "classifier", 5717416)
    code, out, err = run(capsys, "list", "--collection", "augreg", "--limit", "1", "--format", "json")
    assert "aug" in json.loads(out)[0] and "family" not in json.loads(out)[0]


def test_list_by_pretraining_data_and_a_wrong_value_names_the_choices(capsys):
    code, out, err = run(capsys, "list", "--ds", "lvd142m", "--format", "csv", "--columns",
                         "checkpoint,ds,resolution")
    assert code == 0, err
    listed = pd.read_csv(io.StringIO(out))
    assert sorted(listed["checkpoint"]) == sorted(
        _source().query("pretrain_data == 'lvd142m'")["timm_name"])
    assert set(listed["resolution"]) == {518}
    code, out, err = run(capsys, "list", "--ds", "lvd142")
    assert code != 0 and "Traceback" not in err
    assert "unknown pre-training dataset 'lvd142'" in err and "lvd142m" in err


def test_show_a_backbone_says_its_accuracy_is_unknown(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, "show", "vit_small_patch14_dinov2.lvd142m")
    assert code == 0, err
    unknown = next(line for line in out.splitlines() if line.startswith("unknown"))
    assert "imagenet_top1" in unknown and "imagenet_top5" in unknown
    assert "S/14: width 384, depth 12, heads 6, MLP 1536, patch 14" in out
    assert "hf://timm/vit_small_patch14_dinov2.lvd142m" in out
    assert "no ImageNet accuracy is measured" in out
    assert not {"aug", "wd", "final_val", "url"} & set(unknown.replace(",", " ").split())  # n/a
    assert "timm/vit_small_patch14_dinov2.lvd142m is not used now" in out  # HF_HUB_OFFLINE=1


def test_show_a_measured_file_and_its_timm_hub_name(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    entry = _measured()["deit3_base_patch16_224.fb_in22k_ft_in1k"]
    code, out, err = run(capsys, "show", "timm/deit3_base_patch16_224.fb_in22k_ft_in1k")
    assert code == 0, err
    assert f"{float(entry['imagenet_top1']):.1f}" in out  # shown as percent
    assert "unknown imagenet_top1" not in out


def test_available_is_hf_when_the_hub_is_allowed_and_unknown_offline(capsys, monkeypatch):
    args = ("list", "--collection", "timm-families/mae", "--columns", "checkpoint,available",
            "--format", "json")
    code, out, err = run(capsys, *args)  # the tests run with HF_HUB_OFFLINE=1
    assert code == 0, err
    assert {r["available"] for r in json.loads(out)} == {"unknown"}
    code, out, err = run(capsys, "list", "--collection", "timm-families/mae", "--downloadable")
    assert code != 0 or "vit_" not in out
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for extra in ([], ["--pretrained"]):
        code, out, err = run(capsys, *args, *extra)
        assert code == 0, err
        assert {r["available"] for r in json.loads(out)} == {"hf"}, extra
        code, out, err = run(capsys, *args, *extra, "--downloadable")
        assert code == 0, err
        assert len(json.loads(out)) == int((_source()["family"] == "mae").sum())


def test_probe_candidates_select_family_rows(monkeypatch):
    from vitzoo.probe.candidates import select

    monkeypatch.delenv("HF_HUB_OFFLINE")
    chosen, notes = select(["downloadable"], where="family == 'dinov2'")
    expected = sorted(_source().query("family == 'dinov2'")["timm_name"])
    assert sorted(c.name for c in chosen) == expected
    assert f"{len(expected)} of {len(expected)} matching checkpoints can be served now" in notes[0]
    assert {c.architecture for c in chosen} == {"S/14", "B/14", "L/14"}
    chosen, _ = select(["downloadable"], where="collection == 'timm-families/deit'")
    tiny = next(c for c in chosen if c.name == "deit_tiny_patch16_224.fb_in1k")
    assert tiny.published["imagenet_top1"] == pytest.approx(0.7219, abs=1e-12)


def test_a_family_name_resolves_to_its_hub_copy():
    info = api.find_checkpoint("vit_base_patch16_224.mae")
    assert (info.kind, info.hf_repo, info.name, info.url) == (
        "pretrained", "timm/vit_base_patch16_224.mae", "B/16", None)
    assert info.collection == "timm-families/mae"
    assert api.find_checkpoint("timm/vit_base_patch16_224.mae").filename == "vit_base_patch16_224.mae"
    # two names, one Hub repo: each name is its own row (the activation differs)
    for name in ("vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_quickgelu_224.openai"):
        for spelling in (name, f"timm/{name}", f"hf-hub:timm/{name}"):
            info = api.find_checkpoint(spelling)
            assert (info.filename, info.hf_repo) == (name, "timm/vit_base_patch16_clip_224.openai")


def test_a_source_without_its_provenance_line_is_refused(tmp_path):
    sources = tmp_path / "sources"
    shutil.copytree(SOURCES, sources)
    path = sources / "timm_families.csv"
    path.write_text("\n".join(path.read_text(encoding="utf-8").splitlines()[1:]) + "\n")
    with pytest.raises(VitzooError, match="provenance line") as err:
        family_rows(sources)
    assert "Restore index/sources from git" in str(err.value)
    lines = FAMILIES_CSV.read_text(encoding="utf-8").splitlines()
    entries = list(csv.DictReader(lines[1:]))

    def write(rows: list[dict]) -> None:  # the provenance line, then the edited rows
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(lines[0] + "\n" + out.getvalue())

    entries[0]["arch"] = "Q/99"
    write(entries)
    with pytest.raises(VitzooError, match="unknown architecture 'Q/99'"):
        family_rows(sources)
    entries[0].update(arch="S/16", timm_name="../escape")
    write(entries)
    with pytest.raises(VitzooError, match="timm checkpoint name"):
        family_rows(sources)
