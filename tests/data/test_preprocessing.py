"""Preprocessing as a property of the checkpoint.

The oracle for timm's rule is written here from timm's and torchvision's documented transforms
(``transforms_imagenet_eval``: shorter side to ``floor(res / crop_pct)`` with torchvision's
``int(size * long / short)``, ``center_crop`` at ``round((h - res) / 2)``, ``ToTensor``,
``Normalize``), with Pillow doing the resize as it does under timm. vitzoo's pipeline runs
TensorFlow, so the resize is not the same code, and the tolerance says by how much it may differ
(in grey levels, i.e. ``1/255/std`` after normalising):

* Pillow resamples in two passes with uint8 rounding in between and fixed-point weights;
  vitzoo does the same passes width first (Pillow's classic order). Per pass that leaves at
  most one level (measured on random images: bicubic equal almost everywhere, bilinear
  enlargement two levels on a few per cent of pixels).
* Pillow 13 runs the vertical pass first for some shapes (measured: when the height shrinks by
  more than twice as many pixels as the width). The rounding of the intermediate then differs:
  on random noise a quarter of the values move by one level and a few pixels by up to ~10.

Hence: 99% of values within one level (two for bilinear), a mean difference under half a
level, and at most 12 levels anywhere; on photographs the passes commute far more closely.

Any slip in geometry (a crop one pixel off, a squashed instead of an aspect-kept resize, another
kernel or antialiasing) moves random pixels by tens of levels on average, far outside these.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitzoo.data.preprocess import (
    VIT_JAX,
    Preprocess,
    Preprocessing,
    eval_recipe,
    train_recipe,
)
from vitzoo.errors import VitzooError

RES = 20
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
#: test images (height, width): landscape and portrait, an enlargement, an exact fit, and crop
#: offsets where round-half-even differs from flooring: left = round(11 / 2) = 6 for 37x53 and
#: top = round(3 / 2) = 2 for 47x44 at crop_pct 0.875, top = round(7 / 2) = 4 for 55x40 at 1.0
SHAPES = {"a": [(37, 53), (61, 29), (9, 13)], "b": [(22, 22), (47, 44), (25, 70), (55, 40)]}


def timm_config(mean, std, *, interpolation="bicubic", crop_pct=0.875, crop_mode="center",
                size=RES) -> dict:
    """A ``config.json`` as timm writes it (``timm/models/_hub.py``)."""
    return {"architecture": "vit_tiny_patch16_224", "num_classes": 0,
            "pretrained_cfg": {"tag": "test", "input_size": [3, size, size],
                               "interpolation": interpolation, "crop_pct": crop_pct,
                               "crop_mode": crop_mode, "mean": list(mean), "std": list(std),
                               "num_classes": 0}}


def timm_eval_oracle(image: Image.Image, res: int, cfg: dict) -> np.ndarray:
    """timm's evaluation transform on a PIL image, written from timm's and torchvision's code."""
    pre = cfg["pretrained_cfg"]
    scale = math.floor(res / pre["crop_pct"])
    w, h = image.size
    if pre["crop_mode"] == "squash":
        new_w, new_h = scale, scale
    elif w <= h:
        new_w, new_h = scale, int(scale * h / w)
    else:
        new_w, new_h = int(scale * w / h), scale
    kernel = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    resized = np.asarray(image.resize((new_w, new_h), kernel[pre["interpolation"]]), np.float64)
    top, left = round((new_h - res) / 2.0), round((new_w - res) / 2.0)
    crop = resized[top:top + res, left:left + res] / 255.0
    return (crop - np.asarray(pre["mean"])) / np.asarray(pre["std"])


def _write_folder(root: Path) -> list[Path]:
    """``root/train|test/<class>/*.png`` of random pixels; the test files in the scanner's order."""
    rng = np.random.default_rng(7)
    out = []
    for split in ("train", "test"):
        for cls, shapes in sorted(SHAPES.items()):
            (root / split / cls).mkdir(parents=True)
            for i, shape in enumerate(shapes):
                path = root / split / cls / f"{i}.png"
                Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)
                if split == "test":
                    out.append(path)
    return out


def _eval_pixels(root: Path, recipe: Preprocess) -> np.ndarray:
    from vitzoo.data import Layout, open_dataset

    data = open_dataset(str(root), need_train=False)
    rows = []
    for batch in data.eval.eval_batches(recipe, Layout(4)):
        rows.append(batch["image"].reshape(-1, recipe.size, recipe.size, 3)[batch["mask"].reshape(-1)])
    return np.concatenate(rows)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("pixels") / "data"
    return root, _write_folder(root)


