"""The backbone layer against independent oracles: what the head reads (NumPy forward), at
the checkpoint's resolution and at another one (position embedding resized by SciPy here,
not by vitzoo), with its representation layer kept; the compute dtype and batch rules;
and extraction over two ``jax.distributed`` processes equal to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import REPO_ROOT
from tests.support.adapt_helpers import TINY, color_image, free_port, write_folder
from tests.support.ckpt_factory import write_tiny_mixer, write_tiny_vit
from tests.support.numpy_models import np_mixer_features, np_vit_outputs
from vitzoo.errors import VitzooError

REPRESENTATION = 16  # the tiny checkpoints' pre_logits width (their model width is 32)


def _flat(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _at_resolution(flat: dict[str, np.ndarray], resolution: int, patch: int) -> dict:
    """The release arrays with the position embedding linearly resized (scipy, as documented)."""
    from scipy import ndimage

    key = "Transformer/posembed_input/pos_embedding"
    posemb = flat[key]
    old = int(np.sqrt(posemb.shape[1] - 1))
    new = resolution // patch
    grid = ndimage.zoom(posemb[0, 1:].reshape(old, old, -1), (new / old, new / old, 1), order=1)
    return {**flat, key: np.concatenate([posemb[:, :1], grid.reshape(1, new * new, -1)], 1)}


def _pixels(files: list[Path]) -> np.ndarray:
    """Decoded images in [-1, 1] (already at the model's resolution: no resize involved)."""
    return np.stack([(np.asarray(Image.open(f).convert("RGB"), np.float64) - 127.5) / 127.5
                     for f in files])


def _folder(root: Path, size: int) -> tuple[Path, list[Path]]:
    write_folder(root, color_image, ["a", "b", "c"], train=3, test=2, size=size)
    return root, sorted((root / "test").rglob("*.png"))  # the eval split's order


@pytest.mark.slow
def test_probe_features_are_the_numpy_pre_logits_at_native_and_other_resolutions(tmp_path):
    """The vector the head reads, for a ViT, a ViT with a representation layer (also at a
    resolution it was not trained at: the layer must be kept) and a Mixer."""
    from vitzoo.data import open_dataset
    from vitzoo.probe.features import Extractor, load_backbone

    vit = write_tiny_vit(tmp_path / "vit.npz", **TINY)
    rep = write_tiny_vit(tmp_path / "rep.npz", representation_size=REPRESENTATION, **TINY)
    mixer = write_tiny_mixer(tmp_path / "mix.npz")
    cases = [(vit, 32, "class token after the final LayerNorm"),
             (rep, 32, "pre_logits layer: tanh(Dense 16)"),
             (rep, 48, "pre_logits layer: tanh(Dense 16)"),
             (mixer, 32, "mean of the tokens after the final LayerNorm (Mixer")]
    for ckpt, res, described in cases:
        root, files = _folder(tmp_path / f"data{res}", res)
        backbone = load_backbone(ckpt, resolution=res)
        entry = Extractor(backbone, batch=4).extract(open_dataset(str(root)).eval)
        features, labels = entry.load()
        assert entry.spec["representation"].startswith(described)
        flat = _flat(ckpt)
        if ckpt == mixer:
            expected = np_mixer_features(flat, _pixels(files))
        else:
            expected = np_vit_outputs(_at_resolution(flat, res, TINY["patch"]), _pixels(files))[0]
        assert features.shape == expected.shape == (6, REPRESENTATION if ckpt == rep else 32)
        np.testing.assert_allclose(features, expected, rtol=0,
                                   atol=1e-4 * np.abs(expected).max(), err_msg=f"{ckpt} @{res}")
        np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])


