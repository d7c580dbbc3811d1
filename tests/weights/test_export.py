"""``vitzoo export``: timm / transformers / npz folders, checked without torch.

Files, keys, shapes and configs are checked directly; the weights go back through vitzoo's
own converters and must equal the source exactly; and a NumPy forward pass written in
transformers' layout (sharing no code with vitzoo) must give vitzoo's logits.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.support.ckpt_factory import tiny_hybrid_arrays, tiny_mixer_arrays, tiny_vit_arrays, write_tiny_vit
from tests.support.cli_helpers import run_cli
from vitzoo.errors import VitzooError
from vitzoo.models import build_model, infer_config
from vitzoo.weights.export import ExportSource, export_checkpoint, open_source
from vitzoo.weights.hf import hf_to_release, release_to_hf
from vitzoo.weights.release import load_npz, npz_bytes, release_to_params
from vitzoo.weights.timm import load_timm_safetensors, release_to_timm


def _write(path, arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(npz_bytes(arrays))
    return path


def _assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape and np.array_equal(got[key], want[key]), key


@pytest.fixture()
def imagenet_vit(tmp_path):
    return write_tiny_vit(tmp_path / "src" / "in1k.npz", num_classes=1000, image_size=32, patch=8,
                          hidden=32, heads=4, mlp=64, seed=21)


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    write_tiny_vit(run / "final.npz", num_classes=3, image_size=32, patch=8, seed=22)
    (run / "run.json").write_text(json.dumps({"status": "finished",
                                              "class_names": ["cat", "dog", "bird"]}))
    return run


# --- timm ---------------------------------------------------------------------------------


def test_timm_export_files_config_and_round_trip(imagenet_vit, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", str(imagenet_vit), "--to", "timm", "--out",
                             str(tmp_path / "timm"))
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "timm" / "model.safetensors"),
                                str(tmp_path / "timm" / "config.json")]
    cfg = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert cfg["architecture"] == "vit_base_patch8_224"  # generic entry point, widths below
    assert cfg["num_classes"] == 1000 and cfg["num_features"] == 32
    assert cfg["model_args"] == {
        "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4,
        "mlp_ratio": 2.0, "qkv_bias": True, "class_token": True, "global_pool": "token",
        "fc_norm": False, "act_layer": "gelu_tanh"}
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [3, 32, 32] and pre["mean"] == pre["std"] == [0.5, 0.5, 0.5]
    assert pre["crop_pct"] == 1.0 and pre["interpolation"] == "bilinear"
    assert pre["custom_load"] is False and pre["num_classes"] == 1000
    assert cfg["label_names"][285] == "n02124075"
    assert cfg["label_descriptions"]["n02124075"] == "Egyptian cat"
    assert "tanh" in cfg["vitzoo"]["numerics"] and "1e-6" in cfg["vitzoo"]["numerics"]

    flat = load_npz(imagenet_vit)
    config, _ = infer_config(flat)
    state = load_file(str(tmp_path / "timm" / "model.safetensors"))
    _assert_same(state, release_to_timm(flat, config))
    assert state["blocks.1.attn.qkv.weight"].shape == (96, 32)
    assert all(v.dtype == np.float32 for v in state.values())
    _assert_same(load_timm_safetensors(tmp_path / "timm" / "model.safetensors", arch=config), flat)


def test_timm_export_of_a_run_carries_its_class_names(run_dir, tmp_path):
    written = export_checkpoint(open_source(run_dir), "timm", tmp_path / "out")
    cfg = json.loads(written[-1].read_text())
    assert cfg["label_names"] == ["cat", "dog", "bird"] and "label_descriptions" not in cfg
    assert cfg["vitzoo"]["source"] == "final.npz"


def test_timm_export_of_a_gap_vit_pools_after_the_final_norm(tmp_path):
    src = _write(tmp_path / "gap.npz", tiny_vit_arrays(classifier="gap", num_classes=7))
    cfg = json.loads(export_checkpoint(open_source(src), "timm", tmp_path / "o")[-1].read_text())
    args = cfg["model_args"]
    assert (args["class_token"], args["global_pool"], args["fc_norm"]) == (False, "avg", False)
    assert "label_names" not in cfg  # 7 classes: no names known


@pytest.mark.parametrize("make, what", [
    (lambda: tiny_hybrid_arrays(), "hybrid R\\+ViT"), (lambda: tiny_mixer_arrays(), "Mixer")])
def test_timm_export_refuses_models_whose_numerics_timm_cannot_reproduce(tmp_path, make, what):
    src = _write(tmp_path / "m.npz", make())
    with pytest.raises(VitzooError, match=f"{what} model; timm's versions .* --to npz"):
        export_checkpoint(open_source(src), "timm", tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --- transformers -----------------------------------------------------------------------


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_hf_vit(sd, cfg, images_nhwc):
    """``ViTForImageClassification`` forward from its own state-dict names and config."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]

    def lin(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    w = sd["vit.embeddings.patch_embeddings.projection.weight"]  # [D, 3, P, P]
    p = cfg["patch_size"]
    b, h, wd, _ = images_nhwc.shape
    patches = images_nhwc.astype(np.float64).reshape(b, h // p, p, wd // p, p, 3)
    x = np.einsum("bipjqc,dcpq->bijd", patches, w).reshape(b, -1, w.shape[0])
    x = x + sd["vit.embeddings.patch_embeddings.projection.bias"]
    x = np.concatenate([np.broadcast_to(sd["vit.embeddings.cls_token"], (b, 1, x.shape[-1])), x], 1)
    x = x + sd["vit.embeddings.position_embeddings"]
    for i in range(cfg["num_hidden_layers"]):
        t = f"vit.encoder.layer.{i}"
        y = ln(x, f"{t}.layernorm_before")
        q, k, v = (lin(y, f"{t}.attention.attention.{n}").reshape(b, -1, heads, x.shape[-1] // heads)
                   .transpose(0, 2, 1, 3) for n in ("query", "key", "value"))
        a = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = x + lin(y, f"{t}.attention.output.dense")
        x = x + lin(_np_gelu(lin(ln(x, f"{t}.layernorm_after"), f"{t}.intermediate.dense")),
                    f"{t}.output.dense")
    return lin(ln(x, "vit.layernorm")[:, 0], "classifier")


def test_transformers_export_files_configs_logits_and_round_trip(imagenet_vit, tmp_path):
    out = tmp_path / "hf"
    written = export_checkpoint(open_source(imagenet_vit), "transformers", out)
    assert [p.name for p in written] == ["model.safetensors", "preprocessor_config.json", "config.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["ViTForImageClassification"] and cfg["model_type"] == "vit"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["image_size"], cfg["patch_size"]) == (32, 2, 4, 64, 32, 8)
    assert cfg["hidden_act"] == "gelu_pytorch_tanh" and cfg["layer_norm_eps"] == 1e-6
    assert cfg["qkv_bias"] is True and cfg["hidden_dropout_prob"] == 0.0
    assert cfg["id2label"]["285"] == "Egyptian cat (n02124075)"
    assert cfg["label2id"]["Egyptian cat (n02124075)"] == 285 and len(cfg["label2id"]) == 1000
    proc = json.loads((out / "preprocessor_config.json").read_text())
    assert proc["image_processor_type"] == "ViTImageProcessor"
    assert proc["size"] == {"height": 32, "width": 32} and proc["resample"] == 2
    assert proc["image_mean"] == proc["image_std"] == [0.5, 0.5, 0.5]
    assert proc["rescale_factor"] == pytest.approx(1 / 255)

    state = load_file(str(out / "model.safetensors"))
    assert state["vit.encoder.layer.0.attention.attention.query.weight"].shape == (32, 32)
    assert state["vit.encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)
    assert state["vit.embeddings.patch_embeddings.projection.weight"].shape == (32, 3, 8, 8)
    assert state["vit.embeddings.position_embeddings"].shape == (1, 17, 32)
    assert state["classifier.weight"].shape == (1000, 32)
    assert len(state) == 4 + 16 * 2 + 4

    flat = load_npz(imagenet_vit)
    config, _ = infer_config(flat)
    _assert_same(hf_to_release(state, config), flat)

    images = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    expected = np_hf_vit(state, cfg, images)
    got = np.asarray(build_model(config, 1000).apply(
        {"params": release_to_params(flat, config)}, images))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


def test_transformers_export_of_a_run_uses_its_names(run_dir, tmp_path):
    export_checkpoint(open_source(run_dir), "transformers", tmp_path / "o")
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}
    assert cfg["label2id"] == {"cat": 0, "dog": 1, "bird": 2}


@pytest.mark.parametrize("arrays, message", [
    (lambda: tiny_hybrid_arrays(), "hybrid R\\+ViT model; transformers' ViTForImageClassification has no"),
    (lambda: tiny_mixer_arrays(), "Mixer model; transformers' ViTForImageClassification has no"),
    (lambda: tiny_vit_arrays(classifier="gap"), "average of its tokens"),
    (lambda: tiny_vit_arrays(representation_size=16), "representation \\(pre_logits\\) layer"),
    (lambda: tiny_vit_arrays(num_classes=0), "no classification head"),
], ids=["hybrid", "mixer", "gap", "pre_logits", "headless"])
def test_transformers_export_refuses_what_vit_for_classification_cannot_hold(tmp_path, arrays, message):
    src = _write(tmp_path / "m.npz", arrays())
    with pytest.raises(VitzooError, match=message):
        export_checkpoint(open_source(src), "transformers", tmp_path / "o")
    assert not (tmp_path / "o" / "config.json").exists()


def test_hf_reader_refuses_unknown_keys():
    flat = tiny_vit_arrays()
    config, _ = infer_config(flat)
    state = release_to_hf(flat, config)
    state["vit.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    with pytest.raises(VitzooError, match=r"cannot place: vit\.pooler\.dense\.weight"):
        hf_to_release(state, config)


def test_duplicate_class_names_are_refused_for_transformers(tmp_path):
    src = write_tiny_vit(tmp_path / "run" / "final.npz", num_classes=2)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"class_names": ["a", "a"]}))
    with pytest.raises(VitzooError, match="class names are not unique"):
        export_checkpoint(open_source(src.parent), "transformers", tmp_path / "o")


# --- npz and the command ----------------------------------------------------------------


def test_npz_export_is_the_release_layout_with_readable_names(imagenet_vit, tmp_path):
    written = export_checkpoint(open_source(imagenet_vit), "npz", tmp_path / "o")
    assert [p.name for p in written] == ["model.npz", "class_names.json"]
    _assert_same(load_npz(written[0]), load_npz(imagenet_vit))
    names = json.loads(written[1].read_text())["class_names"]
    assert len(names) == 1000 and names[285] == "Egyptian cat (n02124075)"


def test_npz_export_of_a_mixer_keeps_every_array(tmp_path):
    src = _write(tmp_path / "mixer.npz", tiny_mixer_arrays(num_classes=3))
    written = export_checkpoint(open_source(src), "npz", tmp_path / "o")
    assert [p.name for p in written] == ["model.npz"]
    _assert_same(load_npz(written[0]), tiny_mixer_arrays(num_classes=3))


def test_cli_exports_a_run_folder(run_dir, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", str(run_dir), "--to", "npz", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert out.splitlines()[0] == str(tmp_path / "o" / "model.npz")
    assert json.loads((tmp_path / "o" / "class_names.json").read_text()) == {
        "class_names": ["cat", "dog", "bird"]}


def test_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", str(run_dir), "--to", "onnx", "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("error: unknown export format 'onnx'") and "--to timm" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "export", str(empty), "--to", "npz", "--out", str(tmp_path / "o"))
    assert code == 2 and "without a final.npz" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(capsys, "export", str(tmp_path / "missing.npz"), "--to", "npz",
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "no such file" in err and len(err.splitlines()) == 1
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "export", str(run_dir), "--to", "npz", "--out", str(tmp_path / "file"))
    assert code == 2 and "exists and is a file, not a folder" in err and len(err.splitlines()) == 1


def test_class_names_that_do_not_fit_the_head_are_refused(tmp_path):
    src = write_tiny_vit(tmp_path / "run" / "final.npz", num_classes=3)
    (tmp_path / "run" / "class_names.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(VitzooError, match="has 2 class names but the checkpoint has 3 outputs"):
        export_checkpoint(open_source(tmp_path / "run"), "npz", tmp_path / "o")
    with pytest.raises(VitzooError, match="unknown export format"):
        export_checkpoint(ExportSource(src, None, ""), "onnx", tmp_path / "o")
