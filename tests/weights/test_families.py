"""Every ViT family timm serves runs in vitzoo's one ViT, loads from and exports to timm's layout.

Each family is a tiny random model written in timm's layout by
``tests.support.timm_family_factory`` (NumPy + safetensors, no torch), with a ``config.json``
as on the Hub. The oracle is ``np_timm_family`` in ``tests.support.numpy_models``: a float64
forward pass written from timm's module code, reading timm's state dict directly, so a
disagreement catches the model, the switches inferred from the file and the layout
conversion alike.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.support.numpy_models import np_timm_family
from tests.support.timm_family_factory import FAMILIES, write_timm_family
from vitzoo.errors import VitzooError
from vitzoo.models import build_model, infer_config
from vitzoo.runs.registry import export_params
from vitzoo.weights.export import ExportSource, export_checkpoint
from vitzoo.weights.release import (
    load_checkpoint,
    load_for_finetune,
    load_npz,
    release_to_params,
    replace_head,
    save_npz,
)
from vitzoo.weights.timm import load_timm_folder, release_to_timm

HEADS = 4

#: The switches each family's file must give (the rest stay at vit_jax's defaults).
EXPECTED_SWITCHES = {
    "deit": {"activation": "gelu"},
    "deit_distilled": {"activation": "gelu", "distilled": True},
    "deit3": {"activation": "gelu", "no_embed_class": True, "layer_scale": True},
    "dino": {"activation": "gelu"},
    "dinov2": {"activation": "gelu", "layer_scale": True},
    "dinov2_reg": {"activation": "gelu", "layer_scale": True, "num_registers": 4,
                   "no_embed_class": True},
    "mae": {"activation": "gelu"},
    "mae_avg": {"activation": "gelu", "fc_norm": True, "class_token": True},
    "clip_openai": {"activation": "quick_gelu", "layer_norm_eps": 1e-5, "norm_pre": True,
                    "patch_bias": False},
    "clip_laion": {"activation": "gelu", "layer_norm_eps": 1e-5, "norm_pre": True,
                   "patch_bias": False},
    "siglip": {},  # no class token, MAP head: classifier "map"; tanh GELU is the default
}
EXPECTED_CLASSIFIER = {"mae_avg": "gap", "siglip": "map"}


def _images(family, n=2, seed=3):
    res = FAMILIES[family].image
    return np.random.default_rng(seed).uniform(-1, 1, (n, res, res, 3)).astype(np.float32)


def _oracle(family, state, images):
    spec = FAMILIES[family]
    return np_timm_family(state, images, num_heads=HEADS, act=spec.act, eps=spec.eps,
                          global_pool=spec.global_pool, no_embed_class=spec.no_embed_class)


def _vitzoo(flat, images):
    config, info = infer_config(flat)
    params = release_to_params(flat, config)
    if info["num_classes"] == 0:  # a backbone without a head: give it one to run
        params = replace_head(params, 1)
    model = build_model(config, max(1, info["num_classes"]))
    logits, out = model.apply({"params": params}, images, outputs=True)
    return config, info, np.asarray(logits), np.asarray(out["pre_logits"])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_forward_equals_timm_computation(family, tmp_path):
    folder, state = write_timm_family(tmp_path / family, family, seed=7, heads=HEADS)
    flat = load_timm_folder(folder)
    images = _images(family)
    config, info, logits, pre_logits = _vitzoo(flat, images)
    assert config.switches() == EXPECTED_SWITCHES[family]
    assert config.classifier == EXPECTED_CLASSIFIER.get(family, "token")
    assert info["resolution"] == FAMILIES[family].image
    want_logits, want_pre = _oracle(family, state, images)
    assert np.abs(want_pre).max() > 0.1
    np.testing.assert_allclose(pre_logits, want_pre, atol=1e-5, rtol=0)
    if want_logits is None:
        assert info["num_classes"] == 0
    else:
        assert info["num_classes"] == FAMILIES[family].num_classes
        assert np.abs(want_logits).max() > 0.1
        np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_round_trips_through_npz_and_export(family, tmp_path):
    folder, state = write_timm_family(tmp_path / family, family, seed=8, heads=HEADS)
    flat = load_timm_folder(folder)
    config, _ = infer_config(flat)
    # the npz written for the cache, and a fine-tune's final.npz, keep every switch
    npz = save_npz(tmp_path / "cache" / "model.npz", flat)
    again, _, params = load_checkpoint(npz)
    assert again == config
    rewritten = load_npz(export_params(tmp_path / "run" / "final.npz", params, again))  # finetune's
    assert rewritten.keys() == flat.keys()
    assert all(np.array_equal(rewritten[k], flat[k]) for k in flat)
    # back to timm's layout: the same keys and the same arrays
    back = release_to_timm(load_npz(npz), config)
    assert back.keys() == state.keys()
    assert all(np.array_equal(back[k], state[k]) for k in state), family
    # and through `vitzoo export --to timm`: a folder the loader reads back identically
    files = export_checkpoint(ExportSource(npz, None, "none"), "timm", tmp_path / "out")
    assert [f.name for f in files] == ["model.safetensors", "config.json"]
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert exported.keys() == state.keys()
    assert all(np.array_equal(exported[k], state[k]) for k in state)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architecture"] and cfg["model_args"]["num_heads"] == HEADS
    reloaded = load_timm_folder(tmp_path / "out")
    assert reloaded.keys() == flat.keys()
    assert all(np.array_equal(reloaded[k], flat[k]) for k in flat)


def test_finetune_load_resizes_and_replaces_both_distilled_heads(tmp_path):
    folder, _ = write_timm_family(tmp_path / "d", "deit_distilled", seed=9, heads=HEADS)
    npz = save_npz(tmp_path / "deit.npz", load_timm_folder(folder))
    config, params = load_for_finetune(npz, num_classes=3, resolution=48)
    assert config.distilled and config.num_tokens(48) == 36 + 2
    assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 38, 32)
    for head in ("head", "head_dist"):
        assert params[head]["kernel"].shape == (32, 3) and not params[head]["kernel"].any()
    model = build_model(config, 3)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 48, 48, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model.apply({"params": params}, images)), 0.0)


def test_registers_resize_without_touching_the_prefix(tmp_path):
    folder, state = write_timm_family(tmp_path / "r", "dinov2_reg", seed=10, heads=HEADS)
    npz = save_npz(tmp_path / "reg.npz", load_timm_folder(folder))
    config, params = load_for_finetune(npz, num_classes=2, resolution=56)
    posemb = params["Transformer"]["posembed_input"]["pos_embedding"]
    assert config.posemb_prefix_tokens == 0 and posemb.shape == (1, 16, 32)  # 4x4 patches only
    np.testing.assert_array_equal(params["reg"], state["reg_token"])


def test_swiglu_mlp_is_refused_in_one_line(tmp_path):
    folder, state = write_timm_family(tmp_path / "g", "dinov2", seed=11, heads=HEADS)
    from safetensors.numpy import save_file

    for i in range(2):  # SwiGLUPacked: fc1 packs value and gate, fc2 reads half of it
        state[f"blocks.{i}.mlp.fc2.weight"] = state[f"blocks.{i}.mlp.fc2.weight"][:, :32]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(VitzooError, match=r"SwiGLU MLP.*DINOv2 giant"):
        load_timm_folder(folder)


def test_heads_come_from_timm_widths_without_model_args(tmp_path):
    folder, _ = write_timm_family(tmp_path / "w", "dino", seed=12, hidden=192, heads=3, mlp=64,
                                  depth=1)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["model_args"]  # as the 2023 Hub configs: no model_args at all
    (folder / "config.json").write_text(json.dumps(cfg))
    config, _ = infer_config(load_timm_folder(folder))
    assert config.num_heads == 3 and config.activation == "gelu"


def test_bad_config_json_and_missing_weights_are_one_line_errors(tmp_path):
    folder, _ = write_timm_family(tmp_path / "b", "dino", seed=13, heads=HEADS)
    (folder / "config.json").write_text("<html>")
    with pytest.raises(VitzooError, match=r"not a readable timm config\.json"):
        load_timm_folder(folder)
    with pytest.raises(VitzooError, match=r"has no model\.safetensors"):
        load_timm_folder(tmp_path)


def test_unknown_recorded_switch_is_refused(tmp_path):
    folder, _ = write_timm_family(tmp_path / "u", "dino", seed=14, heads=HEADS)
    flat = load_timm_folder(folder)
    flat["vitzoo_config/activation"] = np.frombuffer(b"swish", np.uint8).copy()
    with pytest.raises(VitzooError, match="records activation 'swish'"):
        infer_config(flat)
    del flat["vitzoo_config/activation"]
    flat["vitzoo_config/rope"] = np.ones((), np.uint8)
    with pytest.raises(VitzooError, match="unknown switch"):
        infer_config(flat)


def _hub_snapshot(repo, family, seed):
    """A Hub repo in the Hugging Face cache as hf_hub_download leaves it (weights + config)."""
    from vitzoo.download import hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = hub.hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    write_timm_family(folder / "snapshots" / commit, family, seed=seed, heads=HEADS)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_hub_copy_brings_its_config_json(monkeypatch):
    from vitzoo.download import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = "timm/vit_base_patch16_clip_224.openai"
    _hub_snapshot(repo, "clip_openai", seed=15)
    config, _ = infer_config(hub.release_arrays(repo, progress=False))
    assert config.switches() == EXPECTED_SWITCHES["clip_openai"]


def test_family_structure_without_config_json_is_refused(tmp_path):
    folder, _ = write_timm_family(tmp_path / "n", "dinov2_reg", seed=16, heads=HEADS)
    (folder / "config.json").unlink()
    with pytest.raises(VitzooError, match=r"layer_scale, num_registers.*no config\.json"):
        load_timm_folder(folder, arch=None)


@pytest.mark.parametrize(("family", "words"), [
    ("deit_distilled", "mean of the class and distillation tokens"),
    ("siglip", "MAP head"), ("mae_avg", "then fc_norm"), ("dinov2", "class token")])
def test_each_family_names_its_representation(family, words, tmp_path):
    folder, _ = write_timm_family(tmp_path / family, family, seed=17, heads=HEADS)
    assert words in infer_config(load_timm_folder(folder))[0].pooled_representation()


def test_augreg_config_json_changes_nothing(tmp_path):
    """An AugReg copy read with its Hub config.json gives the same arrays as without it."""
    from safetensors.numpy import save_file

    from tests.support.ckpt_factory import tiny_vit_arrays

    release = tiny_vit_arrays(num_classes=2, image_size=16, patch=16, hidden=192, depth=12,
                              heads=3, mlp=768)
    config, _ = infer_config(release, "Ti/16")
    save_file(release_to_timm(release, config), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "vit_tiny_patch16_224", "num_classes": 2, "global_pool": "token",
        "pretrained_cfg": {"tag": "augreg_in21k", "num_classes": 2}}))
    loaded = load_timm_folder(tmp_path)
    assert loaded.keys() == release.keys()  # no vitzoo_config/* arrays: vit_jax's numerics
    assert all(np.array_equal(loaded[k], release[k]) for k in release)
    assert infer_config(loaded)[0].name == "Ti/16"


def test_show_counts_weights_not_recorded_switches(tmp_path):
    from vitzoo.cli.show_view import file_facts

    folder, state = write_timm_family(tmp_path / "c", "clip_openai", seed=18, heads=HEADS)
    npz = save_npz(tmp_path / "clip.npz", load_timm_folder(folder))
    facts = {f["field"]: f["value"] for f in file_facts(npz)[0]}
    assert facts["params"] == sum(a.size for a in state.values())  # timm's count, same numbers
    assert "quick_gelu" in facts["architecture"]


def test_a_timm_folder_is_a_checkpoint_argument(tmp_path, capsys):
    from vitzoo.download.resolve import resolve_checkpoint

    folder, _ = write_timm_family(tmp_path / "vit_small_patch14_reg4_dinov2", "dinov2_reg",
                                  seed=19, heads=HEADS)
    npz = resolve_checkpoint(str(folder))
    assert npz.suffix == ".npz" and "converted" in capsys.readouterr().err
    config, info, _ = load_checkpoint(npz)
    assert config.switches() == EXPECTED_SWITCHES["dinov2_reg"] and info["resolution"] == 42
    assert resolve_checkpoint(str(folder)) == npz  # converted once
    assert "converted" not in capsys.readouterr().err
    (folder / "config.json").write_text(json.dumps({
        **json.loads((folder / "config.json").read_text()), "architecture": "vit_small_x"}))
    assert resolve_checkpoint(str(folder)) != npz  # another content, another conversion
    with pytest.raises(VitzooError, match="is a folder, not a checkpoint"):
        resolve_checkpoint(str(tmp_path))


def test_attention_maps_skip_every_prefix_token():
    from vitzoo.attention import patch_map

    joint = np.arange(81, dtype=np.float64).reshape(9, 9)  # 5 prefix tokens + a 2x2 grid
    np.testing.assert_allclose(patch_map(joint, "token", 5), [[5, 6], [7, 8]] / np.float64(8))
    mean_row = joint[5:, 5:].mean(axis=0)  # the patch rows, the patch columns
    np.testing.assert_allclose(patch_map(joint, "map", 5), (mean_row / mean_row.max()).reshape(2, 2))