def test_load_keeps_or_drops_the_representation_layer_and_resizes(tmp_path):
    from vitzoo.backbone import load

    rep = write_tiny_vit(tmp_path / "rep.npz", representation_size=REPRESENTATION, **TINY)
    kept = load(rep, resolution=48)
    assert (kept.resolution, kept.native_resolution, kept.num_classes) == (48, 32, 10)
    assert kept.config.representation_size == REPRESENTATION and "pre_logits" in kept.params
    assert kept.params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 37, 32)
    np.testing.assert_array_equal(kept.params["head"]["kernel"], _flat(rep)["head/kernel"])
    fresh = load(rep, num_classes=3, representation=False)
    assert fresh.config.representation_size is None and "pre_logits" not in fresh.params
    assert fresh.params["head"]["kernel"].shape == (32, 3) and not fresh.params["head"]["kernel"].any()


def test_compute_dtype_and_global_batch_are_decided_once():
    from vitzoo.backbone import Placement, compute_dtype

    assert str(np.dtype(compute_dtype("bfloat16"))) == "bfloat16"
    with pytest.raises(VitzooError, match="--dtype must be one of float32, bfloat16, got 'fp16'"):
        compute_dtype("fp16")
    two_by_two = Placement(devices=["d0", "d1"], process_count=2)
    assert [two_by_two.global_batch(b) for b in (1, 4, 7, 64)] == [4, 4, 4, 64]
    layout = two_by_two.layout(10)
    assert (layout.global_batch, layout.local_batch, layout.per_device) == (8, 4, 2)
    with pytest.raises(VitzooError, match="--batch must be positive"):
        two_by_two.global_batch(0)


def _cli(args: list[str], home: Path) -> subprocess.Popen:
    """``vitzoo ARGS`` in a fresh process with 2 host devices and its own VITZOO_HOME."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "VITZOO_HOME": str(home)}
    code = f"from vitzoo.cli import main; main({args!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _chunks(home: Path) -> list[np.ndarray]:
    """Every cached feature chunk under ``home``, in a stable order (features, then labels)."""
    rows = []
    for path in sorted((home / "features").rglob("chunk-*.npz"),
                       key=lambda p: (p.parent.name, p.name)):
        with np.load(path) as chunk:
            rows += [chunk["features"], chunk["labels"]]
    return rows


@pytest.mark.slow
def test_head_only_over_two_processes_equals_one_process(tmp_path):
    """``finetune --head-only`` with two jax.distributed processes (2 devices each): every
    process extracts its slice of each batch and holds all rows (its cache equals the one-
    process cache), and the head written by process 0 is the one-process head."""
    root = write_folder(tmp_path / "data", color_image, ["a", "b", "c"], train=5, test=2, size=48)
    ckpt = write_tiny_vit(tmp_path / "rep.npz", representation_size=REPRESENTATION, **TINY)
    base = ["finetune", str(ckpt), "--dataset", str(root), "--head-only", "--res", "48",
            "--batch", "6", "--no-register"]
    port = free_port()
    procs = [_cli([*base, "--workdir", str(tmp_path / "multi"), "--coordinator",
                   f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                  tmp_path / f"home{i}") for i in range(2)]  # a cache per host
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    single = _cli([*base, "--workdir", str(tmp_path / "single")], tmp_path / "home-single")
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-3000:]

    multi = json.loads((tmp_path / "multi" / "run.json").read_text())
    alone = json.loads((tmp_path / "single" / "run.json").read_text())
    assert multi["feature_extraction"]["processes"] == 2
    assert (multi["feature_extraction"]["batch"], alone["feature_extraction"]["batch"]) == (4, 6)
    for key in ("eval_accuracy", "eval_loss", "l2", "temperature"):
        assert multi["final_metrics"][key] == pytest.approx(alone["final_metrics"][key], rel=1e-4)
    with np.load(tmp_path / "multi" / "final.npz") as a, np.load(tmp_path / "single" / "final.npz") as b:
        np.testing.assert_allclose(a["head/kernel"], b["head/kernel"], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(a["pre_logits/kernel"], b["pre_logits/kernel"])
    expected = _chunks(tmp_path / "home-single")
    assert len(expected) == 4  # train and eval entries, one chunk each
    for i in range(2):
        got = _chunks(tmp_path / f"home{i}")
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-5)
