"""Helpers for the data/adaptation tests (importable module, not a test).

Synthetic image tasks written as real image files, tiny release-layout checkpoints,
and subprocess runners for multi-device (``--xla_force_host_platform_device_count``)
and multi-process checks. Everything is small: 32x32 images, hidden 32, depth 2.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tests.support import REPO_ROOT
from tests.support.ckpt_factory import write_tiny_vit

TINY = {"image_size": 32, "patch": 8, "hidden": 32, "depth": 2, "heads": 2, "mlp": 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stripes(angle_deg: float, size: int, rng: np.random.Generator, *, color: bool = False,
            period: float | None = None) -> np.ndarray:
    """A uint8 image of oriented stripes with random phase, period and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = np.deg2rad(angle_deg)
    period = period or rng.uniform(4.0, 9.0)
    wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period
                  + rng.uniform(0, 2 * np.pi))
    base = 0.5 + 0.35 * wave + rng.normal(0, 0.15, (size, size))
    tint = rng.uniform(0.4, 1.0, 3) if color else np.ones(3)
    image = np.clip(base[..., None] * tint * 255, 0, 255)
    return image.astype(np.uint8)


def color_image(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with one dominant channel: an easy 3-class task."""
    image = rng.integers(0, 90, (size, size, 3)).astype(np.int32)
    image[..., cls % 3] += 140
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder(root: Path, make, classes: list[str], *, train: int, test: int | None,
                 size: int = 40, seed: int = 0, fmt: str = "png") -> Path:
    """``root/train|test/<class>/*`` (or ``root/<class>/*`` when ``test`` is None)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    splits = [("train", train), ("test", test)] if test is not None else [("", train)]
    for split, count in splits:
        for label, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(make(label, size, rng)).save(folder / f"{i}.{fmt}")
    return root


def tiny_checkpoint(path: Path, num_classes: int = 10, seed: int = 0) -> Path:
    return write_tiny_vit(path, num_classes=num_classes, seed=seed, **TINY)


def run_python(code: str, *, devices: int = 1, env: dict[str, str] | None = None,
               timeout: int = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``devices`` fake CPU devices."""
    full_env = {**os.environ, **(env or {})}
    full_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), full_env.get("PYTHONPATH", "")])
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def cli(args: list[str], *, devices: int = 1, env: dict[str, str] | None = None,
        timeout: int = 300) -> subprocess.CompletedProcess:
    """``vitzoo ARGS`` in a subprocess."""
    return run_python(f"import sys; from vitzoo.cli import main; main({args!r})",
                      devices=devices, env=env, timeout=timeout)


def load_params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
