"""Probe speed: feature extraction vs a plain ``jax.jit`` forward (and timm), and scoring.

Measured, side by side in one run, each contender in its own fresh process:

1. ``vitzoo.probe`` extraction of Ti/16 and B/16 at 224 px, batch 64, float32, on a JPEG
   folder: end-to-end img/s (decode + resize + forward + chunked cache writes) and the
   forward alone (``Extractor.throughput``), peak RSS; Ti/16 on two folder sizes, to show
   that peak memory does not grow with the dataset (chunks are streamed to disk).
2. A plain ``jax.jit(model.apply)`` forward of the same model on random arrays.
3. timm's forward (``vit_tiny_patch16_224`` / ``vit_base_patch16_224``, fp32,
   ``torch.inference_mode``) when ``VITZOO_BENCH_TORCH_PYTHON`` names an interpreter with
   torch and timm (never installed into vitzoo's own environment).
4. Scoring: 10 cached candidates (768-d features, 5,000 training and 5,000 evaluation
   images, 10 classes) x shots 1/5/10/25 x 5 seeds, plus the full-train probe and kNN,
   read back from the feature cache.

Usage: ``python benchmarks/probe.py [--images 128] [--repeats 3]``; rewrites the "Probe"
section of benchmarks/RESULTS.md. Random weights and images: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.finetune import _child  # noqa: E402  (one way to run a measured child)

ARCHS = {"Ti/16": "vit_tiny_patch16_224", "B/16": "vit_base_patch16_224"}

MAKE_CKPT = """
import jax, numpy as np
from vitzoo.weights.release import params_to_release, save_npz
from vitzoo.models import build_model, get_config
config = get_config({arch!r})
model = build_model(config, 1000)
params = jax.jit(lambda k: model.init(k, np.zeros((1, 224, 224, 3), np.float32)))(
    jax.random.PRNGKey(0))["params"]
save_npz({path!r}, params_to_release(jax.device_get(params), config))
print("{{}}")
"""

EXTRACT = """
import json, time
from vitzoo.data import open_dataset
from vitzoo.probe.features import Extractor, load_backbone
data = open_dataset({folder!r})
extractor = Extractor(load_backbone({ckpt!r}), batch=64)
speed = extractor.throughput({repeats})  # compiles, then times the forward alone
t = time.perf_counter()
entry = extractor.extract(data.train)
elapsed = time.perf_counter() - t
print(json.dumps({{"end_to_end": len(data.train) / elapsed, "forward": speed.img_per_sec,
                  "images": len(data.train), "chunks": entry.num_chunks}}))
"""

PLAIN = """
import json, time, jax, numpy as np
from vitzoo.models import build_model, get_config
model = build_model(get_config({arch!r}), 1000)
x = np.random.default_rng(0).uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])["params"]
forward = jax.jit(lambda p, x: model.apply({{"params": p}}, x))
forward(params, x).block_until_ready()
t = time.perf_counter()
for _ in range({repeats}):
    out = forward(params, x)
out.block_until_ready()
print(json.dumps({{"forward": {repeats} * 64 / (time.perf_counter() - t)}}))
"""

TIMM = """
import json, os, time, torch, timm
torch.set_num_threads(os.cpu_count())
model = timm.create_model({name!r}, pretrained=False).eval()
x = torch.rand(64, 3, 224, 224) * 2 - 1
with torch.inference_mode():
    model(x)
    t = time.perf_counter()
    for _ in range({repeats}):
        model(x)
print(json.dumps({{"forward": {repeats} * 64 / (time.perf_counter() - t),
                  "torch": torch.__version__, "timm": timm.__version__}}))
"""

SCORING = """
import json, time, numpy as np
from vitzoo.probe.cache import FeatureEntry
from vitzoo.probe.scores import fewshot, score_all
rng = np.random.default_rng(0)
centers = rng.normal(0, 1, (10, 768))
entries = []
for c in range(10):
    pair = []
    for split in ("train", "eval"):
        y = np.repeat(np.arange(10), 500).astype(np.int32)
        x = (centers[y] + 3.0 * rng.normal(0, 1, (5000, 768))).astype(np.float32)
        entry = FeatureEntry({{"candidate": c, "split": split}}, 5000, 512)
        entry.start({{}})
        for i in range(entry.num_chunks):
            a, b = entry.rows_of(i)
            entry.write_chunk(i, x[a:b], y[a:b])
        pair.append(entry)
    entries.append(pair)
t = time.perf_counter()
for train, evaluation in entries:
    (tx, ty), (ex, ey) = train.load(), evaluation.load()
    fewshot(tx, ty, ex, ey, 10, shots=(1, 5, 10, 25), seeds=5)
