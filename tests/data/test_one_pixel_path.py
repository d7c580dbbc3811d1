"""One image, one array: ``predict``'s preprocessing and the dataset pipeline's evaluation batches
(the path ``evaluate``, the probe and fine-tuning's evaluation read) give bit-identical pixels for
the same file, for JPEG and PNG of odd sizes, shrunk and enlarged, greyscale, RGBA, palette and
formats TensorFlow cannot decode; and those pixels follow the documented rule (bilinear,
half-pixel centres, no antialiasing), checked against a NumPy resize written here from the rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.images import resize_bilinear_no_antialias

RES = 24
#: name -> (height, width, PIL mode, format): downscaled and upscaled, odd sizes, every mode.
FILES = {
    "a": {"big.jpg": (61, 47, "RGB", "JPEG"), "small.png": (13, 9, "RGB", "PNG"),
          "gray.jpg": (29, 71, "L", "JPEG"), "rgba.png": (37, 23, "RGBA", "PNG"),
          "gray.png": (11, 30, "L", "PNG")},
    "b": {"palette.gif": (25, 19, "P", "GIF"), "photo.webp": (33, 41, "RGB", "WEBP"),
          "cmyk.jpg": (27, 27, "CMYK", "JPEG"), "wide.png": (7, 97, "RGB", "PNG"),
          "exact.png": (24, 24, "RGB", "PNG")},
}


def _write(root: Path) -> list[tuple[Path, int]]:
    """``root/train|test/<class>/*``; returns the test files in the scanner's order, with labels."""
    rng = np.random.default_rng(5)
    out = []
    for split in ("train", "test"):
        for label, (cls, files) in enumerate(sorted(FILES.items())):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for name, (h, w, mode, fmt) in sorted(files.items()):
                base = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
                image = base if mode == "RGBA" else base.convert("RGB").convert(mode)
                image.save(folder / name, format=fmt)
                if split == "test":
                    out.append((folder / name, label))
    return out


def _pipeline_pixels(root: Path, monkeypatch: pytest.MonkeyPatch, *, on_disk: bool):
    import vitzoo.data.folder as folder
    from vitzoo.data import Layout, eval_recipe, open_dataset

    if on_disk:
        monkeypatch.setattr(folder, "memory_budget", lambda: 0)
    data = open_dataset(str(root), need_train=False)
    assert data.eval.from_files is on_disk and not data.skipped
    images, labels = [], []
    for batch in data.eval.eval_batches(eval_recipe(RES), Layout(4)):
        mask = batch["mask"].reshape(-1)
        images.append(batch["image"].reshape(-1, RES, RES, 3)[mask])
        labels.append(batch["label"].reshape(-1)[mask])
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.parametrize("on_disk", [False, True], ids=["in-memory", "read-from-disk"])
def test_predict_and_eval_batches_give_the_same_pixels(tmp_path, monkeypatch, on_disk):
    from vitzoo.predict import preprocess

    files = _write(tmp_path / "data")
    pixels, labels = _pipeline_pixels(tmp_path / "data", monkeypatch, on_disk=on_disk)
    assert labels.tolist() == [label for _, label in files]
    for (path, _), row in zip(files, pixels, strict=True):
        np.testing.assert_array_equal(preprocess(path, RES), row, err_msg=str(path))
    # a PIL image handed to predict gets the pixels of the same picture as a file (lossless:
    # a JPEG decoded by Pillow differs from TensorFlow's decoding by a level or two)
    png = next(path for path, _ in files if path.suffix == ".png")
    np.testing.assert_array_equal(preprocess(Image.open(png), RES), preprocess(png, RES))


@pytest.mark.parametrize("shape", [(61, 47), (13, 9), (7, 97), (24, 24), (50, 50)])
def test_pixels_follow_the_documented_rule(tmp_path, shape):
    """Lossless PNG (so decoding is not in question): predict's pixels = the NumPy rule."""
    from vitzoo.predict import preprocess

    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    expected = resize_bilinear_no_antialias(rgb, RES) / 127.5 - 1.0
    # TensorFlow computes the weights in float32: 2e-5 is 0.003 of a grey level
    np.testing.assert_allclose(preprocess(path, RES), expected, atol=2e-5)
    if shape[0] > 2 * RES or shape[1] > 2 * RES:  # shrinking: an antialiased resize differs
        smoothed = np.asarray(Image.fromarray(rgb).resize((RES, RES), Image.Resampling.BILINEAR),
                              np.float32) / 127.5 - 1.0
        assert np.abs(smoothed - expected).max() > 0.05
