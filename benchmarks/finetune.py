"""Fine-tuning speed: vitzoo's runner vs a plain ``jax.jit`` loop, Ti/16 at 224, batch 64.

Measured, side by side in one run, each in its own fresh process (so peak RSS is per
contender and nothing is cached between them):

1. ``vitzoo.adapt.finetune`` on an image folder of JPEGs: time to first step (from the
   function call: data scan, checkpoint load, compile, first update), steady-state
   images/s from ``metrics.jsonl`` (every step logged, first window excluded), peak RSS.
2. The input pipeline alone (``vitzoo.data.pipeline.train_batches``): images/s.
3. A plain loop written here the way the reference trainer is: a ViT with its 12 blocks
   unrolled (a Python ``for`` over layers), ``jax.jit`` of value_and_grad + optax SGD,
   fed random arrays (no input pipeline at all): compile time, time to first step,
   steady-state images/s, peak RSS.

Usage: ``python benchmarks/finetune.py [--steps 8] [--images 192]``; rewrites the
"Fine-tuning" section of benchmarks/RESULTS.md. Random weights and synthetic images:
speed does not depend on the values.
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
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE = {"img_per_sec": 4.2, "first_step_s": 117.0, "compile_s": 95.0}


def _child(code: str, env: dict[str, str] | None = None) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; returns (its last JSON line, its peak RSS in MiB)."""
    wrapper = textwrap.dedent(code) + textwrap.dedent("""
        import json as _j, resource as _r
        print("__RSS__", _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
                **(env or {})}
    proc = subprocess.run([sys.executable, "-c", wrapper], env=full_env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    rss = float(next(line.split()[1] for line in lines if line.startswith("__RSS__")))
    result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    return result, rss


def make_inputs(workdir: Path, images: int) -> tuple[Path, Path]:
    """A Ti/16 release-layout checkpoint (random weights) and a 4-class JPEG folder."""
    import numpy as np
    from PIL import Image

    folder = workdir / "images"
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("test", 16)):
        for c in range(4):
            d = folder / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count // 4):
                h, w = rng.integers(300, 500, 2)
                base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
                img = Image.fromarray(base).resize((int(w), int(h)), Image.BILINEAR)
                img.save(d / f"{i}.jpg", quality=90)
    ckpt = workdir / "Ti_16-random.npz"
    code = f"""
    import jax, numpy as np
    from vitzoo.weights.release import params_to_release, save_npz
    from vitzoo.models import build_model, get_config
    config = get_config("Ti/16")
    model = build_model(config, 1000)
    params = jax.jit(lambda k: model.init(k, np.zeros((1, 224, 224, 3), np.float32)))(
        jax.random.PRNGKey(0))["params"]
    params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)
    save_npz({str(ckpt)!r}, params_to_release(jax.device_get(params), config))
    print("{{}}")
    """
    _child(code)
    return ckpt, folder


VITZOO_RUN = """
import json, time
t0 = time.perf_counter()
from vitzoo.adapt import finetune
result = finetune({ckpt!r}, {folder!r}, workdir={work!r}, steps={steps}, warmup=2, lr=0.01,
                  batch=64, res=224, accum="1", eval_every=0, checkpoint_every=0, log_every=1,
                  progress=False, register=False)
records = [json.loads(x) for x in open({work!r} + "/metrics.jsonl")]
steady = [r["img_per_sec"] for r in records[1:] if "img_per_sec" in r]
print(json.dumps({{"first_step_s": result.metrics["time_to_first_step_s"],
                  "steady_img_per_sec": sorted(steady)[len(steady) // 2],
                  "all_img_per_sec": steady, "total_s": time.perf_counter() - t0}}))
"""

PIPELINE_RUN = """
import json, time
from vitzoo.data import open_dataset, train_recipe
from vitzoo.data.pipeline import Layout, train_batches
data = open_dataset({folder!r})
it = train_batches(data.train, train_recipe(224), Layout(64), seed=0)
next(it)
t = time.perf_counter(); n = 0
for _ in range({batches}):
    n += next(it)["image"].shape[1]
print(json.dumps({{"img_per_sec": n / (time.perf_counter() - t)}}))
"""

PLAIN_RUN = """
import json, time
t0 = time.perf_counter()
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, optax

class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=3)(y, y)
        x = x + y
        y = nn.LayerNorm()(x)
        y = nn.Dense(192)(nn.gelu(nn.Dense(768)(y)))
        return x + y

