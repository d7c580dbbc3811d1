"""Train-step levers on CPU, measured interleaved: one worker process per variant, one step each in turn.

On a shared machine the speed drifts by 2-3x within minutes, so contenders measured one
after another cannot be compared. Here every variant (a model formulation, an optimizer
setting, a set of XLA flags, a host-device count, or timm/PyTorch) lives in its own worker
process, compiled and warmed up first; then the coordinator asks each worker in turn for
one training step and the workers take turns for ``--reps`` rounds. Each row is the
median over its steps, the ratio is against the group's first row, measured in the same
rounds.

The train step is vitzoo's own (``vitzoo.adapt.steps.make_train_step``, pmapped over the
worker's local devices, SGD momentum + clipping) on random arrays, Ti/16 at 224 px; the
"plain" worker is benchmarks/finetune.py's plain ``jax.jit`` loop; the timm workers need
``VITZOO_BENCH_TORCH_PYTHON`` (skipped when unset). Usage:
``python benchmarks/levers.py [--batch 32] [--reps 5] [--group NAME]``; rewrites the
"Train-step levers" section of benchmarks/RESULTS.md (``--title`` another one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.finetune import PLAIN_MODEL, SIZES, TIMM_STEP, TORCH_ENV  # noqa: E402

THUNK_OFF = "--xla_cpu_use_thunk_runtime=false"
ONEDNN = "--xla_cpu_experimental_onednn_custom_call=true"
DEVICES = "--xla_force_host_platform_device_count="

# name -> (worker spec, XLA_FLAGS). Specs: attention ('einsum' | 'flax' | 'dpa'), unroll
# (the layer stack unrolled instead of a loop), momentum dtype, compute dtype, forward (time inference
# instead of a train step); 'plain' and 'timm' are the other contenders.
VARIANTS: dict[str, tuple[dict, str]] = {
    "vitzoo before (Flax MHA, scan)": ({"attention": "flax"}, f"{DEVICES}1"),
    "fused-qkv einsum attention": ({"attention": "einsum"}, f"{DEVICES}1"),
    "jax.nn.dot_product_attention": ({"attention": "dpa"}, f"{DEVICES}1"),
    "einsum + float32 momentum": ({"attention": "einsum", "momentum": "float32"},
                                  f"{DEVICES}1"),
    "unrolled (the CPU default)": ({"attention": "einsum", "unroll": True}, f"{DEVICES}1"),
    "unrolled + thunk runtime off": ({"attention": "einsum", "unroll": True},
                                     f"{DEVICES}1 {THUNK_OFF}"),
    "unrolled + oneDNN custom call": ({"attention": "einsum", "unroll": True},
                                      f"{DEVICES}1 {ONEDNN}"),
    "unrolled + one host device per core (pmap)": ({"attention": "einsum", "unroll": True},
                                                   "{cores}"),
    "unrolled, device per core, bfloat16 compute": (
        {"attention": "einsum", "unroll": True, "dtype": "bfloat16"}, "{cores}"),
    "plain jax.jit loop (benchmarks/finetune.py)": ({"kind": "plain"}, ""),
    "forward: plain jax.jit (benchmarks/finetune.py)": ({"kind": "plain", "forward": True}, ""),
    "forward: Flax MHA, scan": ({"attention": "flax", "forward": True}, ""),
    "forward: fused-qkv einsum, scan": ({"attention": "einsum", "forward": True}, ""),
    "forward: fused-qkv einsum, unrolled": ({"attention": "einsum", "unroll": True,
                                             "forward": True}, ""),
    "forward: dot_product_attention, unrolled": ({"attention": "dpa", "unroll": True,
                                                  "forward": True}, ""),
    "forward: vitzoo Ti/16, glibc malloc defaults": (
        {"attention": "einsum", "unroll": True, "forward": True}, ""),
    "forward: vitzoo Ti/16, malloc keeps freed buffers (runtime.keep_freed_buffers)": (
        {"attention": "einsum", "unroll": True, "forward": True, "malloc": True}, ""),
    "train: device per core, malloc keeps freed buffers": (
        {"attention": "einsum", "unroll": True, "malloc": True}, "{cores}"),
    "train: device per core, malloc retains every block (VITZOO_MALLOC_TUNING=retain)": (
        {"attention": "einsum", "unroll": True, "malloc": "retain"}, "{cores}"),
    "timm float32": ({"kind": "timm"}, ""),
    "timm bfloat16 autocast": ({"kind": "timm", "bf16": True}, ""),
}
GROUPS = {
    "attention": ["vitzoo before (Flax MHA, scan)", "fused-qkv einsum attention",
                  "jax.nn.dot_product_attention"],
    "model": ["fused-qkv einsum attention", "unrolled (the CPU default)",
              "einsum + float32 momentum"],
    "flags": ["unrolled (the CPU default)", "unrolled + thunk runtime off",
              "unrolled + oneDNN custom call", "unrolled + one host device per core (pmap)"],
    "inference": ["forward: plain jax.jit (benchmarks/finetune.py)", "forward: Flax MHA, scan",
                  "forward: fused-qkv einsum, scan", "forward: fused-qkv einsum, unrolled",
                  "forward: dot_product_attention, unrolled"],
    # Each worker alone in its process: the malloc effect depends on what ran first.
    "malloc": ["forward: vitzoo Ti/16, glibc malloc defaults",
               "forward: vitzoo Ti/16, malloc keeps freed buffers (runtime.keep_freed_buffers)",
               "unrolled + one host device per core (pmap)",
               "train: device per core, malloc keeps freed buffers",
               "train: device per core, malloc retains every block (VITZOO_MALLOC_TUNING=retain)"],
    "contenders": ["plain jax.jit loop (benchmarks/finetune.py)", "fused-qkv einsum attention",
                   "unrolled (the CPU default)", "unrolled + one host device per core (pmap)",
                   "unrolled, device per core, bfloat16 compute",
                   "timm float32", "timm bfloat16 autocast"],
}


def jax_worker(spec: dict, batch: int) -> None:
    """Compile, warm up, print ``ready``; then one train step per line read from stdin."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import vitzoo.models.layers as layers
    import vitzoo.models.vit as vit
    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.steps import init_state, make_train_step
    from vitzoo.backbone.devices import replicate, shard
    from vitzoo.models import build_model, get_config
    from vitzoo.runtime import keep_freed_buffers

    if spec.get("malloc"):
        if spec["malloc"] == "retain":
            os.environ["VITZOO_MALLOC_TUNING"] = "retain"
        keep_freed_buffers()
    if spec.get("attention") == "dpa":
        vit.attend = lambda q, k, v, dropout=None: jax.nn.dot_product_attention(q, k, v)
    if spec.get("attention") == "flax":
        class FlaxAttention(nn.Module):
            num_heads: int
            dtype: object
            dropout_rate: float = 0.0
            deterministic: bool = True

            @nn.compact
            def __call__(self, x: jax.Array) -> jax.Array:
                return nn.MultiHeadDotProductAttention(
                    num_heads=self.num_heads, dtype=self.dtype, deterministic=True)(x, x)

        vit.SelfAttention = FlaxAttention
    unroll = bool(spec.get("unroll"))  # the layer stack: scanned loop or unrolled
    layers.unroll_on_this_backend = lambda: unroll
    devices = jax.local_devices()
    model = build_model(get_config("Ti/16"), 4, dtype=jnp.dtype(spec.get("dtype", "float32")))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, 4, batch).astype(np.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]
    tx = sgd_momentum(optax.constant_schedule(0.01), momentum_dtype=spec.get("momentum",
                                                                               "bfloat16"))
    state = replicate(jax.device_get(init_state(params, tx)), devices)
    step = make_train_step(model.apply, tx, num_classes=4)
    n = len(devices)
    data = shard({"image": images.reshape(n, -1, *images.shape[1:]),
                  "label": labels.reshape(n, -1)}, devices)
    key = replicate(np.asarray(jax.random.PRNGKey(0)), devices)

    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))

    def run() -> None:
        nonlocal state
        if spec.get("forward"):
            np.asarray(forward(params, images))
            return
        state, metrics = step(state, data, key)
        jax.block_until_ready(metrics)

    _serve(run, {"devices": n})


