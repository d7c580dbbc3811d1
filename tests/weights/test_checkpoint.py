"""Checkpoint files: safe loading, atomic saving, layout conversion, validation, adaptation."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

from tests.support.ckpt_factory import (
    tiny_hybrid_arrays,
    tiny_mixer_arrays,
    tiny_vit_arrays,
    write_tiny_hybrid,
    write_tiny_mixer,
    write_tiny_vit,
)
from tests.support.numpy_models import np_vit
from vitzoo.errors import VitzooError
from vitzoo.models import build_model, get_config, infer_config
from vitzoo.models.configs import CONFIGS
from vitzoo.weights.release import (
    check_release_layout,
    drop_representation,
    expected_release_shapes,
    load_checkpoint,
    load_for_finetune,
    load_npz,
    npz_bytes,
    params_to_release,
    release_to_params,
    replace_head,
    resize_posemb,
    save_npz,
)

KINDS = {
    "vit": lambda: tiny_vit_arrays(seed=1),
    "vit-rep": lambda: tiny_vit_arrays(seed=2, representation_size=24),
    "vit-gap": lambda: tiny_vit_arrays(seed=2, classifier="gap"),
    "hybrid-stem-only": lambda: tiny_hybrid_arrays(seed=3),
    "hybrid-stages": lambda: tiny_hybrid_arrays(seed=4, blocks=(2, 1)),
    "mixer": lambda: tiny_mixer_arrays(seed=5),
}


# --- load_npz / save_npz ---------------------------------------------------------------


def test_load_npz_reads_release_layout(tmp_path):
    path = write_tiny_vit(tmp_path / "t.npz")
    flat = load_npz(path)
    assert flat.keys() == tiny_vit_arrays().keys()
    assert flat["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"].shape \
        == (32, 2, 16)
    with path.open("rb") as fh:  # file objects work too
        assert load_npz(fh).keys() == flat.keys()


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    flat = tiny_hybrid_arrays(blocks=(1,))
    target = save_npz(tmp_path / "sub" / "out.npz", flat)
    back = load_npz(target)
    assert back.keys() == flat.keys()
    for key in flat:
        assert back[key].dtype == flat[key].dtype and np.array_equal(back[key], flat[key])
    assert os.listdir(target.parent) == ["out.npz"]  # no temporary left behind
    before = target.read_bytes()
    with pytest.raises(VitzooError, match="dtype"):
        save_npz(target, {"a": np.array(["text"], dtype=object)})
    assert target.read_bytes() == before  # a failed save never touches the old file
    assert os.listdir(target.parent) == ["out.npz"]
    assert npz_bytes(flat) == before


def test_save_npz_requires_npz_suffix(tmp_path):
    with pytest.raises(VitzooError, match=r"\.npz"):
        save_npz(tmp_path / "out.bin", {"a": np.zeros(2)})


def test_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, good=np.zeros(3, np.float32), bad=np.array([{"x": 1}], dtype=object))
    with pytest.raises(VitzooError, match="pickled"):
        load_npz(path)


@pytest.mark.parametrize("content,kind", [
    (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>", "HTML page"),
    (b"\n  <html><body>Service Unavailable</body></html>", "HTML page"),
    (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>",
     "XML document"),
    (b'{"error": {"code": 404}}', "JSON document"),
    (b"", "empty"),
    (b"\x00\x01garbage", "no zip signature"),
])
def test_non_checkpoint_files_are_named(tmp_path, content, kind):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(content)
    with pytest.raises(VitzooError, match=kind) as err:
        load_npz(path)
    assert str(path) in str(err.value)
    assert err.value.hint


def test_html_error_page_mentions_server(tmp_path):
    path = tmp_path / "B_16.npz"
    path.write_bytes(b"<html><body>403 Forbidden</body></html>")
    with pytest.raises(VitzooError, match="probably an error page from the server"):
        load_npz(path)


def test_truncated_and_corrupt_archives(tmp_path):
    data = npz_bytes(tiny_vit_arrays())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VitzooError, match="truncated or corrupt"):
        load_npz(truncated)
    # flip bytes inside a stored member: the zip CRC check catches it
    corrupt = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    corrupt[start:start + 16] = bytes(16)
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(corrupt))
    with pytest.raises(VitzooError, match="corrupt"):
        load_npz(path)


def test_missing_file(tmp_path):
    with pytest.raises(VitzooError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")


# --- layout conversion -------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_release_params_round_trip_is_exact(kind):
    flat = KINDS[kind]()
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    back = params_to_release(params, config)
    assert back.keys() == flat.keys()
    for key in flat:
        assert back[key].shape == flat[key].shape, key
        assert np.array_equal(back[key], flat[key]), key


def test_groupnorm_is_squeezed_for_flax_and_restored_on_export():
    flat = tiny_hybrid_arrays(blocks=(1,))
    assert flat["gn_root/scale"].shape == (1, 1, 1, 32)
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    assert params["gn_root"]["scale"].shape == (32,)
    assert params["block1"]["unit1"]["gn_proj"]["bias"].shape == (128,)
    back = params_to_release(params, config)
    assert back["gn_root/scale"].shape == (1, 1, 1, 32)
    assert back["block1/unit1/gn3/bias"].shape == (1, 1, 1, 128)
    # a file written by newer Flax with [C] GroupNorm is accepted as well
    squeezed = {k: (v.reshape(-1) if "/gn" in f"/{k}" else v) for k, v in flat.items()}
    check_release_layout(squeezed, config, 10, 64)
    assert np.array_equal(release_to_params(squeezed, config)["gn_root"]["scale"],
                          params["gn_root"]["scale"])


def test_params_tree_matches_model_init():
    import jax
    import jax.numpy as jnp

    flat = tiny_hybrid_arrays(blocks=(1, 1))
    config, info = infer_config(flat)
    params = release_to_params(flat, config)
    model = build_model(config, info["num_classes"])
    init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
    expected = jax.tree.map(lambda s: s.shape, init["params"])
    assert jax.tree.map(np.shape, params) == expected


def test_expected_release_shapes_use_release_names():
    shapes = expected_release_shapes(get_config("R26+S/32"), 21843, 224)
    assert shapes["gn_root/scale"] == (1, 1, 1, 64)
    assert shapes["block4/unit1/conv_proj/kernel"] == (1, 1, 1024, 2048)
    assert shapes["embedding/kernel"] == (1, 1, 2048, 384)
    assert shapes["Transformer/encoderblock_11/MlpBlock_3/Dense_1/kernel"] == (1536, 384)
    assert shapes["Transformer/posembed_input/pos_embedding"] == (1, 50, 384)
    assert shapes["head/kernel"] == (384, 21843)
    assert "Transformer/encoderblock_12/LayerNorm_0/scale" not in shapes


# --- validation ----------------------------------------------------------------------------


def test_missing_extra_and_wrong_shapes_are_named():
    flat = tiny_vit_arrays()
    config, info = infer_config(flat)
    broken = dict(flat)
    del broken["Transformer/encoderblock_1/LayerNorm_2/bias"]
    broken["Transformer/encoderblock_0/surprise/kernel"] = np.zeros(3, np.float32)
    broken["Transformer/encoder_norm/scale"] = np.zeros(33, np.float32)
    with pytest.raises(VitzooError) as err:
        check_release_layout(broken, config, info["num_classes"], info["resolution"])
    text = str(err.value)
    assert "missing 1: Transformer/encoderblock_1/LayerNorm_2/bias" in text
    assert "unexpected 1: Transformer/encoderblock_0/surprise/kernel" in text
    assert "Transformer/encoder_norm/scale (33,) (expected (32,))" in text


def test_load_checkpoint_reports_missing_array_by_name(tmp_path):
    flat = tiny_hybrid_arrays(blocks=(1,))
    del flat["block1/unit1/gn2/scale"]
    path = save_npz(tmp_path / "broken.npz", flat)
    with pytest.raises(VitzooError, match="block1/unit1/gn2/scale"):
        load_checkpoint(path)


def test_missing_layer_is_reported():
    flat = {k: v for k, v in tiny_vit_arrays(depth=3).items() if "encoderblock_1/" not in k}
    with pytest.raises(VitzooError, match=r"missing \[1\]"):
        infer_config(flat)


def test_not_a_vit_checkpoint():
    with pytest.raises(VitzooError, match="embedding/kernel"):
        infer_config({"resnet/root_block/standardized_conv2d/kernel": np.zeros((7, 7, 3, 64))})


# --- config inference --------------------------------------------------------------------


@pytest.mark.parametrize("kind,expect", [
    ("vit", dict(family="vit", hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64,
                 patch_size=8, classifier="token", representation_size=None)),
    ("vit-rep", dict(family="vit", representation_size=24)),
    ("vit-gap", dict(family="vit", classifier="gap")),
    ("hybrid-stem-only", dict(family="hybrid", resnet_blocks=(), resnet_width=32, patch_size=2)),
    ("hybrid-stages", dict(family="hybrid", resnet_blocks=(2, 1), patch_size=1)),
    ("mixer", dict(family="mixer", hidden_size=32, num_layers=2, tokens_mlp_dim=16, mlp_dim=64,
                   patch_size=8)),
])
def test_infer_config_on_tiny_checkpoints(kind, expect):
    config, info = infer_config(KINDS[kind]())
    for field, value in expect.items():
        assert getattr(config, field) == value, field
    assert config.name.startswith("custom")
    assert info["num_classes"] == 10
    res = {"hybrid-stem-only": 64, "hybrid-stages": 64}.get(kind, 32)
    assert info["resolution"] == res
    assert info["has_representation"] == (kind == "vit-rep")


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_infer_config_recognises_every_full_size_architecture(arch):
    config = get_config(arch)
    shapes = expected_release_shapes(config, 21843, 224)
    stubs = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    found, info = infer_config(stubs, arch)
    assert found == config
    assert info["num_classes"] == 21843 and info["resolution"] == 224
    assert info["num_tokens"] == (config.num_tokens(224) if config.family != "mixer"
                                  else config.grid(224) ** 2)


def test_legacy_representation_layer_is_recognised():
    config = get_config("B/16")
    shapes = expected_release_shapes(config, 21843, 224)
    shapes |= {"pre_logits/kernel": (768, 768), "pre_logits/bias": (768,)}
    stubs = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    found, info = infer_config(stubs, "ViT-B_16")
    assert found.name == "B/16" and found.representation_size == 768
    assert info["has_representation"]


def test_named_architecture_that_disagrees_is_refused():
    shapes = expected_release_shapes(get_config("S/16"), 1000, 224)
    stubs = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    with pytest.raises(VitzooError) as err:
        infer_config(stubs, "B_16")
    text = str(err.value)
    assert "does not match architecture B/16" in text
    assert "hidden_size 384 (expected 768)" in text
    assert "num_heads 6 (expected 12)" in text
    assert "patch_size" not in text  # only differing fields are named
    assert "S/16" in text  # and it says what the file is


def test_load_for_finetune_refuses_wrong_name(tmp_path):
    path = write_tiny_vit(tmp_path / "t.npz")
    with pytest.raises(VitzooError, match="does not match architecture Ti/16"):
        load_for_finetune(path, arch="Ti/16", num_classes=3)


# --- adaptation ----------------------------------------------------------------------------


def test_resize_posemb_known_values():
    grid = np.arange(4, dtype=np.float32).reshape(1, 4, 1)  # 2x2 grid [[0, 1], [2, 3]]
    posemb = np.concatenate([np.full((1, 1, 1), 42.0, np.float32), grid], axis=1)
    out = resize_posemb(posemb, 3, has_class_token=True)
    assert out.shape == (1, 10, 1)
    assert out[0, 0, 0] == 42.0  # class token kept
    expected = [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]]
    np.testing.assert_allclose(out[0, 1:, 0].reshape(3, 3), expected, atol=1e-6)
    # no class token; channels are resized independently
    two = np.stack([grid[0, :, 0], 10 * grid[0, :, 0]], axis=-1)[None]
    out = resize_posemb(two, (3, 3), has_class_token=False)
    assert out.shape == (1, 9, 2)
    np.testing.assert_allclose(out[0, :, 1], 10 * np.array(expected).ravel(), atol=1e-5)
    # same grid: unchanged
    assert np.array_equal(resize_posemb(posemb, 2), posemb)


def test_resize_posemb_rejects_non_square():
    with pytest.raises(VitzooError, match="not a square"):
        resize_posemb(np.zeros((1, 6, 4), np.float32), 3, has_class_token=True)


def test_replace_head_zero_init():
    config, _ = infer_config(tiny_vit_arrays())
    params = release_to_params(tiny_vit_arrays(), config)
    new = replace_head(params, 7)
    assert new["head"]["kernel"].shape == (32, 7) and not new["head"]["kernel"].any()
    assert new["head"]["bias"].shape == (7,) and not new["head"]["bias"].any()
    assert params["head"]["kernel"].shape == (32, 10)  # input untouched
    assert new["Transformer"] is params["Transformer"]


def test_drop_representation():
    flat = tiny_vit_arrays(representation_size=24)
    config, _ = infer_config(flat)
    params = release_to_params(flat, config)
    assert params["head"]["kernel"].shape == (24, 10)
    dropped = drop_representation(params)
    assert "pre_logits" not in dropped and "pre_logits" in params
    assert dropped["head"]["kernel"].shape == (32, 10) and not dropped["head"]["kernel"].any()
    plain = release_to_params(tiny_vit_arrays(), infer_config(tiny_vit_arrays())[0])
    assert drop_representation(plain).keys() == plain.keys()


def test_load_for_finetune_resizes_replaces_and_runs(tmp_path):
    import jax.numpy as jnp

    path = write_tiny_vit(tmp_path / "t.npz", representation_size=24, image_size=32, patch=8)
    config, params = load_for_finetune(path, num_classes=3, resolution=48)
    assert config.representation_size is None and "pre_logits" not in params
    assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 37, 32)
    assert params["head"]["kernel"].shape == (32, 3) and not params["head"]["kernel"].any()
    model = build_model(config, 3)
    logits = model.apply({"params": params}, jnp.zeros((2, 48, 48, 3)), train=False)
    assert logits.shape == (2, 3) and not np.asarray(logits).any()  # zero head
    # encoder weights are carried over untouched
    flat = load_npz(path)
    np.testing.assert_array_equal(
        params["Transformer"]["encoderblock"]["MlpBlock_3"]["Dense_1"]["kernel"][1],
        flat["Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel"])


def test_load_for_finetune_keeps_head_and_representation_when_asked(tmp_path):
    flat = tiny_vit_arrays(representation_size=24)
    config, params = load_for_finetune(flat, num_classes=10, keep_representation=True)
    assert config.representation_size == 24
    np.testing.assert_array_equal(params["head"]["kernel"], flat["head/kernel"])
    np.testing.assert_array_equal(params["pre_logits"]["kernel"], flat["pre_logits/kernel"])


def test_load_for_finetune_resized_model_matches_numpy(tmp_path):
    """The resized posemb is what the model uses: compare with the NumPy reference."""
    flat = tiny_hybrid_arrays(seed=9, image_size=64)  # stem-only, stride 8 -> 8x8 grid
    config, params = load_for_finetune(flat, num_classes=10, resolution=96)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    ref = dict(flat)
    ref["Transformer/posembed_input/pos_embedding"] = resize_posemb(
        flat["Transformer/posembed_input/pos_embedding"], 12)
    expected = np_vit(ref, images)
    got = np.asarray(build_model(config, 10).apply({"params": params}, images))
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


def test_load_for_finetune_mixer_resolution_is_fixed(tmp_path):
    path = write_tiny_mixer(tmp_path / "m.npz")
    config, params = load_for_finetune(path, num_classes=4, resolution=32)
    assert config.family == "mixer" and params["head"]["bias"].shape == (4,)
    with pytest.raises(VitzooError, match="own resolution 32"):
        load_for_finetune(path, num_classes=4, resolution=64)


def test_load_for_finetune_bad_resolution(tmp_path):
    path = write_tiny_hybrid(tmp_path / "h.npz", blocks=(1,))
    with pytest.raises(VitzooError, match="multiple of"):
        load_for_finetune(path, num_classes=4, resolution=70)
