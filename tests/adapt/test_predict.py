"""``vitzoo predict``: preprocessing, labels, top-k and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.support.ckpt_factory import tiny_vit_arrays, write_tiny_hybrid, write_tiny_vit
from tests.support.images import resize_bilinear_no_antialias
from vitzoo.cli import app, main
from vitzoo.errors import VitzooError
from vitzoo.predict import Predictor, find_labels, imagenet2012_labels, predict, preprocess


@pytest.fixture
def images(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    png = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)).save(png)
    jpeg = tmp_path / "b.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 70), dtype=np.uint8)).save(jpeg)  # greyscale
    rgba = tmp_path / "c.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(rgba)
    return [png, jpeg, rgba]


def _forward(path, batch):
    from vitzoo.models import build_model
    from vitzoo.weights.release import load_checkpoint

    config, info, params = load_checkpoint(path)
    return np.asarray(build_model(config, info["num_classes"]).apply({"params": params}, batch))


def test_preprocess_reference_recipe(images):
    x = preprocess(images[0], 32)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    # bilinear without antialiasing (vit_jax's evaluation; tests/data/test_one_pixel_path.py)
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    expected = resize_bilinear_no_antialias(rgb, 32) / 127.5 - 1.0
    np.testing.assert_allclose(x, expected, atol=2e-5)
    assert preprocess(images[1], 16).shape == (16, 16, 3)  # greyscale -> RGB
    white = Image.new("RGB", (5, 5), (255, 255, 255))
    assert np.all(preprocess(white, 4) == 1.0)
    assert np.all(preprocess(Image.new("RGB", (5, 5)), 4) == -1.0)


def test_preprocess_bad_image(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    with pytest.raises(VitzooError, match="not a readable image"):
        preprocess(bad, 32)
    with pytest.raises(VitzooError, match="does not exist"):
        preprocess(tmp_path / "missing.png", 32)


def test_predict_matches_model_and_sorts(tmp_path, images):
    path = write_tiny_vit(tmp_path / "ft" / "model.npz", num_classes=7, seed=3)
    results = predict(path, images, top_k=3, with_logits=True)
    assert [r.image for r in results] == [str(p) for p in images]
    batch = np.stack([preprocess(p, 32) for p in images])
    logits = _forward(path, batch)
    for result, row in zip(results, logits, strict=True):
        np.testing.assert_allclose(result.logits, row, rtol=1e-5, atol=1e-5)
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        assert [e["index"] for e in result.top_k] == list(np.argsort(-probs)[:3])
        assert [e["label"] for e in result.top_k] == [str(e["index"]) for e in result.top_k]
        np.testing.assert_allclose([e["probability"] for e in result.top_k],
                                   np.sort(probs)[::-1][:3], rtol=1e-5)


def test_top_k_is_capped_at_class_count(tmp_path, images):
    path = write_tiny_vit(tmp_path / "m.npz", num_classes=2)
    (result,) = predict(path, images[:1], top_k=5)
    assert len(result.top_k) == 2
    assert sum(e["probability"] for e in result.top_k) == pytest.approx(1.0)


def test_user_class_names_next_to_checkpoint(tmp_path, images):
    path = write_tiny_vit(tmp_path / "run" / "final.npz", num_classes=3)
    (path.parent / "run.json").write_text(json.dumps(
        {"dataset": "mine", "class_names": ["cat", "dog", "bird"]}))
    predictor = Predictor(path)
    assert predictor.labels.names == ["cat", "dog", "bird"]
    (result,) = predictor.predict(images[:1], top_k=3)
    assert {e["label"] for e in result.top_k} == {"cat", "dog", "bird"}
    # class_names.json wins over run.json
    (path.parent / "class_names.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    assert find_labels(path, 3).names == ["a", "b", "c"]
    (path.parent / "class_names.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(VitzooError, match="2 class names but the checkpoint has 3"):
        find_labels(path, 3)


def test_imagenet_labels_are_the_tfds_list(tmp_path):
    names = imagenet2012_labels()
    assert names is not None and len(names) == 1000
    assert names[0] == "n01440764" and names[-1] == "n15075141"
    labels = find_labels(tmp_path / "x.npz", 1000)
    assert labels.names[285] == "Egyptian cat (n02124075)" and "ImageNet-1k" in labels.source
    assert [n.rsplit(" (", 1)[1][:-1] for n in labels.names] == names
    assert find_labels(tmp_path / "x.npz", 21843).names[0] == "organism, being (n00004475)"
    assert find_labels(tmp_path / "x.npz", 999).names is None


@pytest.mark.slow
def test_imagenet_labels_equal_tfds_builder_metadata():
    import tensorflow_datasets as tfds

    assert imagenet2012_labels() == tfds.builder("imagenet2012").info.features["label"].names


def test_resolution_option_resizes_position_embedding(tmp_path, images):
    path = write_tiny_hybrid(tmp_path / "h.npz", num_classes=4)  # native 64 px, stride 8
    predictor = Predictor(path, resolution=96)
    assert predictor.params["Transformer"]["posembed_input"]["pos_embedding"].shape[1] == 145
    (result,) = predictor.predict(images[:1])
    assert len(result.top_k) == 4
    with pytest.raises(VitzooError, match="multiple of"):
        Predictor(path, resolution=100)


def test_headless_checkpoint_is_refused(tmp_path):
    path = write_tiny_vit(tmp_path / "n.npz", num_classes=0)
    with pytest.raises(VitzooError, match="no classification head"):
        Predictor(path)


def test_cli_json_end_to_end(tmp_path, images):
    path = write_tiny_vit(tmp_path / "m.npz", num_classes=1000, seed=4)
    result = CliRunner().invoke(app, ["predict", str(path), *map(str, images), "--top-k", "4",
                                      "--format", "jsonl", "--logits"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    as_array = CliRunner().invoke(app, ["predict", str(path), *map(str, images), "--top-k", "4",
                                        "--format", "json", "--logits"])
    assert json.loads(as_array.stdout) == lines  # json is one array of the same objects
    assert [d["image"] for d in lines] == [str(p) for p in images]
    for d in lines:
        assert set(d) == {"image", "top_k", "logits"}
        assert len(d["top_k"]) == 4 and len(d["logits"]) == 1000
        assert all(set(e) == {"index", "label", "probability"} for e in d["top_k"])
        import re  # ImageNet lemmas with their WordNet ids

        assert all(re.fullmatch(r".+ \(n\d{8}\)", e["label"]) for e in d["top_k"])
        probs = np.exp(np.array(d["logits"]) - max(d["logits"]))
        probs /= probs.sum()
        assert probs.sum() == pytest.approx(1.0)
        assert [e["probability"] for e in d["top_k"]] == pytest.approx(
            list(np.sort(probs)[::-1][:4]), rel=1e-5)
        assert [e["index"] for e in d["top_k"]] == list(np.argsort(-probs)[:4])


def test_cli_table_output(tmp_path, images):
    path = write_tiny_vit(tmp_path / "m.npz", num_classes=5)
    result = CliRunner().invoke(app, ["predict", str(path), str(images[0])])
    assert result.exit_code == 0, result.output
    assert "probability" in result.stdout and "class indices" in result.stdout


def test_cli_errors_are_one_line(tmp_path, images, capsys):
    bad = tmp_path / "page.npz"
    bad.write_bytes(b"<html><body>404</body></html>")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(bad), str(images[0])])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "HTML page" in err and err.count("\n") == 1
    path = write_tiny_vit(tmp_path / "m.npz")
    with pytest.raises(SystemExit):
        main(["predict", str(path), str(images[0]), "--format", "yaml"])
    assert "invalid value for '--format'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "missing" / "x.npz"), str(images[0])])
    assert "no such file" in capsys.readouterr().err


def test_cli_subprocess_entry_point(tmp_path, images):
    """The installed console script, as a user runs it (sums the full softmax)."""
    flat = tiny_vit_arrays(num_classes=3, seed=8)
    path = tmp_path / "s.npz"
    np.savez(path, **flat)
    exe = Path(sys.executable).with_name("vitzoo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                           "from vitzoo.cli import main; main()"]
    out = subprocess.run([*cmd, "predict", str(path), str(images[2]), "--format", "json",
                          "--top-k", "5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (data,) = json.loads(out.stdout)
    assert len(data["top_k"]) == 3  # --top-k 5 of a 3-class model: all three classes
    assert sum(e["probability"] for e in data["top_k"]) == pytest.approx(1.0, abs=1e-6)
