"""Fine-tuning and inference speed, side by side: vitzoo, a plain ``jax.jit`` loop, timm.

Ti/16 at 224 px, batch 64, every contender in its own fresh process (peak RSS per
contender, nothing cached between them), the contenders run one after another and the
whole sequence is repeated ``--rounds`` times; the tables give medians.

Training (SGD momentum 0.9 + global-norm clipping at 1.0):

1. ``vitzoo.adapt.finetune`` on an image folder of JPEGs, twice with one ``VITZOO_HOME``:
   a cold compilation cache, then a warm one. Time to first step counts everything from
   the function call (data scan, checkpoint load, compile, first update); steady-state
   images/s comes from ``metrics.jsonl`` (first step excluded).
2. A plain loop written the way the reference trainer is: Flax ``MultiHeadDotProductAttention``
   blocks unrolled by a Python ``for``, ``jax.jit`` of value_and_grad + optax, random arrays.
3. timm ``vit_tiny_patch16_224`` + PyTorch, float32 and bfloat16 autocast, random tensors.
   PyTorch is never a dependency of vitzoo: the script runs this contender with the
   interpreter named by ``VITZOO_BENCH_TORCH_PYTHON`` (a venv with torch and timm) and
   skips it when that variable is unset.

``--dtype bfloat16`` runs twice: its matrix products on XLA (``VITZOO_CPU_MATMUL=xla``)
and on vitzoo's oneDNN kernel (``VITZOO_CPU_MATMUL=onednn``, what ``auto`` picks on CPUs
with AVX512-BF16/AMX; built before the round, skipped with the reason if it cannot be).
Float32 runs once more with its products forced onto oneDNN; the default float32 runs
use whichever backend the autotune measured faster here (reported below the tables).
Float32 and oneDNN bf16 run once more with ``VITZOO_MALLOC_TUNING=retain`` (malloc keeps
every freed block: fewer page faults, more memory; see the peak RSS column). That mode
needs a few steps to settle its heap, so give ``--steps`` 8 or more.

Inference (forward images/s, batch 64, Ti/16 and B/16): vitzoo's ``Predictor`` (the path
of ``vitzoo predict``), the plain Flax model under ``jax.jit``, timm under
``torch.inference_mode``.

Plus the input pipeline alone. Usage: ``python benchmarks/finetune.py [--steps 6]
[--rounds 1] [--only forward]``; rewrites the "Fine-tuning" section of benchmarks/RESULTS.md
(not with ``--only``, whose tables are partial). Random
weights and synthetic images: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TORCH_ENV = "VITZOO_BENCH_TORCH_PYTHON"
BATCH = 64
# Architecture sizes of the contenders written here (width, depth, heads, MLP).
SIZES = {"Ti/16": (192, 12, 3, 768), "B/16": (768, 12, 12, 3072)}
TIMM_NAMES = {"Ti/16": "vit_tiny_patch16_224", "B/16": "vit_base_patch16_224"}


def _child(code: str, env: dict[str, str] | None = None,
           python: str | None = None) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; returns (its last JSON line, its peak RSS in MiB)."""
    wrapper = textwrap.dedent(code) + textwrap.dedent("""
        import json as _j, resource as _r
        print("__RSS__", _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
                **(env or {})}
    proc = subprocess.run([python or sys.executable, "-c", wrapper], env=full_env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    rss = float(next(line.split()[1] for line in lines if line.startswith("__RSS__")))
    result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    return result, rss


def make_checkpoint(path: Path, arch: str) -> Path:
    """A release-layout checkpoint of ``arch`` with random weights and a 1000-class head."""
    code = f"""
    import jax, numpy as np
    from vitzoo.weights.release import params_to_release, save_npz
    from vitzoo.models import build_model, get_config
    config = get_config({arch!r})
    model = build_model(config, 1000)
    params = jax.jit(lambda k: model.init(k, np.zeros((1, 224, 224, 3), np.float32)))(
        jax.random.PRNGKey(0))["params"]
    params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)
    save_npz({str(path)!r}, params_to_release(jax.device_get(params), config))
    print("{{}}")
    """
    _child(code)
    return path


def make_folder(workdir: Path, images: int) -> Path:
    """A 4-class JPEG folder of ``images`` training images of varied sizes."""
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
    return folder


VITZOO_RUN = """
from vitzoo.runtime import tune_malloc_early; tune_malloc_early()  # as the CLI does
import json, time
t0 = time.perf_counter()
from vitzoo.adapt import finetune
result = finetune({ckpt!r}, {folder!r}, workdir={work!r}, steps={steps}, warmup=2, lr=0.01,
                  batch=64, res=224, accum="1", dtype={dtype!r}, eval_every=0,
                  checkpoint_every=0, log_every=1, progress=False, register=False)
