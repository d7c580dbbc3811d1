"""Training throughput and MFU of vitzoo's train step on whatever devices JAX sees.

For each case (default: B/16 at 224 and L/16 at 384, bfloat16 compute, SGD momentum +
clipping, data parallel over all local devices) it compiles vitzoo's own train step
(``vitzoo.adapt.steps.make_train_step``), reads the FLOPs of one step from XLA's cost
analysis of the compiled program, runs ``--steps`` timed steps on device-resident random
batches and reports images/s, step time and MFU = achieved FLOP/s / peak FLOP/s. The peak
comes from ``--peak-tflops`` (per device) or the table below (dense bf16, per device, from
the vendors' data sheets); unknown devices get no MFU rather than a guess.

It also measures the input pipeline alone at the same global batch (JPEG decode + train
augmentation on a generated folder), so a reader sees whether data loading could keep up.

Usage: ``python benchmarks/accelerator.py [--case B/16@224 --case L/16@384] [--batch 256]
[--steps 10] [--peak-tflops 989]``; rewrites the "Accelerator" section of RESULTS.md.
A CPU-sized run (``--case Ti/16@32 --batch 4 --steps 1 --pipeline-images 8``) is what the
tests execute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Dense bfloat16 peak TFLOP/s per device (data sheets; SXM parts for NVIDIA).
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6 lite": 918.0,
}


def peak_tflops(device_kind: str, override: float | None = None) -> float | None:
    """Per-device peak for ``device_kind`` (longest matching table key), or the override."""
    if override:
        return override
    matches = [k for k in PEAK_BF16_TFLOPS if k.lower() in device_kind.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def parse_case(text: str) -> tuple[str, int]:
    """``'B/16@224'`` -> ``('B/16', 224)``."""
    arch, _, res = text.partition("@")
    return arch, int(res or 224)


def step_flops(compiled: Any) -> float | None:
    """FLOPs of one compiled step per device, from XLA's cost analysis (None if absent)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops else None


def measure_case(arch: str, res: int, batch: int, steps: int, dtype: str,
                 peak_override: float | None = None) -> dict[str, Any]:
    """Compile and time vitzoo's train step for one architecture/resolution."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.steps import init_state, make_train_step
    from vitzoo.backbone import compute_dtype
    from vitzoo.backbone.devices import replicate, shard
    from vitzoo.models import build_model, get_config

    devices = jax.local_devices()
    n = len(devices)
    batch -= batch % n
    model = build_model(get_config(arch), 1000, dtype=compute_dtype(dtype))
    params = jax.jit(model.init)(jax.random.PRNGKey(0),
                                 jnp.zeros((1, res, res, 3), jnp.float32))["params"]
    tx = sgd_momentum(optax.constant_schedule(0.01))
    state = replicate(jax.device_get(init_state(params, tx)), devices)
    del params
    step = make_train_step(model.apply, tx, num_classes=1000)
    rng = np.random.default_rng(0)
    data = shard({"image": rng.uniform(-1, 1, (n, batch // n, res, res, 3)).astype(np.float32),
                  "label": rng.integers(0, 1000, (n, batch // n)).astype(np.int32)}, devices)
    key = replicate(np.asarray(jax.random.PRNGKey(0)), devices)
    t = time.perf_counter()
    compiled = step.lower(state, data, key).compile()
    compile_s = time.perf_counter() - t
    flops = step_flops(compiled)
    state, metrics = compiled(state, data, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = compiled(state, data, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    peak = peak_tflops(devices[0].device_kind, peak_override)
    achieved = flops / step_s / 1e12 if flops else None
    return {"case": f"{arch}@{res}", "devices": n, "device_kind": devices[0].device_kind,
            "batch": batch, "dtype": dtype, "compile_s": compile_s, "step_s": step_s,
            "img_per_sec": batch / step_s, "tflops_per_device": achieved,
            "peak_tflops": peak, "mfu": achieved / peak if achieved and peak else None,
            "loss_finite": bool(np.isfinite(np.asarray(metrics["loss"])).all())}


def measure_pipeline(batch: int, res: int, images: int) -> float:
    """Images/s of vitzoo's training input pipeline alone (JPEG folder, train recipe)."""
    import numpy as np
    from PIL import Image

    from vitzoo.data import open_dataset, train_recipe
    from vitzoo.data.pipeline import Layout, train_batches

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for split, count in (("train", images), ("test", 2)):
            for c in range(2):
                folder = Path(tmp) / split / f"class{c}"
                folder.mkdir(parents=True)
                for i in range(max(count // 2, 1)):
                    pixels = rng.integers(0, 255, (res + res // 4, res + res // 3, 3), np.uint8)
                    Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
        data = open_dataset(tmp)
        batches = train_batches(data.train, train_recipe(res), Layout(batch), seed=0)
        next(batches)
        t, seen = time.perf_counter(), 0
        for _ in range(3):
            seen += next(batches)["image"].shape[1]
        return seen / (time.perf_counter() - t)


def render(results: list[dict[str, Any]], pipeline: dict[str, float], command: str) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    first = results[0]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {first['devices']} x "
        f"{first['device_kind']} with `{command}`: vitzoo's data-parallel train step, SGD "
        "momentum + clipping, random device-resident batches; FLOPs from XLA's cost analysis "
        "of the compiled step, MFU against the per-device peak (n/a: unknown device).",
        "",
        "| case | dtype | global batch | img/s | step time | TFLOP/s per device | peak | MFU | "
        "compile | input pipeline alone |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        mfu = fmt(100 * r["mfu"], ".3g") + "%" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['batch']} | {r['img_per_sec']:.1f} | "
            f"{1000 * r['step_s']:.0f} ms | {fmt(r['tflops_per_device'], '.3g')} | "
            f"{fmt(r['peak_tflops'], 'g')} | {mfu} | {r['compile_s']:.1f} s | "
            f"{fmt(pipeline.get(r['case']), '.0f')} img/s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="ARCH@RES, e.g. B/16@224 (repeatable)")
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--peak-tflops", type=float, help="per-device peak, overrides the table")
    parser.add_argument("--pipeline-images", type=int, default=0,
                        help="images in a generated JPEG folder for measuring the input "
                             "pipeline alone (0: skip)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    cases = [parse_case(c) for c in (args.case or ["B/16@224", "L/16@384"])]
    results, pipeline = [], {}
    for arch, res in cases:
        result = measure_case(arch, res, args.batch, args.steps, args.dtype, args.peak_tflops)
        results.append(result)
        print(result, file=sys.stderr)
        if args.pipeline_images:
            pipeline[result["case"]] = measure_pipeline(result["batch"], res, args.pipeline_images)
    command = "python benchmarks/accelerator.py " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
    body = render(results, pipeline, command.strip())
    print(body)
    if not args.no_write:
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", "Accelerator", body)
    return body


if __name__ == "__main__":
    main()