fewshot_s = time.perf_counter() - t
t = time.perf_counter()
for train, evaluation in entries:
    score_all(train.load(), evaluation.load(), 10, shots=(1, 5, 10, 25), seeds=5)
print(json.dumps({{"fewshot_s": fewshot_s, "all_s": time.perf_counter() - t}}))
"""


def _torch_child(python: str, code: str) -> dict:
    """timm's forward in the torch interpreter (no vitzoo there): its last JSON line."""
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"timm benchmark failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_folder(root: Path, images: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(images // 2):
            h, w = rng.integers(300, 500, 2)
            base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
            Image.fromarray(base).resize((int(w), int(h)), Image.BILINEAR).save(
                d / f"{i}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch_python = os.environ.get("VITZOO_BENCH_TORCH_PYTHON")
    rows, memory = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {"VITZOO_HOME": str(tmp_path / "home")}
        # The folder is all images: the carved 10% validation split is not extracted here.
        small = make_folder(tmp_path / "small", args.images)
        large = make_folder(tmp_path / "large", args.images * 3)
        for arch, timm_name in ARCHS.items():
            ckpt = tmp_path / f"{arch.replace('/', '_')}.npz"
            _child(MAKE_CKPT.format(arch=arch, path=str(ckpt)))
            ours, rss = _child(EXTRACT.format(folder=str(small), ckpt=str(ckpt),
                                              repeats=args.repeats), env=env)
            plain, plain_rss = _child(PLAIN.format(arch=arch, repeats=args.repeats))
            timm_result = None
            if torch_python:
                timm_result = _torch_child(torch_python, TIMM.format(name=timm_name,
                                                                     repeats=args.repeats))
            rows.append((arch, ours, rss, plain, plain_rss, timm_result))
            if arch == "Ti/16":
                memory.append((ours["images"], rss))
                big, big_rss = _child(EXTRACT.format(folder=str(large), ckpt=str(ckpt),
                                                     repeats=1), env=env)
                memory.append((big["images"], big_rss))
        scoring, scoring_rss = _child(SCORING.format(), env=env)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores "
        f"(load average {os.getloadavg()[0]:.1f} at the end: a shared machine), Python "
        f"{platform.python_version()}; `python benchmarks/probe.py --images {args.images} "
        f"--repeats {args.repeats}`. 224 px, batch 64, float32, random weights; each "
        "contender in its own fresh process. Forward img/s: the mean over "
        f"{args.repeats} batches after a warm-up call; end to end includes JPEG decoding.",
        "",
        "| model | vitzoo extraction, end to end | vitzoo forward | plain jax.jit forward "
        "| timm fp32 forward | vitzoo / timm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arch, ours, _, plain, _, timm_result in rows:
        timm_text = f"{timm_result['forward']:.1f}" if timm_result else "not measured"
        ratio = f"{ours['forward'] / timm_result['forward']:.2f}x" if timm_result else "n/a"
        lines.append(f"| {arch} | {ours['end_to_end']:.1f} | {ours['forward']:.1f} | "
                     f"{plain['forward']:.1f} | {timm_text} | {ratio} |")
    if not torch_python:
        lines += ["", "timm: not measured (set VITZOO_BENCH_TORCH_PYTHON to a Python with "
                      "torch and timm)."]
    elif rows[0][5]:
        lines += ["", f"timm {rows[0][5]['timm']}, torch {rows[0][5]['torch']}, "
                      "`torch.set_num_threads(os.cpu_count())`."]
    lines += [
        "",
        "Peak host RSS of a Ti/16 extraction by dataset size (features are written in chunks "
        "of 512 rows; decoded images are held one chunk at a time): "
        + ", ".join(f"{n} images: {rss:.0f} MiB" for n, rss in memory)
        + (". Both sizes fit in one chunk, so this run does not exercise the bound: the "
           "difference is that chunk's decoded images." if max(n for n, _ in memory) <= 512
           else "."),
        "",
        f"Probing 10 cached candidates (768-d features, 5,000 train + 5,000 eval images, 10 "
        f"classes) x 4 shot settings (1, 5, 10, 25) x 5 seeds, features read from the cache: "
        f"**{scoring['fewshot_s']:.2f} s** (target < 10 s). Every score (few-shot, full-train "
        f"probe with its regulariser search, kNN with k=10) for the same 10 candidates: "
        f"{scoring['all_s']:.2f} s. Peak RSS {scoring_rss:.0f} MiB.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", "Probe", body)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