records = [json.loads(x) for x in open({work!r} + "/metrics.jsonl")]
steady = [r["img_per_sec"] for r in records[1:] if "img_per_sec" in r]
run = json.load(open({work!r} + "/run.json"))
print(json.dumps({{"first_step_s": result.metrics["time_to_first_step_s"],
                  "steady_img_per_sec": sorted(steady)[len(steady) // 2],
                  "all_img_per_sec": steady, "total_s": time.perf_counter() - t0,
                  "runtime": run.get("runtime"), "devices": len(run.get("devices", []))}}))
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

# The reference trainer's shape: Flax MultiHeadDotProductAttention, a Python loop over
# unrolled blocks, jax.jit, default XLA settings.
PLAIN_MODEL = """
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, optax

WIDTH, DEPTH, HEADS, MLP = {size}

class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=HEADS)(y, y)
        x = x + y
        y = nn.LayerNorm()(x)
        y = nn.Dense(WIDTH)(nn.gelu(nn.Dense(MLP)(y)))
        return x + y

class ViT(nn.Module):
    classes: int
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(WIDTH, (16, 16), strides=(16, 16), padding="VALID")(x)
        x = x.reshape(x.shape[0], -1, WIDTH)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, WIDTH))
        x = jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], WIDTH))
        for _ in range(DEPTH):
            x = Block()(x)
        return nn.Dense(self.classes)(nn.LayerNorm()(x)[:, 0])
"""

PLAIN_RUN = """
import json, time
t0 = time.perf_counter()
""" + PLAIN_MODEL + """
model = ViT(4)
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

# The timm contender's training step (SGD momentum + clipping, optional bf16 autocast),
# shared with benchmarks/levers.py so both measure the same thing.
TIMM_STEP = """
torch.manual_seed(0)
model = timm.create_model("vit_tiny_patch16_224", num_classes=4).train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.rand({batch}, 3, 224, 224) * 2 - 1
y = torch.randint(0, 4, ({batch},))

def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled={bf16}):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()
"""

TORCH_TRAIN = """
import json, time
t0 = time.perf_counter()
import torch, timm
""" + TIMM_STEP + """
step()
first = time.perf_counter() - t0
times = []
for _ in range({steps}):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
ips = sorted(64 / x for x in times)
print(json.dumps({{"first_step_s": first, "steady_img_per_sec": ips[len(ips) // 2],
                  "torch": torch.__version__, "timm": timm.__version__,
                  "threads": torch.get_num_threads()}}))
"""

# Forward img/s: one warm-up batch (compilation), then the median of ``reps`` batches.
FORWARD_TIMING = """
forward(x)
times = []
for _ in range({reps}):
    t = time.perf_counter()
    forward(x)
    times.append(time.perf_counter() - t)
ips = sorted(64 / t for t in times)
print(json.dumps({{"img_per_sec": ips[len(ips) // 2]}}))
"""

# vitzoo's forwards also say which backend computed their products (autotune may choose):
# a first run's autotune races the backends on the job's first batches, which a long job
# computes anyway, so those are warm-up here; the timed batches run the winner.
VITZOO_TIMING = FORWARD_TIMING.replace(  # the backend: the forward's own decision
    '{{"img_per_sec": ips[len(ips) // 2]}}',
    '{{"img_per_sec": ips[len(ips) // 2], '
    '"matmul": [tuned.matmul_record()[k] for k in ("backend", "reason")]}}').replace(
    "forward(x)\ntimes", "forward(x)\nwhile tuned.tuning.pending:\n    forward(x)\ntimes", 1)

VITZOO_FORWARD = """
from vitzoo.runtime import tune_malloc_early; tune_malloc_early()  # as the CLI does
import json, time
import numpy as np
from vitzoo.predict import Predictor
predictor = tuned = Predictor({ckpt!r})
x = np.random.default_rng(0).uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
forward = predictor.logits
""" + VITZOO_TIMING

# The probe's path (vitzoo.backbone.Forward: pmapped over the host devices), any dtype.
BACKBONE_FORWARD = """
from vitzoo.runtime import tune_malloc_early; tune_malloc_early()  # as the CLI does
import json, time
import numpy as np
from vitzoo.backbone import Forward, load
fwd = tuned = Forward(load({ckpt!r}), batch=64, dtype={dtype!r})
n = len(fwd.placement.devices)
x = np.random.default_rng(0).uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
forward = lambda x: fwd(x.reshape(n, -1, *x.shape[1:]))
""" + VITZOO_TIMING

PLAIN_FORWARD = """
import json, time
""" + PLAIN_MODEL + """
model = ViT(1000)
x = np.random.default_rng(0).uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])["params"]
apply = jax.jit(model.apply)
forward = lambda x: np.asarray(apply({{"params": params}}, x))
""" + FORWARD_TIMING

TORCH_FORWARD = """
import json, time
import torch, timm
model = timm.create_model({name!r}).eval()
x = torch.rand(64, 3, 224, 224) * 2 - 1
def forward(x):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled={bf16}):
        return model(x).float().numpy()
""" + FORWARD_TIMING


def _median(values: list[float]) -> float:
    return statistics.median(values)


def lscpu_summary() -> str:
    """CPU model, core count and the SIMD flags that matter for XLA and oneDNN."""
    from vitzoo.runtime import cpu_info

    cpu = cpu_info()
    simd = ", ".join(cpu.as_dict()["simd"]) or "none"
    return (f"{cpu.model}, {os.cpu_count()} logical CPUs ({cpu.physical_cores} physical "
            f"cores usable), SIMD: {simd}")


def build_kernel(home: Path) -> str | None:
    """Build vitzoo's oneDNN kernel into ``home`` (so no contender times it); None or why not."""
    env = {**os.environ, "VITZOO_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "vitzoo.kernels.build"], env=env,
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def run_round(tmp: Path, ckpts: dict[str, Path], folder: Path, args: argparse.Namespace,
              round_index: int) -> dict[str, dict]:
    """Every contender once, in a fixed order; returns their results (and peak RSS)."""
    out: dict[str, dict] = {}
    xla, onednn = {"VITZOO_CPU_MATMUL": "xla"}, {"VITZOO_CPU_MATMUL": "onednn"}

    def record(name: str, result: tuple[dict, float]) -> None:
        out[name] = {**result[0], "rss": result[1]}
        print(f"  {name}: {json.dumps(result[0])[:200]}", file=sys.stderr)

    home = tmp / f"home{round_index}"
    no_kernel = build_kernel(home)
    if no_kernel:
        print(f"  no oneDNN contenders: {no_kernel}", file=sys.stderr)
    runs = [("cold", "float32", {}), ("warm", "float32", {}), ("bf16", "bfloat16", xla)]
    runs += [] if no_kernel else [("f32-onednn", "float32", onednn),
                                  ("bf16-onednn", "bfloat16", onednn)]
    retain = {"VITZOO_MALLOC_TUNING": "retain"}  # every freed block kept: no page re-faulted
    runs += [("retain", "float32", retain)]
    runs += [] if no_kernel else [("bf16-onednn-retain", "bfloat16", {**onednn, **retain})]
    torch_python = os.environ.get(TORCH_ENV)
    if args.only != "forward":  # the training table's contenders
        for name, dtype, matmul in runs:
            work = tmp / f"run{round_index}-{name}"
            record(f"vitzoo-{name}", _child(VITZOO_RUN.format(
                ckpt=str(ckpts["Ti/16"]), folder=str(folder), work=str(work), steps=args.steps,
                dtype=dtype), env={"VITZOO_HOME": str(home), **matmul}))
        record("plain", _child(PLAIN_RUN.format(size=SIZES["Ti/16"], steps=args.steps)))
        for dtype in ("fp32", "bf16") if torch_python else ():
            record(f"timm-{dtype}", _child(TORCH_TRAIN.format(
                bf16=dtype == "bf16", batch=64, steps=args.steps), python=torch_python))
    for arch in ("Ti/16", "B/16") if args.only != "training" else ():
        reps = 3 if arch == "Ti/16" else 1
        record(f"fwd-vitzoo-{arch}", _child(VITZOO_FORWARD.format(
            ckpt=str(ckpts[arch]), reps=reps), env={"VITZOO_HOME": str(home)}))
        forwards = [("float32", "float32", {}), ("float32-xla", "float32", xla),
                    ("bfloat16", "bfloat16", xla)]
        forwards += [] if no_kernel else [("float32-onednn", "float32", onednn),
                                          ("bfloat16-onednn", "bfloat16", onednn)]
        for name, dtype, matmul in forwards:
            record(f"fwd-backbone-{name}-{arch}", _child(BACKBONE_FORWARD.format(
                ckpt=str(ckpts[arch]), reps=reps, dtype=dtype),
                env={"VITZOO_HOME": str(home), **matmul}))
        record(f"fwd-plain-{arch}", _child(PLAIN_FORWARD.format(size=SIZES[arch], reps=reps)))
        if torch_python:
            for dtype in ("fp32", "bf16"):
                record(f"fwd-timm-{dtype}-{arch}", _child(TORCH_FORWARD.format(
                    name=TIMM_NAMES[arch], reps=reps, bf16=dtype == "bf16"),
                    python=torch_python))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--save", help="also write the raw results as JSON to this file")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--only", choices=("training", "forward"),
                        help="run one table's contenders (printed; RESULTS.md is left alone)")
    args = parser.parse_args()
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = make_folder(tmp_path, args.images)
        ckpts = {arch: make_checkpoint(tmp_path / f"{arch.replace('/', '_')}-random.npz", arch)
                 for arch in SIZES}
        pipeline, pipeline_rss = _child(PIPELINE_RUN.format(folder=str(folder), batches=6))
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
            rounds.append(run_round(tmp_path, ckpts, folder, args, i))
            if args.save:  # the raw measurements, kept even if rendering fails
                Path(args.save).write_text(json.dumps({"rounds": rounds, "pipeline": pipeline}))
    body = render(rounds, pipeline, pipeline_rss, args)
    print(body)
    if not (args.no_write or args.only):
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", "Fine-tuning", body)


def _stat(rounds: list[dict[str, dict]], name: str, key: str) -> float | None:
    values = [r[name][key] for r in rounds if name in r and r[name].get(key) is not None]
    return _median(values) if values else None


def _backends(last: dict[str, dict]) -> list[str]:
    """The matrix-product backend (and training's autotune choice) of the default runs."""
    said = []
    runtime = last.get("vitzoo-cold", {}).get("runtime") or {}
    choice = (runtime.get("autotune") or {}).get("choice")
    if choice:
        said.append(f"training autotune chose `{json.dumps(choice)}`")
    if runtime.get("matmul"):
        said.append(f"training products: {runtime['matmul'].get('backend')} "
                    f"({runtime['matmul'].get('reason')})")
    for name in ("fwd-vitzoo", "fwd-backbone-float32"):
        for arch in SIZES:
            matmul = last.get(f"{name}-{arch}", {}).get("matmul")
            if matmul:
                said.append(f"{name} {arch}: {matmul[0]} ({matmul[1]})")
    return said or ["not reported"]


def render(rounds: list[dict[str, dict]], pipeline: dict, pipeline_rss: float,
           args: argparse.Namespace) -> str:
    """The RESULTS.md section: training table, inference table, ratios, settings."""
    def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    timm32 = _stat(rounds, "timm-fp32", "steady_img_per_sec")
    timm16 = _stat(rounds, "timm-bf16", "steady_img_per_sec")
    plain = _stat(rounds, "plain", "steady_img_per_sec")
    train_rows = [
        ("vitzoo finetune, cold compile cache (JPEG folder, tf.data)", "vitzoo-cold"),
        ("vitzoo finetune, warm compile cache (same command again)", "vitzoo-warm"),
        ("vitzoo finetune --dtype bfloat16, XLA products (warm compile cache for the rest)",
         "vitzoo-bf16"),
        ("vitzoo finetune float32, oneDNN products (VITZOO_CPU_MATMUL=onednn)",
         "vitzoo-f32-onednn"),
        ("vitzoo finetune --dtype bfloat16, oneDNN products (VITZOO_CPU_MATMUL=onednn)",
         "vitzoo-bf16-onednn"),
        ("vitzoo finetune, VITZOO_MALLOC_TUNING=retain (warm)", "vitzoo-retain"),
        ("vitzoo finetune --dtype bfloat16, oneDNN products + VITZOO_MALLOC_TUNING=retain",
         "vitzoo-bf16-onednn-retain"),
        ("plain jax.jit loop, Flax MHA, 12 unrolled blocks, random arrays", "plain"),
        ("timm + PyTorch, float32, random tensors", "timm-fp32"),
        ("timm + PyTorch, bfloat16 autocast, random tensors", "timm-bf16"),
    ]
    runtime = rounds[-1].get("vitzoo-cold", {}).get("runtime") or {}
    torch_info = rounds[-1].get("timm-fp32", {})
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {lscpu_summary()}; "
        f"Python {platform.python_version()}; `python benchmarks/finetune.py --steps "
        f"{args.steps} --rounds {args.rounds}` with {TORCH_ENV} set"
        + (f" (torch {torch_info['torch']}, timm {torch_info['timm']}, "
           f"{torch_info['threads']} threads)" if torch_info else " (unset: no timm rows)")
        + ". Ti/16 at 224 px, batch 64, SGD momentum 0.9 + clipping at 1.0. Every contender "
        "runs in its own fresh process, one after another, the sequence repeated per round; "
        f"values are medians over rounds of each run's median step. Load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine is shared: compare "
        "rows of this table with each other, not with other tables).",
        "",
        f"vitzoo's runtime settings (run.json `runtime`): XLA_FLAGS `{runtime.get('xla_flags')}`, "
        f"{rounds[-1].get('vitzoo-cold', {}).get('devices')} host devices, compile cache "
        f"{'on' if runtime.get('compile_cache') else 'off'}.",
        "",
        "| training contender | steady img/s | vs plain jit | vs timm fp32 | vs timm bf16 | "
        "first step | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, name in train_rows:
        ips = _stat(rounds, name, "steady_img_per_sec")
        if ips is None:
            continue
        lines.append(
            f"| {label} | {ips:.2f} | {fmt(ips / plain if plain else None, '.2f', 'x')} | "
            f"{fmt(ips / timm32 if timm32 else None, '.2f', 'x')} | "
            f"{fmt(ips / timm16 if timm16 else None, '.2f', 'x')} | "
            f"{fmt(_stat(rounds, name, 'first_step_s'), '.1f', ' s')} | "
            f"{fmt(_stat(rounds, name, 'rss'), '.0f', ' MiB')} |")
    lines += ["", "| forward img/s, batch 64 | Ti/16 | B/16 | Ti/16 vs timm fp32 | "
              "B/16 vs timm fp32 |", "|---|---:|---:|---:|---:|"]
    timm_fwd = [_stat(rounds, f"fwd-timm-fp32-{arch}", "img_per_sec") for arch in SIZES]
    for label, prefix in (("vitzoo Predictor (`vitzoo predict` path)", "fwd-vitzoo"),
                          ("vitzoo backbone.Forward float32 (probe path, pmap; backend as "
                           "chosen here)", "fwd-backbone-float32"),
                          ("vitzoo backbone.Forward float32, XLA products (forced)",
                           "fwd-backbone-float32-xla"),
                          ("vitzoo backbone.Forward float32, oneDNN products (forced)",
                           "fwd-backbone-float32-onednn"),
                          ("vitzoo backbone.Forward bfloat16 (probe path, pmap)",
                           "fwd-backbone-bfloat16"),  # XLA's products (VITZOO_CPU_MATMUL=xla)
                          ("vitzoo backbone.Forward bfloat16 + oneDNN products (probe path, pmap)",
                           "fwd-backbone-bfloat16-onednn"),
                          ("plain jax.jit, Flax MHA, unrolled", "fwd-plain"),
                          ("timm + PyTorch float32, inference_mode", "fwd-timm-fp32"),
                          ("timm + PyTorch bfloat16 autocast, inference_mode", "fwd-timm-bf16")):
        cells = [_stat(rounds, f"{prefix}-{arch}", "img_per_sec") for arch in SIZES]
        ratios = [c / t if c is not None and t else None for c, t in zip(cells, timm_fwd, strict=True)]
        if any(c is not None for c in cells):
            lines.append(f"| {label} | " + " | ".join(fmt(c) for c in cells) + " | "
                         + " | ".join(fmt(r, ".2f", "x") for r in ratios) + " |")
    stall = pipeline["img_per_sec"] / max(_stat(rounds, "vitzoo-cold", "steady_img_per_sec"),
                                          1e-9)
    lines += [
        "",
        f"Input pipeline alone (decode JPEG, resize 261, random crop 224, flip, batch 64): "
        f"**{pipeline['img_per_sec']:.1f} img/s** = {stall:.1f}x the training step's "
        f"consumption (peak RSS {pipeline_rss:.0f} MiB).",
        "",
        "Per-step img/s of the vitzoo runs (cold, warm, bf16 XLA, bf16 oneDNN): " + "; ".join(
            ", ".join(f"{x:.2f}" for x in r[name]["all_img_per_sec"])
            for r in rounds
            for name in ("vitzoo-cold", "vitzoo-warm", "vitzoo-bf16", "vitzoo-bf16-onednn")
            if name in r),
        "",
        "The cold run is a first run on this machine: its first step includes the autotune "
        "trial (on by default, bounded by VITZOO_AUTOTUNE_BUDGET); the warm run reuses its choice.",
        "",
        "What the default float32 runs used: " + "; ".join(_backends(rounds[-1])) + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