def plain_worker(batch: int, forward: bool = False) -> None:
    namespace: dict = {}
    exec(PLAIN_MODEL.format(size=SIZES["Ti/16"]),
         namespace)
    jax, np, optax = namespace["jax"], namespace["np"], namespace["optax"]
    model = namespace["ViT"](4)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, 4, batch).astype(np.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.01, momentum=0.9))
    state = [params, tx.init(params)]

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    apply = jax.jit(model.apply)

    def run() -> None:
        if forward:
            np.asarray(apply({"params": state[0]}, images))
            return
        params, opt_state, loss = step(*state, images, labels)
        loss.block_until_ready()
        state[:] = [params, opt_state]

    _serve(run, {})


TIMM_WORKER = """
import json, sys, time
import torch, timm
""" + TIMM_STEP + """
run = step
t = time.perf_counter(); run(); run()
print(json.dumps({{"ready": time.perf_counter() - t, "threads": torch.get_num_threads()}}),
      flush=True)
for line in sys.stdin:
    t = time.perf_counter(); run()
    print(json.dumps({{"step_s": time.perf_counter() - t}}), flush=True)
"""


def _serve(run: object, info: dict) -> None:
    t = time.perf_counter()
    run()  # compile + first step
    run()
    print(json.dumps({"ready": time.perf_counter() - t, **info}), flush=True)
    for _ in sys.stdin:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        run()
        print(json.dumps({"step_s": time.perf_counter() - t, "page_faults":
                          resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}),
              flush=True)