@pytest.mark.parametrize("cfg, levels", [
    (timm_config(*IMAGENET), 1),                                          # DeiT, DINO, MAE
    (timm_config(*CLIP, crop_pct=1.0), 1),                                 # CLIP
    (timm_config((0.5,) * 3, (0.5,) * 3, crop_pct=0.9, crop_mode="squash"), 1),
    (timm_config(*IMAGENET, interpolation="bilinear", crop_pct=0.95), 2),
], ids=["imagenet-0.875-center", "clip-1.0-center", "siglip-0.9-squash", "bilinear-0.95"])
def test_pipeline_pixels_equal_timms_transform_and_predict_is_bit_identical(folder, cfg, levels):
    from vitzoo.predict import preprocess

    root, files = folder
    rule = Preprocessing.from_timm(cfg, "config.json")
    recipe = eval_recipe(RES, rule)
    pixels = _eval_pixels(root, recipe)
    assert pixels.shape == (len(files), RES, RES, 3)
    for path, row in zip(files, pixels, strict=True):
        with Image.open(path) as image:
            want = timm_eval_oracle(image.convert("RGB"), RES, cfg)
        off = np.abs(row - want) * np.asarray(cfg["pretrained_cfg"]["std"]) * 255  # grey levels
        stats = (path.name, off.max(), off.mean(), (off <= levels + 1e-3).mean())
        assert off.max() <= 12 and off.mean() < 0.5, stats
        assert (off <= levels + 1e-3).mean() >= 0.99, stats
        np.testing.assert_array_equal(preprocess(path, recipe), row, err_msg=path.name)


def test_release_checkpoints_keep_the_vit_jax_rule():
    assert eval_recipe(384) == eval_recipe(384, VIT_JAX) == Preprocess(resize=384)
    assert train_recipe(384, VIT_JAX) == Preprocess(resize=448, crop=384, flip=True)
    # the recorded form reads back, also from records that stored a value range
    assert Preprocess.from_dict(eval_recipe(24, VIT_JAX).as_dict()) == eval_recipe(24)
    old = {"resize": 28, "crop": 24, "flip": True, "value_range": [-1.0, 1.0],
           "method": "bilinear", "antialias": False}
    assert Preprocess.from_dict(old) == train_recipe(24)


def test_timm_recipe_follows_crop_pct_and_crop_mode():
    rule = Preprocessing.from_timm(timm_config(*IMAGENET, crop_pct=0.875), "c.json")
    assert eval_recipe(224, rule) == Preprocess(
        resize=256, crop=224, mean=IMAGENET[0], std=IMAGENET[1], method="bicubic",
        antialias=True, keep_aspect=True, center_crop=True)
    squash = Preprocessing.from_timm(timm_config(*IMAGENET, crop_pct=1.0, crop_mode="squash"), "c")
    assert eval_recipe(224, squash).resize == 224 and eval_recipe(224, squash).crop is None
    # training keeps the paper's random crop, with the checkpoint's resampler and normalisation
    assert train_recipe(224, rule) == Preprocess(
        resize=261, crop=224, flip=True, mean=IMAGENET[0], std=IMAGENET[1], method="bicubic",
        antialias=True)


def test_fields_timm_leaves_out_take_timms_defaults():
    rule = Preprocessing.from_timm({"architecture": "x", "pretrained_cfg": {"mean": [0.5] * 3,
                                                                           "std": [0.5] * 3}}, "c")
    assert (rule.interpolation, rule.crop_pct, rule.crop_mode) == ("bicubic", 0.875, "center")
    bare = Preprocessing.from_timm({"architecture": "x"}, "cfg.json")
    assert (bare.mean, bare.std) == IMAGENET and "no pretrained_cfg" in bare.origin


