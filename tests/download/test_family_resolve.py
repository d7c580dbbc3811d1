"""Another family's catalog name resolves to its Hub copy and runs its weights' own numerics.

The Hub is stood in for by its own cache layout (``models--timm--X/snapshots/<commit>/``), which
``hf_hub_download`` reads with ``HF_HUB_OFFLINE=1`` (tests/conftest.py sets it): a tiny
random model of the family, written in timm's layout by ``tests.support.timm_family_factory``,
is planted under the catalog row's Hub repo. The oracles are loading the same folder directly
and ``np_timm_family`` (a NumPy forward written from timm's module code), with the activation
the weights were trained with; only the ``*_quickgelu_*`` CLIP names, which share their weights'
repo with a plain-named twin whose ``config.json`` names the exact-GELU model, take theirs from
the catalog row.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support.cli_helpers import run_cli
from tests.support.numpy_models import np_timm_family
from tests.support.timm_family_factory import FAMILIES, timm_config_json, timm_family_state
from vitzoo.catalog import families
from vitzoo.download import cache, hub
from vitzoo.download.resolve import resolve_checkpoint
from vitzoo.errors import VitzooError
from vitzoo.models import build_model, infer_config
from vitzoo.weights.release import load_npz, release_to_params, replace_head
from vitzoo.weights.timm import load_timm_folder, load_timm_safetensors
from vitzoo.weights.timm_config import HEADS_BY_WIDTH

HEADS = 4
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SOURCES = Path(__file__).resolve().parents[2] / "index" / "sources"
TWIN_REPO = "timm/vit_base_patch16_clip_224.metaclip_2pt5b"
QUICK = "vit_base_patch16_clip_quickgelu_224.metaclip_2pt5b"
PLAIN = "vit_base_patch16_clip_224.metaclip_2pt5b"


def _plant(repo: str, family: str, *, tag: str | None = None, seed: int = 5) -> tuple[Path, dict]:
    """A tiny ``family`` model in the Hugging Face cache as ``hf_hub_download`` leaves a repo."""
    spec = FAMILIES[family] if tag is None else replace(FAMILIES[family], tag=tag)
    state = timm_family_state(spec, seed=seed, heads=HEADS)
    folder = hub.hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps(timm_config_json(spec, heads=HEADS)))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return snapshot, state


def _run(flat: dict, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """vitzoo's (logits, pre_logits) for release-layout arrays."""
    config, info = infer_config(flat)
    params = release_to_params(flat, config)
    if info["num_classes"] == 0:
        params = replace_head(params, 1)
    model = build_model(config, max(1, info["num_classes"]))
    logits, out = model.apply({"params": params}, images, outputs=True)
    return np.asarray(logits), np.asarray(out["pre_logits"])


def _images(family: str) -> np.ndarray:
    res = FAMILIES[family].image
    return np.random.default_rng(11).uniform(-1, 1, (2, res, res, 3)).astype(np.float32)


def _oracle(family: str, state: dict, images: np.ndarray, act: str) -> tuple:
    spec = FAMILIES[family]
    return np_timm_family(state, images, num_heads=HEADS, act=act, eps=spec.eps,
                          global_pool=spec.global_pool, no_embed_class=spec.no_embed_class)


@pytest.mark.parametrize(("name", "family", "collection"), [
    ("vit_small_patch14_dinov2.lvd142m", "dinov2", "timm-families/dinov2"),
    ("deit_tiny_patch16_224.fb_in1k", "deit", "timm-families/deit"),
    ("timm/deit_tiny_distilled_patch16_224.fb_in1k", "deit_distilled", "timm-families/deit"),
])
def test_family_catalog_name_resolves_to_its_hub_copy(name, family, collection):
    stem = name.removeprefix("timm/")
    snapshot, state = _plant(f"timm/{stem}", family)
    path = resolve_checkpoint(name, progress=False)
    assert path == cache.path_for(Path(collection) / f"{stem}.npz")
    record = json.loads(cache.sidecar_of(path).read_text())
    assert record["source"] == "hf" and record["converted_from"] == f"hf:timm/{stem}"
    images = _images(family)
    logits, pre = _run(load_npz(path), images)
    direct_logits, direct_pre = _run(load_timm_folder(snapshot), images)
    np.testing.assert_array_equal(logits, direct_logits)
    np.testing.assert_array_equal(pre, direct_pre)
    want_logits, want_pre = _oracle(family, state, images, FAMILIES[family].act)
    np.testing.assert_allclose(pre, want_pre, atol=1e-5, rtol=1e-5)
    if want_logits is not None:  # a backbone has no head of its own
        np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=1e-5)


def test_quickgelu_name_and_its_plain_twin_share_a_repo_but_not_an_activation():
    snapshot, state = _plant(TWIN_REPO, "clip_laion", tag="metaclip_2pt5b")
    quick = resolve_checkpoint(QUICK, progress=False)
    plain = resolve_checkpoint(PLAIN, progress=False)
    assert quick != plain and quick.name == f"{QUICK}.npz" and plain.name == f"{PLAIN}.npz"
    images = _images("clip_laion")
    for path, act in ((quick, "quick_gelu"), (plain, "gelu")):
        logits, pre = _run(load_npz(path), images)
        want_logits, want_pre = _oracle("clip_laion", state, images, act)
        np.testing.assert_allclose(pre, want_pre, atol=1e-5, rtol=1e-5, err_msg=path.name)
        np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=1e-5, err_msg=path.name)
    quick_pre, plain_pre = _run(load_npz(quick), images)[1], _run(load_npz(plain), images)[1]
    # the plain twin is what the folder's own config.json says; the two activations differ visibly
    np.testing.assert_array_equal(plain_pre, _run(load_timm_folder(snapshot), images)[1])
    assert np.abs(quick_pre - plain_pre).max() > 1e-2