def _start(name: str, batch: int, cores: int) -> subprocess.Popen | None:
    spec, flags = VARIANTS[name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": flags.replace("{cores}", f"{DEVICES}{cores}")}
    if spec.get("kind") == "timm":
        python = os.environ.get(TORCH_ENV)
        if not python:
            return None
        cmd = [python, "-c", TIMM_WORKER.format(batch=batch, bf16=bool(spec.get("bf16")))]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
               "--batch", str(batch)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


def _read(proc: subprocess.Popen) -> dict:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {proc.args[-3:]} died (exit {proc.wait()})")
        if line.startswith("{"):
            return json.loads(line)


def measure_group(names: list[str], batch: int, reps: int, cores: int) -> list[dict]:
    """Start the group's workers one by one (compiles do not overlap), then interleave."""
    workers = {}
    for name in names:
        proc = _start(name, batch, cores)
        if proc is None:
            continue
        workers[name] = (proc, _read(proc))
        print(f"  ready: {name} {workers[name][1]}", file=sys.stderr)
    times: dict[str, list[float]] = {name: [] for name in workers}
    faults: dict[str, list[int]] = {name: [] for name in workers}
    for _ in range(reps):
        for name, (proc, _) in workers.items():
            proc.stdin.write("step\n")
            proc.stdin.flush()
            reply = _read(proc)
            times[name].append(reply["step_s"])
            if "page_faults" in reply:  # jax workers: minor page faults of the step
                faults[name].append(reply["page_faults"])
    for proc, _ in workers.values():
        proc.stdin.close()
        proc.wait()
    rows = []
    for name, samples in times.items():
        ips = [batch / s for s in samples]
        rows.append({"name": name, "img_per_sec": statistics.median(ips),
                     "all": ips, "page_faults": (statistics.median(faults[name])
                                                 if faults[name] else None),
                     "flags": VARIANTS[name][1].replace("{cores}", f"{DEVICES}{cores}"),
                     **workers[name][1]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--group", action="append", choices=sorted(GROUPS))
    parser.add_argument("--title", default="Train-step levers", help="RESULTS.md section")
    parser.add_argument("--worker")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("kind") == "plain":
            plain_worker(args.batch, bool(spec.get("forward")))
        else:
            jax_worker(spec, args.batch)
        return
    from vitzoo.runtime import cpu_info

    cores = cpu_info().physical_cores
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `python "
        f"benchmarks/levers.py --batch {args.batch} --reps {args.reps}`: Ti/16 at 224 px, "
        f"batch {args.batch}, {cores} physical cores; workers interleaved step by step, "
        "medians; ratio = against the first row of the same group (same rounds).",
    ]
    for group in args.group or list(GROUPS):
        print(f"group {group}", file=sys.stderr)
        rows = measure_group(GROUPS[group], args.batch, args.reps, cores)
        base = rows[0]["img_per_sec"]
        lines += ["", f"**{group}**", "",
                  "| variant | XLA_FLAGS | img/s | ratio | minor page faults per step | "
                  "steps (img/s) |",
                  "|---|---|---:|---:|---:|---|"]
        for row in rows:
            faults = "n/a" if row["page_faults"] is None else f"{row['page_faults']:,.0f}"
            lines.append(f"| {row['name']} | `{row['flags'] or '-'}` | {row['img_per_sec']:.2f} "
                         f"| {row['img_per_sec'] / base:.2f}x | {faults} | "
                         + ", ".join(f"{x:.1f}" for x in row["all"]) + " |")
        print("\n".join(lines[-len(rows) - 2:]), file=sys.stderr)
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", args.title, body)


if __name__ == "__main__":
    main()
