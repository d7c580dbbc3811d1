"""Probe speed: feature extraction vs a plain ``jax.jit`` forward (and timm), and scoring.

Measured, side by side in one run, each contender in its own fresh process:

1. ``vitzoo.probe`` extraction of Ti/16 and B/16 at 224 px, batch 64, on a JPEG folder:
   end-to-end img/s (decode + resize + forward + chunked cache writes) and the forward
   alone (``vitzoo.probe.speed.measure``, as the probe ranks it). Float32 with the
   products on the backend ``VITZOO_CPU_MATMUL=auto`` picks here (a measured choice), then
   forced onto XLA and onto vitzoo's oneDNN kernel; bfloat16 on each of the two.
2. A plain ``jax.jit(model.apply)`` forward of the same model on random arrays.
   Every forward figure is the median of ``--repeats`` batches after a warm-up call.
3. timm's forward (``vit_tiny_patch16_224`` / ``vit_base_patch16_224``, fp32 and bf16
   autocast, ``torch.inference_mode``) when ``VITZOO_BENCH_TORCH_PYTHON`` names an interpreter with
   torch and timm (never installed into vitzoo's own environment).
4. Peak memory against dataset size: a Ti/16 checkpoint at 32 px extracts the features of
   folders of ``--memory-sizes`` tiny JPEGs (each many 512-row chunks), train and evaluation
   splits, each size in its own fresh process (peak RSS is the child's ``ru_maxrss``), once
   with the images read from their files (``VITZOO_MEMORY_BUDGET=1``) and once with the
   default budget, under which a folder that fits is held in memory (its encoded bytes).
5. Scoring: 10 cached candidates (768-d features, 5,000 training and 5,000 evaluation
   images, 10 classes) x shots 1/5/10/25 x 5 seeds, plus the full-train probe and kNN,
   read back from the feature cache.

Usage: ``python benchmarks/probe.py [--images 128] [--repeats 3]``; rewrites the "Probe"
section of benchmarks/RESULTS.md. ``--memory-only`` runs (4) alone and replaces only its
paragraph there. Random weights and images: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.finetune import _child, lscpu_summary  # noqa: E402  (shared with finetune.py)

ARCHS = {"Ti/16": "vit_tiny_patch16_224", "B/16": "vit_base_patch16_224"}

MAKE_CKPT = """
import jax, numpy as np
from vitzoo.weights.release import params_to_release, save_npz
from vitzoo.models import build_model, get_config
config = get_config({arch!r})
model = build_model(config, 1000)
params = jax.jit(lambda k: model.init(k, np.zeros((1, {res}, {res}, 3), np.float32)))(
    jax.random.PRNGKey(0))["params"]
save_npz({path!r}, params_to_release(jax.device_get(params), config))
print("{{}}")
"""

EXTRACT = """
from vitzoo.runtime import tune_malloc_early; tune_malloc_early()  # as the CLI does
import json, time
from vitzoo.data import open_dataset
from vitzoo.probe.features import Extractor, load_backbone
from vitzoo.probe.speed import measure
data = open_dataset({folder!r})
extractor = Extractor(load_backbone({ckpt!r}), batch=64, dtype={dtype!r})
speed = measure(extractor, {repeats})  # compiles, then times the forward alone
t = time.perf_counter()
entry = extractor.extract(data.train)
elapsed = time.perf_counter() - t
print(json.dumps({{"end_to_end": len(data.train) / elapsed, "forward": speed["img_per_sec"],
                  "images": len(data.train), "chunks": entry.num_chunks,
                  "matmul": [speed["matmul"]["backend"], speed["matmul"]["reason"]]}}))
"""

PLAIN = """
import json, time, jax, numpy as np
from vitzoo.models import build_model, get_config
model = build_model(get_config({arch!r}), 1000)
x = np.random.default_rng(0).uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])["params"]
forward = jax.jit(lambda p, x: model.apply({{"params": p}}, x))
forward(params, x).block_until_ready()
rates = []
for _ in range({repeats}):
    t = time.perf_counter()
    forward(params, x).block_until_ready()
    rates.append(64 / (time.perf_counter() - t))
