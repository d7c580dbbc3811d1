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
