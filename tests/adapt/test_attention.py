"""Attention maps: rollout maths, the returned weights, the PNGs and a model that learned where to look."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from tests.support.ckpt_factory import write_tiny_hybrid, write_tiny_mixer, write_tiny_vit
from tests.support.cli_helpers import run_cli
from vitzoo.attention import (
    forward_with_attention,
    output_names,
    overlay,
    patch_map,
    rollout,
    write_attention_maps,
)
from vitzoo.errors import VitzooError
from vitzoo.predict import Predictor, preprocess


def _softmax_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    logits = rng.normal(size=shape) * 3
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_rollout_matrices_are_row_stochastic_and_follow_the_reference():
    weights = _softmax_rows(np.random.default_rng(0), (2, 3, 4, 5, 5))  # [B, L, H, T, T]
    joint = rollout(weights)
    assert joint.shape == (2, 3, 5, 5)
    assert (joint >= 0).all()
    np.testing.assert_allclose(joint.sum(-1), 1.0, atol=1e-12)
    # The reference, written out for one image: mean heads, + I, renormalise, multiply up.
    a = weights[1].mean(1) + np.eye(5)
    a /= a.sum(-1, keepdims=True)
    np.testing.assert_allclose(joint[1, 2], a[2] @ a[1] @ a[0], atol=1e-12)
    # A layer that attends only to itself leaves the rollout unchanged.
    identity = np.broadcast_to(np.eye(5), (1, 4, 5, 5))
    np.testing.assert_allclose(rollout(np.concatenate([weights[0], identity]))[-1], joint[0, -1])


def test_patch_map_reads_the_class_token_row_or_the_mean_row():
    joint = np.full((5, 5), 0.1)
    joint[0] = [0.5, 0.05, 0.1, 0.15, 0.2]
    np.testing.assert_allclose(patch_map(joint), [[0.25, 0.5], [0.75, 1.0]])
    gap = np.tile([0.1, 0.2, 0.3, 0.4], (4, 1))
    np.testing.assert_allclose(patch_map(gap, "gap"), [[0.25, 0.5], [0.75, 1.0]])


def test_overlay_keeps_the_image_size_and_darkens_where_the_map_is_low():
    image = Image.new("RGB", (40, 20), (200, 100, 50))
    mask = np.array([[1.0, 0.0], [1.0, 0.0]])
    out = overlay(image.convert("L"), mask)
    pixels = np.asarray(out)
    assert out.size == (40, 20) and out.mode == "RGB"
    assert pixels[:, :5].min() > 100 and pixels[:, -5:].max() < 30


@pytest.mark.parametrize("kind", ["vit", "hybrid"])
def test_returned_weights_are_those_of_the_logits_and_params_stay_unchanged(tmp_path, kind):
    import jax

    from vitzoo.models import build_model

    path = (write_tiny_vit(tmp_path / "v.npz", num_classes=3) if kind == "vit"
            else write_tiny_hybrid(tmp_path / "h.npz", num_classes=3))
    predictor = Predictor(path)
    res = predictor.resolution
    images = np.random.default_rng(1).uniform(-1, 1, (2, res, res, 3)).astype(np.float32)
    forward = forward_with_attention(predictor.config, predictor.num_classes)
    logits, weights = forward(predictor.params, images)
    np.testing.assert_allclose(logits, predictor.logits(images), rtol=1e-5, atol=1e-6)
    config = predictor.config
    tokens = (res // config.stride) ** 2 + 1
    assert weights.shape == (2, config.num_layers, config.num_heads, tokens, tokens)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rollout(weights).sum(-1), 1.0, atol=1e-6)
    plain = build_model(config, 3)
    shapes = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), images))
    asked = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), images, outputs=True,
                                              attention=True))
    assert jax.tree.structure(shapes) == jax.tree.structure(asked)
    assert jax.tree.leaves(shapes) == jax.tree.leaves(asked)


def _photos(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    a = tmp_path / "in" / "a.png"
    a.parent.mkdir()
    Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)).save(a)
    b = tmp_path / "in" / "b.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 70), dtype=np.uint8)).save(b)
    other = tmp_path / "other"
    other.mkdir()
    c = other / "a.png"  # same stem as the first: both named with a hash of their path
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)).save(c)
    return [str(a), str(b), str(c)]


def test_predict_attention_writes_one_png_per_image_at_its_size(tmp_path, capsys):
    ckpt = write_tiny_vit(tmp_path / "tiny.npz", num_classes=3)
    photos = _photos(tmp_path)
    out = tmp_path / "maps"
    code, stdout, err = run_cli(capsys, "predict", str(ckpt), *photos, "--attention", str(out),
                                "--format", "jsonl")
    assert code == 0, err
    records = [json.loads(line) for line in stdout.splitlines()]
    names = (_hashed(photos[0]), "b.png", _hashed(photos[2]))
    assert [r["attention_map"] for r in records] == [str(out / n) for n in names]
    assert sorted(os.listdir(out)) == sorted(names)  # no temporary files left
    for photo, name in zip(photos, names, strict=True):
        with Image.open(out / name) as written, Image.open(photo) as original:
            assert (written.format, written.mode, written.size) == ("PNG", "RGB", original.size)
    # The PNG is the reference overlay of the rollout computed from the model's own weights.
    predictor = Predictor(ckpt)
    _, weights = forward_with_attention(predictor.config, predictor.num_classes)(
        predictor.params, preprocess(photos[0], predictor.resolution)[None])
    with Image.open(photos[0]) as original:
        expected = np.asarray(overlay(original, patch_map(rollout(weights)[0, -1])))
    assert np.array_equal(np.asarray(Image.open(out / names[0])), expected)
    code, _, err = run_cli(capsys, "predict", str(ckpt), photos[1], "--attention", str(out))
    assert code == 0 and "attention rollout overlays: 1 PNG(s)" in " ".join(_.split())


def test_a_failed_write_keeps_the_previous_map(tmp_path, monkeypatch):
    ckpt = write_tiny_vit(tmp_path / "tiny.npz", num_classes=3)
    photos = _photos(tmp_path)[:1]
    out = tmp_path / "maps"
    (target,) = write_attention_maps(Predictor(ckpt), photos, out)
    before = target.read_bytes()

    def broken_save(self, fp, format=None, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_attention_maps(Predictor(ckpt), photos, out)
    assert target.read_bytes() == before and os.listdir(out) == ["a.png"]  # one input: no hash


def test_mixer_and_bad_folders_are_one_line_errors(tmp_path, capsys):
    mixer = write_tiny_mixer(tmp_path / "mixer.npz", num_classes=3)
    photo = _photos(tmp_path)[0]
    out = tmp_path / "maps"
    code, _, err = run_cli(capsys, "predict", str(mixer), photo, "--attention", str(out))
    assert code != 0 and not out.exists()
    assert "is an MLP-Mixer, which has no attention to show" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(VitzooError, match="is a file"):
        write_attention_maps(Predictor(write_tiny_vit(tmp_path / "v.npz", num_classes=3)),
                             [photo], a_file)


def _hashed(path) -> str:
    """The documented name of a map whose stem another input shares (an oracle apart from the code)."""
    import hashlib
    from pathlib import Path

    resolved = str(Path(path).resolve())
    return f"{Path(path).stem}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}.png"


def test_output_names_are_unique_per_stem():
    inputs = ["x/cat.jpg", "y/cat.png", "dog.webp", "z/Cat.bmp", "x/cat.jpg"]
    assert output_names(inputs) == [_hashed("x/cat.jpg"), _hashed("y/cat.png"), "dog.png",
                                    _hashed("z/Cat.bmp"), _hashed("x/cat.jpg")]
    assert output_names(list(reversed(inputs))) == list(reversed(output_names(inputs)))


def test_same_names_in_other_folders_get_their_own_maps_named_in_the_json(tmp_path, capsys, monkeypatch):
    """The reported case: ``a/x.jpg b/x.jpg x-2.jpg`` wrote two files and named x-2.png twice."""
    rng = np.random.default_rng(3)
    photos = []
    for relative, size in (("a/x.jpg", (40, 24)), ("b/x.jpg", (24, 56)), ("x-2.jpg", (32, 32))):
        path = tmp_path / relative
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        photos.append(relative)
    ckpt = write_tiny_vit(tmp_path / "tiny.npz", num_classes=3)
    monkeypatch.chdir(tmp_path)  # relative inputs, as typed
    code, stdout, err = run_cli(capsys, "predict", str(ckpt), *photos, "--attention", "maps",
                                "--format", "json")
    assert code == 0, err
    named = [row["attention_map"] for row in json.loads(stdout)]
    assert named == [os.path.join("maps", n) for n in (_hashed("a/x.jpg"), _hashed("b/x.jpg"), "x-2.png")]
    assert len(set(named)) == 3 and sorted(os.listdir("maps")) == sorted(os.path.basename(n) for n in named)
    predictor = Predictor(ckpt)
    forward = forward_with_attention(predictor.config, predictor.num_classes)
    for photo, written in zip(photos, named, strict=True):  # each file is the map of its own image
        _, weights = forward(predictor.params, preprocess(photo, predictor.resolution)[None])
        with Image.open(photo) as original:
            expected = np.asarray(overlay(original, patch_map(rollout(weights)[0, -1])))
        assert np.array_equal(np.asarray(Image.open(written)), expected), photo


def _quadrant_task(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """32x32 images of four coloured quadrants; only the top-left one's colour is the class."""
    labels = rng.integers(0, 2, n)
    colours = rng.integers(0, 2, (n, 4))
    colours[:, 0] = labels
    images = rng.uniform(-1.0, -0.3, (n, 32, 32, 3)).astype(np.float32)
    for quadrant, (y, x) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        for channel in (0, 1):
            images[colours[:, quadrant] == channel, y:y + 16, x:x + 16, channel] += 1.2
    return images, labels


