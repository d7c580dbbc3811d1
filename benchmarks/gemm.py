"""Matrix-product GFLOP/s on this CPU, side by side: JAX float32 / bfloat16, PyTorch float32 / bfloat16.

Answers whether bfloat16 is faster than float32 here (issue 20, part 3): XLA:CPU's own
bfloat16 products, the same with XLA's oneDNN custom-call flag (when this jaxlib knows
it), and PyTorch (oneDNN, which uses AMX / AVX512-BF16 units when the CPU has them) in
the interpreter named by ``VITZOO_BENCH_TORCH_PYTHON`` (skipped when unset). Each
contender runs in its own fresh process, one after another; the CPU's bf16-relevant
flags are printed first, since they decide the answer (no AMX and no avx512_bf16: no
unit multiplies bfloat16 natively). vitzoo's own oneDNN kernel (``vitzoo.kernels``, a
``jax.ffi`` custom call, what ``--dtype bfloat16`` uses on CPUs with bf16 units) runs as
one more contender; it is built into ``VITZOO_HOME`` on first use, before the timing.

Shapes: a square 2048 x 2048 x 2048 product and a ViT-B-shaped one, the MLP's first
Dense over a batch of 64 images of 197 tokens (12608 x 768 x 3072).
Usage: ``python benchmarks/gemm.py [--reps 5] [--no-write]``; prints a Markdown table and
rewrites the "Matrix products (bf16 on CPU)" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TORCH_ENV = "VITZOO_BENCH_TORCH_PYTHON"
ONEDNN = "--xla_cpu_experimental_onednn_custom_call=true"
SHAPES = {"2048^3": (2048, 2048, 2048), "ViT-B MLP (12608x768x3072)": (12608, 768, 3072)}
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_fp16", "avx_vnni",
              "avx512_vnni", "avx512f")

# Median seconds of ``reps`` products after one warm-up; prints a JSON line.
JAX_CODE = """
import json, sys, time, jax, jax.numpy as jnp, numpy as np
m, k, n, dtype, reps = {m}, {k}, {n}, {dtype!r}, {reps}
rng = np.random.default_rng(0)
a = jnp.asarray(rng.standard_normal((m, k)), dtype)
b = jnp.asarray(rng.standard_normal((k, n)), dtype)
f = jax.jit(lambda a, b: a @ b)
f(a, b).block_until_ready()
ts = []
for _ in range(reps):
    t = time.perf_counter(); f(a, b).block_until_ready(); ts.append(time.perf_counter() - t)
print(json.dumps({{"seconds": sorted(ts)[len(ts) // 2]}}))
"""

TORCH_CODE = """
import json, os, time, torch
torch.set_num_threads(os.cpu_count())
m, k, n, dtype, reps = {m}, {k}, {n}, getattr(torch, {dtype!r}), {reps}
torch.manual_seed(0)
a = torch.randn(m, k).to(dtype)
b = torch.randn(k, n).to(dtype)
with torch.inference_mode():
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(json.dumps({{"seconds": sorted(ts)[len(ts) // 2], "torch": torch.__version__}}))
"""


# The same product through vitzoo's oneDNN custom call (VITZOO_CPU_MATMUL=onednn forces it).
VITZOO_CODE = JAX_CODE.replace(
    "f = jax.jit(lambda a, b: a @ b)",
    "from vitzoo.kernels.matmul import onednn_matmul\nf = jax.jit(lambda a, b: onednn_matmul(a, b))")


def cpu_flags() -> list[str]:
    from vitzoo.runtime import cpu_info

    return [f for f in BF16_FLAGS if f in cpu_info().flags]


def _run(python: str, code: str, flags: str | None = None) -> dict | str:
    """A contender's JSON result, or why it has none (e.g. a flag this jaxlib rejects)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = flags
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return f"failed: {last[:120]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def contenders() -> list[tuple[str, str, str, str | None]]:
    """(label, interpreter, code template, XLA_FLAGS)."""
    rows = [("JAX float32", sys.executable, JAX_CODE.replace("{dtype!r}", "'float32'"), None),
            ("JAX bfloat16", sys.executable, JAX_CODE.replace("{dtype!r}", "'bfloat16'"), None),
            ("JAX bfloat16 + oneDNN custom-call flag", sys.executable,
             JAX_CODE.replace("{dtype!r}", "'bfloat16'"), ONEDNN),
            ("vitzoo oneDNN bf16 (jax.ffi)", sys.executable,
             VITZOO_CODE.replace("{dtype!r}", "'bfloat16'"), None)]
    torch_python = os.environ.get(TORCH_ENV)
    if torch_python:
        rows += [("PyTorch float32", torch_python, TORCH_CODE.replace("{dtype!r}", "'float32'"),
                  None),
                 ("PyTorch bfloat16", torch_python,
                  TORCH_CODE.replace("{dtype!r}", "'bfloat16'"), None)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    from vitzoo.runtime import cpu_info

    cpu = cpu_info()
    lines = [f"CPU: {cpu.model}, {cpu.physical_cores} physical cores usable; bf16-relevant "
             f"flags: {', '.join(cpu_flags()) or 'none'}.", "",
             "| contender | " + " | ".join(f"{s} GFLOP/s" for s in SHAPES) + " |",
             "|---|" + "---:|" * len(SHAPES)]
    print("\n".join(lines), flush=True)
    for label, python, template, flags in contenders():
        cells = []
        for m, k, n in SHAPES.values():
            result = _run(python, template.format(m=m, k=k, n=n, reps=args.reps), flags)
            cells.append(result if isinstance(result, str)
                         else f"{2 * m * k * n / result['seconds'] / 1e9:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"`python benchmarks/gemm.py --reps {args.reps}`: median of {args.reps} "
              f"products after a warm-up, each contender in its own fresh process, one after "
              f"another; load average at the end {load}."]
    print(lines[-1])
    if not args.no_write:
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", "Matrix products (bf16 on CPU)",
                        "\n".join(lines))


if __name__ == "__main__":
    main()