print(json.dumps({{"forward": sorted(rates)[len(rates) // 2]}}))
"""

TIMM = """
import json, os, time, torch, timm
torch.set_num_threads(os.cpu_count())
model = timm.create_model({name!r}, pretrained=False).eval()
x = torch.rand(64, 3, 224, 224) * 2 - 1
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled={bf16}):
    model(x)
    rates = []
    for _ in range({repeats}):
        t = time.perf_counter()
        model(x)
        rates.append(64 / (time.perf_counter() - t))
print(json.dumps({{"forward": sorted(rates)[len(rates) // 2],
                  "torch": torch.__version__, "timm": timm.__version__}}))
"""

MEMORY = """
from vitzoo.runtime import tune_malloc_early; tune_malloc_early()  # as the CLI does
import json, time
from vitzoo.data import open_dataset
from vitzoo.probe.features import Extractor, load_backbone
data = open_dataset({folder!r})
extractor = Extractor(load_backbone({ckpt!r}), batch=64)
t = time.perf_counter()
entries = [extractor.extract(split) for split in (data.train, data.eval)]
print(json.dumps({{"images": len(data.train) + len(data.eval), "seconds": time.perf_counter() - t,
                  "chunks": sum(e.num_chunks for e in entries), "chunk_rows": entries[0].chunk_rows,
                  "in_memory": not data.train.from_files}}))
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


def make_folder(root: Path, images: int, size: int | None = None) -> Path:
    """Two classes of smooth random JPEGs: 300-500 px on a side, or ``size`` px square."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(images // 2):
            h, w = (size, size) if size else rng.integers(300, 500, 2)
            base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
            Image.fromarray(base).resize((int(w), int(h)), Image.BILINEAR).save(
                d / f"{i}.jpg", quality=90)
    return root


def measure_memory(tmp_path: Path, sizes: list[int]) -> list[str]:
    """Peak RSS of extracting folders of ``sizes`` 32-px images, from files and in memory."""
    ckpt = tmp_path / "Ti_16-32px.npz"
    _child(MAKE_CKPT.format(arch="Ti/16", path=str(ckpt), res=32))
    rows = []
    for images in sizes:
        folder = make_folder(tmp_path / f"tiny{images}", images, size=32)
        row = {}
        for mode, budget in (("files", {"VITZOO_MEMORY_BUDGET": "1"}), ("memory", {})):
            env = {"VITZOO_HOME": str(tmp_path / f"home-{mode}-{images}"), **budget}
            result, rss = _child(MEMORY.format(folder=str(folder), ckpt=str(ckpt)), env=env)
            if result["in_memory"] != (mode == "memory"):
                raise SystemExit(f"{images} images: expected them {mode}, got in_memory="
                                 f"{result['in_memory']} (raise VITZOO_MEMORY_BUDGET?)")
            row[mode] = (result, rss)
        rows.append(row)
        print(images, {mode: (r["chunks"], f"{rss:.0f} MiB") for mode, (r, rss) in row.items()},
              flush=True)
    files = [r["files"][1] for r in rows]
    held = [r["memory"][1] for r in rows]
    encoded = [sum(f.stat().st_size for f in (tmp_path / f"tiny{n}").rglob("*.jpg")) / 2**20
               for n in sizes]
    lines = [
        f"Peak host RSS of feature extraction against dataset size ({time.strftime('%Y-%m-%d')}, "
        f"`python benchmarks/probe.py --memory-sizes {','.join(map(str, sizes))}`): a Ti/16 "
        "checkpoint at 32 px, batch 64, train and evaluation splits of a folder of 32-px JPEGs "
        f"(the carved 10% is the evaluation split), chunks of {rows[0]['files'][0]['chunk_rows']} "
        "rows, each size in its own fresh process (`ru_maxrss`).",
        "",
        "| images | chunks | peak RSS, images read from files | peak RSS, images held in memory "
        "| encoded images |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row, mib in zip(rows, encoded, strict=True):
        lines.append(f"| {row['files'][0]['images']:,} | {row['files'][0]['chunks']} | "
                     f"{row['files'][1]:.0f} MiB | {row['memory'][1]:.0f} MiB | {mib:.1f} MiB |")
    extra = (rows[-1]["files"][0]["images"] - rows[0]["files"][0]["images"]) / 1024

    def slope(peaks: list[float]) -> str:
        return (f"{min(peaks):.0f}-{max(peaks):.0f} MiB, "
                f"{(peaks[-1] - peaks[0]) / extra:+.1f} MiB per 1,024 more images")

    lines += ["", (
        f"Read from files: {slope(files)}. Held in memory: {slope(held)}; there the process "
        f"also holds the folder's encoded images ({encoded[-1] - encoded[0]:.1f} MiB more at "
        "the largest size), which the data layer keeps in memory when they fit its budget. For "
        "scale, one decoded 32-px image is 12 KiB in float32, one feature row 0.75 KiB. "
        "Extraction decodes one chunk's images at a time, never keeps them (the evaluation "
        "pipeline's in-memory cache is off for it), and writes each chunk's features to disk "
        "before the next. Scoring afterwards holds one candidate's features (images x width x "
        "4 bytes)."
    )]
    return lines


MEMORY_PARAGRAPH = re.compile(r"^Peak host RSS.*?(?=^Probing 10 cached)", re.S | re.M)


def recorded_memory(path: Path) -> list[str]:
    """The memory paragraph measured earlier (``--skip-memory`` keeps it as it is)."""
    found = MEMORY_PARAGRAPH.search(path.read_text(encoding="utf-8"))
    if not found:
        raise SystemExit(f"no memory paragraph in {path}: run without --skip-memory once")
    return found.group(0).rstrip().splitlines()


def replace_memory_paragraph(path: Path, block: str) -> None:
    """Swap the memory measurement inside the Probe section, leaving the rest as measured."""
    from vitzoo.atomic import atomic_write

    text = path.read_text(encoding="utf-8")
    pattern = MEMORY_PARAGRAPH
    if not pattern.search(text):
        raise SystemExit(f"no memory paragraph in {path}: run the whole benchmark once")
    with atomic_write(path, "w") as handle:
        handle.write(pattern.sub(lambda _: block.rstrip() + "\n\n", text, count=1))


def build_kernel(home: Path) -> str | None:
    """Build vitzoo's oneDNN kernel into ``home`` (so no contender times it); None or why not."""
    env = {**os.environ, "VITZOO_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "vitzoo.kernels.build"], env=env,
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


#: vitzoo's extraction runs: (result key, compute dtype, VITZOO_CPU_MATMUL or None = auto).
FORWARDS = (("float32", "float32", None), ("float32-xla", "float32", "xla"),
            ("float32-onednn", "float32", "onednn"), ("bfloat16-xla", "bfloat16", "xla"),
            ("bfloat16-onednn", "bfloat16", "onednn"))
ROWS = (("vitzoo extraction, end to end (float32)", "float32", "end_to_end"),
        ("vitzoo forward float32 (backend as chosen here)", "float32", "forward"),
        ("vitzoo forward float32, XLA products (forced)", "float32-xla", "forward"),
        ("vitzoo forward float32, oneDNN products (forced)", "float32-onednn", "forward"),
        ("vitzoo forward bfloat16, XLA products", "bfloat16-xla", "forward"),
        ("vitzoo forward bfloat16, oneDNN products", "bfloat16-onednn", "forward"),
        ("plain jax.jit forward (float32)", "plain", "forward"),
        ("timm fp32 forward", "timm", "forward"),
        ("timm bf16 autocast forward", "timm-bf16", "forward"))


def forward_table(results: dict[str, dict[str, dict]]) -> list[str]:
    """One row per contender, one column per model, and the ratios to timm fp32 and bf16."""
    archs = list(results)
    lines = ["| img/s | " + " | ".join(archs) + " | "
             + " | ".join(f"{a} vs timm fp32" for a in archs) + " | "
             + " | ".join(f"{a} vs timm bf16" for a in archs) + " |",
             "|---|" + "---:|" * (3 * len(archs))]
    for label, key, field in ROWS:
        values = [results[a].get(key, {}).get(field) for a in archs]
        if all(v is None for v in values):
            continue
        ratios = [(v / results[a][peer]["forward"]
                   if v is not None and results[a].get(peer) and field == "forward" else None)
                  for peer in ("timm", "timm-bf16") for a, v in zip(archs, values, strict=True)]
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.1f}"
                                                  for v in values) + " | "
                     + " | ".join("n/a" if r is None else f"{r:.2f}x" for r in ratios) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-sizes", default="600,1800,3600,10800",
                        help="dataset sizes for the peak-memory measurement, comma-separated")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure only peak memory against dataset size")
    parser.add_argument("--archs", default=",".join(ARCHS),
                        help="models to time, comma-separated (default: %(default)s)")
    parser.add_argument("--skip-memory", action="store_true",
                        help="keep the memory paragraph of RESULTS.md as measured before")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [int(n) for n in args.memory_sizes.split(",")]
    results_md = ROOT / "benchmarks" / "RESULTS.md"
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            block = "\n".join(measure_memory(Path(tmp), sizes))
        print(block)
        if not args.no_write:
            replace_memory_paragraph(results_md, block)
        return
    torch_python = os.environ.get("VITZOO_BENCH_TORCH_PYTHON")
    speeds: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {"VITZOO_HOME": str(tmp_path / "home")}
        no_kernel = build_kernel(tmp_path / "home")  # before any timing; None: built
        # The folder is all images: the carved 10% validation split is not extracted here.
        small = make_folder(tmp_path / "small", args.images)
        for arch in args.archs.split(","):
            if arch not in ARCHS:
                raise SystemExit(f"--archs: {arch!r} is not one of {', '.join(ARCHS)}")
            timm_name = ARCHS[arch]
            ckpt = tmp_path / f"{arch.replace('/', '_')}.npz"
            _child(MAKE_CKPT.format(arch=arch, path=str(ckpt), res=224))
            found = speeds[arch] = {}
            for key, dtype, matmul in FORWARDS:
                if matmul == "onednn" and no_kernel:
                    continue
                found[key] = _child(EXTRACT.format(folder=str(small), ckpt=str(ckpt),
                                                   repeats=args.repeats, dtype=dtype),
                                    env={**env, **({"VITZOO_CPU_MATMUL": matmul} if matmul
                                                   else {})})[0]
            found["plain"] = _child(PLAIN.format(arch=arch, repeats=args.repeats))[0]
            if torch_python:
                for key, bf16 in (("timm", False), ("timm-bf16", True)):
                    found[key] = _torch_child(torch_python, TIMM.format(
                        name=timm_name, repeats=args.repeats, bf16=bf16))
        memory = recorded_memory(results_md) if args.skip_memory else measure_memory(tmp_path, sizes)
        scoring, scoring_rss = _child(SCORING.format(), env=env)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {lscpu_summary()} "
        f"(load average {os.getloadavg()[0]:.1f} at the end: a shared machine), Python "
        f"{platform.python_version()}; `python benchmarks/probe.py --images {args.images} "
        f"--repeats {args.repeats} --archs {args.archs}`. 224 px, batch 64, random weights; "
        "each contender in its own fresh process. Forward img/s: the median of "
        f"{args.repeats} batches after a "
        "warm-up call (vitzoo: `vitzoo.probe.speed.measure`, as the probe ranks candidates); "
        "end to end includes JPEG decoding and the cache writes.",
        "",
        *forward_table(speeds),
        "",
        "vitzoo's float32 rows without a forced backend use what `VITZOO_CPU_MATMUL=auto` "
        "chose on this machine: " + "; ".join(
            f"{arch}: {found['float32']['matmul'][0]} ({found['float32']['matmul'][1]})"
            for arch, found in speeds.items() if found.get("float32", {}).get("matmul"))
        + ". " + (f"oneDNN rows not measured: {no_kernel}." if no_kernel else
                  "vitzoo's oneDNN kernel was built before the timing."),
    ]
    timm_info = next((f["timm"] for f in speeds.values() if f.get("timm")), None)
    if not torch_python:
        lines += ["", "timm: not measured (set VITZOO_BENCH_TORCH_PYTHON to a Python with "
                      "torch and timm)."]
    elif timm_info:
        lines += ["", f"timm {timm_info['timm']}, torch {timm_info['torch']}, "
                      "`torch.set_num_threads(os.cpu_count())`."]
    lines += [
        "",
        *memory,
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

        replace_section(results_md, "Probe", body)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
