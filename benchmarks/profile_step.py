"""Where a vitzoo train step spends its time on CPU: a jax.profiler trace, summed per XLA op.

Builds vitzoo's train step (``vitzoo.adapt.steps.make_train_step``, jit on one device,
SGD momentum + clipping) for Ti/16 at 224 px, runs it twice to compile and warm up, traces
``--steps`` more steps with ``jax.profiler.trace`` and sums the duration of every XLA:CPU
op (thunk) event in the trace. Ops are grouped by what they are in the optimized HLO
(YNNPACK/dot fusions are the matrix products; ``wrapped_broadcast`` + ``copy`` +
``dynamic-update-slice`` are the buffers a scanned layer stack fills), shares are of the
summed op time (the two cores' threads added up).

Usage: ``python benchmarks/profile_step.py [--batch 16] [--steps 2]``; rewrites the
"Train-step profile" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (category, pattern on the op name), first match wins.
CATEGORIES = [
    ("matrix products (YNNPACK fusions, dot, convolution)", r"^(ynn_fusion|dot|convolution|.*_dot_)"),
    ("zero-filled buffers (broadcast)", r"broadcast"),
    ("copies / transposes", r"^(copy|transpose)"),
    ("scan stacking (dynamic-(update-)slice)", r"dynamic"),
    ("reductions (LayerNorm, softmax, sums)", r"reduce"),
    ("exp/tanh/elementwise fusions", r"fusion"),
    ("control flow (while, call)", r"^(while|call|conditional)"),
]
WRAPPERS = ("ThunkExecutor", "H2D", "D2H", "Execute", "$")


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return "other"


def profile(batch: int, steps: int) -> tuple[dict[str, float], float]:
    """(ns per op name per step, wall seconds per step) of the traced steps."""
    import jax
    import numpy as np
    import optax

    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.steps import init_state, make_train_step
    from vitzoo.models import build_model, get_config

    model = build_model(get_config("Ti/16"), 4)
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32),
            "label": rng.integers(0, 4, batch).astype(np.int32)}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), data["image"][:1])["params"]
    tx = sgd_momentum(optax.constant_schedule(0.01))
    state = init_state(params, tx)
    step = make_train_step(model.apply, tx, num_classes=4, pmap=False)
    key = jax.random.PRNGKey(0)
    for _ in range(2):
        state, metrics = step(state, data, key)
        jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with jax.profiler.trace(tmp):
            for _ in range(steps):
                state, metrics = step(state, data, key)
                jax.block_until_ready(metrics)
        wall = (time.perf_counter() - t) / steps
        trace = sorted(Path(tmp).rglob("*.xplane.pb"))[-1]
        profile_data = jax.profiler.ProfileData.from_file(str(trace))
    totals: dict[str, float] = collections.Counter()
    for plane in profile_data.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if not event.name.startswith(WRAPPERS):
                    totals[event.name] += event.duration_ns / steps
    return dict(totals), wall


def render(totals: dict[str, float], wall: float, batch: int, steps: int) -> str:
    total = sum(totals.values())
    by_category: dict[str, float] = collections.Counter()
    for name, ns in totals.items():
        by_category[category(name)] += ns
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `python "
        f"benchmarks/profile_step.py --batch {batch} --steps {steps}`: vitzoo's Ti/16 train "
        f"step at 224 px, batch {batch}, one device; {wall:.2f} s per traced step, "
        f"{total / 1e9:.2f} s of XLA op time per step (both cores' threads summed).",
        "",
        "| kind of op | share | ms per step |",
        "|---|---:|---:|",
    ]
    for label, ns in sorted(by_category.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {100 * ns / total:.1f}% | {ns / 1e6:.0f} |")
    lines += ["", "| top ops | share | ms per step |", "|---|---:|---:|"]
    for name, ns in sorted(totals.items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"| `{name}` | {100 * ns / total:.1f}% | {ns / 1e6:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--title", default="Train-step profile")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    totals, wall = profile(args.batch, args.steps)
    body = render(totals, wall, args.batch, args.steps)
    print(body)
    if not args.no_write:
        from benchmarks.results import replace_section

        replace_section(ROOT / "benchmarks" / "RESULTS.md", args.title, body)


if __name__ == "__main__":
    main()