@pytest.mark.parametrize(("name", "family", "tag", "act"), [
    # timm builds these two with exact GELU (its catalog rows say so); the weights were trained
    # with tanh GELU (big_vision) and quick GELU (OpenAI) respectively
    ("vit_base_patch16_siglip_224.webli", "siglip", "webli", "gelu_tanh"),
    ("vit_base_patch16_clip_224.openai", "clip_openai", "openai", "quick_gelu"),
])
def test_a_name_served_by_its_own_repo_runs_the_numerics_its_weights_were_trained_with(
        name, family, tag, act):
    row = next(r for r in csv.DictReader(_source_lines()) if r["timm_name"] == name)
    assert row["hf_hub_id"] == f"timm/{name}" and row["act"] == "gelu"  # timm's build
    _, state = _plant(f"timm/{name}", family, tag=tag)
    path = resolve_checkpoint(name, progress=False)
    assert infer_config(load_npz(path))[0].activation == act
    images = _images(family)
    _, pre = _run(load_npz(path), images)
    np.testing.assert_allclose(pre, _oracle(family, state, images, act)[1], atol=1e-5, rtol=1e-5)


def _source_lines() -> list[str]:
    lines = (SOURCES / "timm_families.csv").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if not line.startswith("#")]


def test_a_cached_conversion_with_the_wrong_activation_is_converted_again():
    _plant(TWIN_REPO, "clip_laion", tag="metaclip_2pt5b")
    plain = resolve_checkpoint(PLAIN, progress=False)
    # a cache written before the name decided the activation: the twin's exact-GELU file
    stale = cache.path_for(Path("timm-families/clip") / f"{QUICK}.npz")
    stale.write_bytes(plain.read_bytes())
    cache.sidecar_of(stale).write_text(cache.sidecar_of(plain).read_text())
    record = cache.Record.load(stale)
    record.mtime_ns = stale.stat().st_mtime_ns
    record.save(stale)
    assert cache.check(stale) is None  # a sound file, but not this name's model
    path = resolve_checkpoint(QUICK, progress=False)
    assert path == stale
    recorded = load_npz(path)["vitzoo_config/activation"]
    assert bytes(recorded.tolist()).decode() == "quick_gelu"
    # and a right one is used as it is (not converted again: same bytes, same mtime)
    before = path.stat().st_mtime_ns
    assert resolve_checkpoint(QUICK, progress=False) == path and path.stat().st_mtime_ns == before


def _family_lines() -> list[dict[str, str]]:
    lines = (SOURCES / families.FAMILIES_FILE).read_text(encoding="utf-8").splitlines()
    return list(csv.DictReader(lines[1:]))


def test_every_family_row_gives_the_loader_timms_activation_eps_and_heads():
    lines = _family_lines()
    assert len(lines) > 100
    for entry in lines:
        row = families.family_row(entry, "test")
        assert families.numerics(row) == {"activation": entry["act"],
                                          "layer_norm_eps": float(entry["norm_eps"])}, row["checkpoint"]
        assert HEADS_BY_WIDTH[int(entry["width"])] == int(entry["heads"]), entry["timm_name"]
    assert sum(entry["act"] == "quick_gelu" for entry in lines) == 17
    assert families.numerics({"row_source": "grid", "switches": None}) is None


def test_unreadable_switches_are_one_line_error():
    row = {"row_source": families.ROW_SOURCE, "checkpoint": "x.y", "switches": "class token; gelu"}
    with pytest.raises(VitzooError, match=r"x\.y has switches vitzoo cannot read") as info:
        families.numerics(row)
    assert "rebuild the catalog" in info.value.hint


def test_heads_that_do_not_divide_the_width_are_refused_by_name(tmp_path):
    save_file(timm_family_state(FAMILIES["dinov2"], heads=HEADS), str(tmp_path / "w.safetensors"))
    config = timm_config_json(FAMILIES["dinov2"], heads=HEADS)
    with pytest.raises(VitzooError, match="32 wide, which 6 attention heads do not divide"):
        load_timm_safetensors(tmp_path / "w.safetensors", "S/14", timm_config=config)


def test_download_cli_and_availability_offline(capsys):
    name = "vit_small_patch14_dinov2.lvd142m"
    _plant(f"timm/{name}", "dinov2")
    listing = ("list", "--downloadable", "--collection", "timm-families/dinov2", "--format", "csv",
               "--columns", "checkpoint,available")
    code, out, _ = run_cli(capsys, *listing)
    # offline, not converted yet: the weights in the Hugging Face cache are the one source
    assert code == 0 and f"{name},hf-cache" in out.splitlines()
    code, out, err = run_cli(capsys, "download", name, "--no-progress")
    assert code == 0, err
    path = Path(out.strip())
    assert path == cache.path_for(Path("timm-families/dinov2") / f"{name}.npz") and path.is_file()
    code, out, _ = run_cli(capsys, *listing)
    assert code == 0 and f'{name},"cache,hf-cache"' in out.splitlines()
