"""Image folders that exercise every decoder path: the local and remote folder tests share one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def mixed_image_folder(root: Path) -> Path:
    """Two classes in every format and colour mode, plus a corrupt and a non-image file."""
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
    rgb = lambda: rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(rgb()).save(root / "cat" / "a.jpg")
    Image.fromarray(rgb()).save(root / "cat" / "b.png")
    Image.fromarray(rgb()).save(root / "cat" / "c.bmp")
    Image.fromarray(rgb()).convert("P").save(root / "cat" / "d.gif")
    Image.fromarray(rgb()).save(root / "cat" / "e.webp")
    Image.fromarray(rgb()[..., 0]).save(root / "dog" / "gray.jpg")
    Image.fromarray(rng.integers(0, 255, (24, 30, 4), dtype=np.uint8)).save(root / "dog" / "rgba.png")
    Image.fromarray(rgb()).convert("CMYK").save(root / "dog" / "cmyk.jpg")
    Image.fromarray(rgb()).convert("P").save(root / "dog" / "palette.bmp")
    Image.fromarray(rgb()).convert("P").save(root / "dog" / "palette.png")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "dog" / "notes.txt").write_text("ignored")
    return root


def resize_bilinear_no_antialias(image: np.ndarray, size: int) -> np.ndarray:
    """The documented rule, written from its definition: each output pixel centre maps to
    ``(i + 0.5) * in / out - 0.5`` in the input; the two nearest input pixels (clamped to the
    edge) are mixed linearly, along rows and columns. No smoothing when shrinking."""
    def weights(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = (np.arange(size) + 0.5) * (n_in / size) - 0.5
        low = np.floor(centre)
        frac = centre - low
        return (np.clip(low, 0, n_in - 1).astype(int), np.clip(low + 1, 0, n_in - 1).astype(int),
                frac)

    x = image.astype(np.float64)
    y0, y1, fy = weights(x.shape[0])
    x0, x1, fx = weights(x.shape[1])
    top = x[y0][:, x0] * (1 - fx)[None, :, None] + x[y0][:, x1] * fx[None, :, None]
    bottom = x[y1][:, x0] * (1 - fx)[None, :, None] + x[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