@pytest.mark.slow
def test_a_model_trained_on_one_quadrant_looks_at_that_quadrant():
    import jax
    import jax.numpy as jnp
    import optax

    from vitzoo.models import build_model, get_config

    config = dataclasses.replace(get_config("Ti/16"), name="tiny", hidden_size=32, mlp_dim=64,
                                 num_layers=2, num_heads=2, patch_size=8)
    model = build_model(config, 2)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, x, y):
        def loss(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    forward = forward_with_attention(config, 2)
    test_x, test_y = _quadrant_task(64, np.random.default_rng(99))

    def looked(params) -> tuple[float, float]:
        logits, weights = forward(params, test_x)
        mean_map = np.mean([patch_map(j) for j in rollout(weights)[:, -1]], axis=0)
        elsewhere = np.concatenate([mean_map[:2, 2:].ravel(), mean_map[2:].ravel()]).mean()
        return float((logits.argmax(-1) == test_y).mean()), mean_map[:2, :2].mean() / elsewhere

    _, untrained = looked(params)
    rng = np.random.default_rng(0)
    for _ in range(120):
        params, state = step(params, state, *_quadrant_task(32, rng))
    accuracy, trained = looked(params)
    assert accuracy >= 0.95  # it learned the task, so the map has something to show
    assert untrained < 1.3 and trained > 3.0  # the signal quadrant lights up (5.4x here)


def _timm_center_crop_box(width: int, height: int, res: int, crop_pct: float
                          ) -> tuple[int, int, int, int]:
    """Worked out here from timm's evaluation transform, in the original image's pixels:
    shorter side to floor(res / crop_pct), the longer scaled with it (torchvision truncates),
    a res square cut at round((side - res) / 2) (half to even), mapped back by each axis's scale."""
    scale = math.floor(res / crop_pct)
    tall = width < height
    sized = (scale, int(scale * height / width)) if tall else (int(scale * width / height), scale)
    start = [round((side - res) / 2) for side in sized]
    ratio = (width / sized[0], height / sized[1])
    return (round(start[0] * ratio[0]), round(start[1] * ratio[1]),
            round((start[0] + res) * ratio[0]), round((start[1] + res) * ratio[1]))


@pytest.mark.parametrize("size", [(61, 45), (37, 70)])
def test_a_cropping_checkpoints_map_covers_the_centre_crop_it_saw(tmp_path, capsys, size):
    """DeiT's rule (crop_pct 0.9, centre crop): on a white image the map is bright exactly on
    the crop box the model saw and dark on the border it never saw; the PNG keeps the size."""
    from tests.support.family_standins import STANDINS, write_standin

    folder = write_standin(tmp_path / "models", "deit")
    crop_pct = STANDINS["deit"][2]["crop_pct"]
    assert crop_pct < 1
    photo = tmp_path / "white.png"
    Image.new("RGB", size, (255, 255, 255)).save(photo)
    out = tmp_path / "maps"
    code, _, err = run_cli(capsys, "predict", str(folder), str(photo), "--attention", str(out),
                           "--format", "json")
    assert code == 0, err
    res = Predictor(folder).resolution
    left, top, right, bottom = _timm_center_crop_box(*size, res, crop_pct)
    assert min(left, top) > 0 and right < size[0] and bottom < size[1]  # a border all round
    pixels = np.asarray(Image.open(out / "white.png"))
    assert pixels.shape == (size[1], size[0], 3)
    lit = pixels.max(axis=-1) > 0
    rows, cols = np.nonzero(lit)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (left, top, right, bottom)
    assert lit[top:bottom, left:right].all()  # all of the box: the map is positive everywhere