@pytest.mark.parametrize("change, words", [
    ({"crop_mode": "border"}, "crop_mode 'border' is not supported"),
    ({"interpolation": "lanczos"}, "interpolation 'lanczos'"),
    ({"crop_pct": 1.2}, "crop_pct must be in (0, 1]"),
    ({"crop_pct": "big"}, "crop_pct must be a number"),
    ({"mean": [0.5, 0.5]}, "mean must be three numbers"),
    ({"std": [0.5, 0.0, 0.5]}, "std must be positive"),
])
def test_unusable_timm_configs_are_one_line_errors(change, words):
    cfg = timm_config(*IMAGENET)
    cfg["pretrained_cfg"].update(change)
    with pytest.raises(VitzooError) as err:
        Preprocessing.from_timm(cfg, "my/config.json")
    assert words in str(err.value) and "my/config.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_training_pixels_are_normalised_by_the_checkpoints_mean_and_std(tmp_path):
    """A flat colour stays flat through any resize and crop: every training pixel must be
    ``(c / 255 - mean) / std`` of the checkpoint's own rule (NumPy), per channel."""
    from vitzoo.data import Layout, open_dataset
    from vitzoo.data.pipeline import train_batches

    colour = np.array([200, 90, 17], np.uint8)
    for split in ("train", "test"):
        for cls in ("x", "y"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i, shape in enumerate([(30, 41), (45, 27)]):
                Image.fromarray(np.broadcast_to(colour, (*shape, 3)).copy()).save(
                    tmp_path / split / cls / f"{i}.png")
    data = open_dataset(str(tmp_path))
    for rule in (Preprocessing.from_timm(timm_config(*CLIP), "c"), VIT_JAX):
        batch = next(train_batches(data.train, train_recipe(16, rule), Layout(4), seed=0))
        want = (colour / 255.0 - np.asarray(rule.mean)) / np.asarray(rule.std)
        assert batch["image"].shape == (1, 4, 16, 16, 3)
        np.testing.assert_allclose(batch["image"], np.broadcast_to(want, batch["image"].shape),
                                   atol=2e-6)


def _tiny_folder_checkpoint(root: Path, cfg: dict | None) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"")  # only its place matters to preprocessing_of
    if cfg is not None:
        (root / "config.json").write_text(json.dumps(cfg))
    return root


def test_which_file_decides_a_checkpoints_preprocessing(tmp_path):
    from vitzoo.weights.facts import preprocessing_of

    clip = timm_config(*CLIP, crop_pct=1.0)
    folder = _tiny_folder_checkpoint(tmp_path / "clip", clip)
    for path in (folder, folder / "model.safetensors"):
        rule = preprocessing_of(path)
        assert (rule.mean, rule.std, rule.crop_pct, rule.antialias) == (*CLIP, 1.0, True)
        assert str(folder / "config.json") in rule.origin
    # a release npz: the vit_jax rule, even with a stray config.json beside it
    (folder / "x.npz").write_bytes(b"")
    assert preprocessing_of(folder / "x.npz") == VIT_JAX
    assert preprocessing_of(None) == VIT_JAX
    # a run's weights: the rule its run.json recorded for the checkpoint it started from
    run = tmp_path / "run"
    run.mkdir()
    recorded = Preprocessing.from_timm(clip, "c")
    (run / "run.json").write_text(json.dumps({"preprocessing": {"checkpoint": recorded.as_dict()}}))
    assert preprocessing_of(run / "final.npz") == recorded
    assert "run.json" in preprocessing_of(run / "final.npz").origin
    (run / "run.json").write_text(json.dumps({"preprocessing": {"train": {}}}))  # older runs
    assert preprocessing_of(run / "final.npz") == VIT_JAX
    (folder / "config.json").write_text("{not json")
    with pytest.raises(VitzooError, match="cannot read timm's configuration"):
        preprocessing_of(folder)


def test_predict_feeds_a_run_the_preprocessing_of_its_checkpoint(tmp_path, folder):
    """A fine-tune of a CLIP-normalised checkpoint: predict reads the rule from run.json, and its
    logits equal the model applied to the evaluation pipeline's pixels of that rule."""
    from tests.support.ckpt_factory import write_tiny_vit
    from vitzoo.predict import Predictor

    root, files = folder
    run = tmp_path / "run"
    run.mkdir()
    ckpt = write_tiny_vit(run / "final.npz", num_classes=3)
    rule = Preprocessing.from_timm(timm_config(*CLIP), "clip config")
    (run / "run.json").write_text(json.dumps({"preprocessing": {"checkpoint": rule.as_dict()}}))
    predictor = Predictor(ckpt)
    recipe = eval_recipe(predictor.resolution, rule)
    assert predictor.recipe == recipe and predictor.facts.pixels == rule
    assert predictor.facts.as_dict()["preprocessing"]["origin"].endswith(str(run / "run.json"))
    got = predictor.predict(files, with_logits=True, top_k=1)
    want = predictor.logits(_eval_pixels(root, recipe))  # the same compiled forward
    np.testing.assert_array_equal(np.asarray([p.logits for p in got], np.float32), want)
    vit_jax = predictor.logits(_eval_pixels(root, eval_recipe(predictor.resolution)))
    assert np.abs(vit_jax - want).max() > 1e-3  # the rule matters to the logits