class ViT(nn.Module):  # the reference's shape: a Python loop over 12 unrolled blocks
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(192, (16, 16), strides=(16, 16), padding="VALID")(x)
        x = x.reshape(x.shape[0], -1, 192)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, 192))
        x = jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], 192))
        for _ in range(12):
            x = Block()(x)
        return nn.Dense(4)(nn.LayerNorm()(x)[:, 0])

model = ViT()
rng = np.random.default_rng(0)
images = rng.uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
labels = rng.integers(0, 4, 64).astype(np.int32)
params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.01, momentum=0.9))
opt_state = tx.init(params)

@jax.jit
def step(params, opt_state, x, y):
    def loss_fn(p):
        logits = model.apply({{"params": p}}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

t = time.perf_counter()
compiled = step.lower(params, opt_state, images, labels).compile()
compile_s = time.perf_counter() - t
params, opt_state, loss = compiled(params, opt_state, images, labels)
loss.block_until_ready()
first = time.perf_counter() - t0
times = []
for _ in range({steps}):
    t = time.perf_counter()
    params, opt_state, loss = compiled(params, opt_state, images, labels)
    loss.block_until_ready()
    times.append(time.perf_counter() - t)
ips = sorted(64 / x for x in times)
print(json.dumps({{"compile_s": compile_s, "first_step_s": first,
                  "steady_img_per_sec": ips[len(ips) // 2]}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt, folder = make_inputs(tmp_path, args.images)
        common = {"ckpt": str(ckpt), "folder": str(folder)}
        vitzoo, vitzoo_rss = _child(VITZOO_RUN.format(
            **common, work=str(tmp_path / "run"), steps=args.steps),
            env={"VITZOO_HOME": str(tmp_path / "home")})
        pipeline, pipeline_rss = _child(PIPELINE_RUN.format(folder=str(folder), batches=6))
        plain, plain_rss = _child(PLAIN_RUN.format(steps=max(3, args.steps - 2)))
    speedup = vitzoo["steady_img_per_sec"] / REFERENCE["img_per_sec"]
    first_ratio = vitzoo["first_step_s"] / REFERENCE["first_step_s"]
    stall_ratio = pipeline["img_per_sec"] / vitzoo["steady_img_per_sec"]
    rows = [
        ("vitzoo finetune (scan encoder, pmap, tf.data JPEG folder)",
         vitzoo["steady_img_per_sec"], vitzoo["first_step_s"], "-", vitzoo_rss),
        ("plain jax.jit loop, unrolled 12 blocks, random arrays",
         plain["steady_img_per_sec"], plain["first_step_s"], f"{plain['compile_s']:.1f} s",
         plain_rss),
        ("reference vit_jax (jax 0.4.28 / flax 0.8.4), from the issue", REFERENCE["img_per_sec"],
         REFERENCE["first_step_s"], f"{REFERENCE['compile_s']:.0f} s", None),
    ]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; `python benchmarks/finetune.py --steps {args.steps}"
        f" --images {args.images}`. Ti/16 at 224 px, global batch 64, float32, SGD momentum "
        "(bf16 buffer) + clipping; each contender in its own fresh process. Steady-state "
        "img/s is the median over logged steps after the first (compilation excluded).",
        "",
        "| contender | steady img/s | time to first step | XLA compile | peak host RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ips, first, comp, rss in rows:
        rss_text = f"{rss:.0f} MiB" if rss is not None else "n/a"
        lines.append(f"| {name} | {ips:.2f} | {first:.1f} s | {comp} | {rss_text} |")
    lines += [
        "",
        f"Input pipeline alone (decode JPEG, resize 261, random crop 224, flip, batch 64): "
        f"**{pipeline['img_per_sec']:.1f} img/s** = {stall_ratio:.1f}x the training step's "
        f"consumption (target >= 2x; peak RSS {pipeline_rss:.0f} MiB).",
        "",
        f"vitzoo vs reference: **{speedup:.2f}x** steady-state img/s (target >= 1.5x, i.e. >= "
        f"{1.5 * REFERENCE['img_per_sec']:.1f}), time to first step **{first_ratio:.2f}x** of "
        f"the reference's (target <= 0.25x, i.e. <= {REFERENCE['first_step_s'] / 4:.0f} s). "
        f"vitzoo's time to first step counts everything from the `finetune()` call: folder "
        "scan, checkpoint load, compile and the first update.",
        "",
        "Per-step img/s of the vitzoo run: "
        + ", ".join(f"{x:.2f}" for x in vitzoo["all_img_per_sec"]),
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", "Fine-tuning", body)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
