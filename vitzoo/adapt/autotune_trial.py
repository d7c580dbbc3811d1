"""One candidate runtime setting, timed in a child process on the run's shapes.

Why a child: the host-device count and ``XLA_FLAGS`` are read once, when JAX starts its
backends, so each setting needs a fresh interpreter (the matrix-product backend is set the
same way, through ``VITZOO_CPU_MATMUL`` in the child's environment). The child builds the
run's model (random weights: only the shapes matter), compiles the same pmapped train step
the run uses (:func:`vitzoo.adapt.steps.make_train_step`, one micro-batch per device), and
prints one JSON line when it starts (its device count and product backend: a setting that did not
take effect is not measured) and one per step, flushed; the parent reads whatever came
before its time slice ran out, so a slow setting still yields the steps it finished.

Run as ``python -m vitzoo.adapt.autotune_trial SPEC_JSON`` (what :func:`measure_in_child`
does); nothing here is imported by the parent but the launcher.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitzoo.runtime import DEVICE_COUNT_FLAG

#: ``VITZOO_CPU_MATMUL`` (:mod:`vitzoo.kernels.matmul`; not imported here: it imports jax).
MATMUL_ENV = "VITZOO_CPU_MATMUL"
#: The matrix-product backends a setting may name, as people write them.
MATMUL_NAMES = {"onednn": "oneDNN", "xla": "XLA"}

#: Classes of the trial's head: the head is a sliver of a ViT's work, so any size measures it.
NUM_CLASSES = 10
#: Timed steps after the first (compiling) one; the median of them is the measurement.
TIMED_STEPS = 3


@dataclass(frozen=True)
class Setting:
    """What a trial varies: host devices, extra XLA flags, images per device per micro-step,
    and the library that computes the model's dense products.

    ``cpu_matmul`` None: the rule of :func:`vitzoo.kernels.matmul.choose_backend` decides
    (what vitzoo does untuned, and what every cache entry written before this field meant).
    """

    host_devices: int
    micro_batch: int
    xla_flags: tuple[str, ...] = ()
    cpu_matmul: str | None = None  # "onednn" | "xla" | None (the rule)

    def __post_init__(self) -> None:
        if self.cpu_matmul not in (None, *MATMUL_NAMES):
            raise ValueError(f"unknown matrix-product backend {self.cpu_matmul!r}")

    def describe(self) -> str:
        devices = f"{self.host_devices} host device{'s' if self.host_devices > 1 else ''}"
        products = [f"{MATMUL_NAMES[self.cpu_matmul]} products"] if self.cpu_matmul else []
        return ", ".join([devices, f"micro-batch {self.micro_batch}", *self.xla_flags, *products])

    def as_dict(self) -> dict[str, Any]:
        return {"host_devices": self.host_devices, "micro_batch": self.micro_batch,
                "xla_flags": list(self.xla_flags), "cpu_matmul": self.cpu_matmul}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Setting:
        """The inverse of :meth:`as_dict`; an entry without ``cpu_matmul`` (older) is the rule's.

        Raises KeyError, TypeError or ValueError for an entry that is not a setting.
        """
        return cls(int(data["host_devices"]), int(data["micro_batch"]),
                   tuple(data.get("xla_flags", ())), data.get("cpu_matmul"))


@dataclass(frozen=True)
class Shapes:
    """What the trial computes: the run's architecture, resolution and dtypes."""

    config: dict[str, Any]  # ModelConfig fields
    resolution: int
    dtype: str = "float32"
    momentum_dtype: str = "bfloat16"

    @property
    def name(self) -> str:
        return str(self.config["name"])


@dataclass
class Measurement:
    """One setting's result: images per second (None: not measured, ``error`` says why)."""

    setting: Setting
    img_per_sec: float | None
    timed_steps: int = 0
    seconds: float = 0.0
    error: str | None = None
    step_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["setting"] = self.setting.as_dict()
        return record


def child_xla_flags(setting: Setting, user_flags: str) -> str:
    """``XLA_FLAGS`` of the child: the user's own flags (which fix the setting), or the setting's."""
    if user_flags.strip():
        return user_flags
    return " ".join([f"{DEVICE_COUNT_FLAG}={setting.host_devices}", *setting.xla_flags])


def child_env(setting: Setting, user_flags: str,
              environ: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ``environ`` (default ``os.environ``) with the setting applied.

    ``XLA_FLAGS`` as :func:`child_xla_flags`; ``VITZOO_CPU_MATMUL`` set to the setting's
    backend when it names one (else inherited: the rule under ``auto``, or the user's
    mode), so that the child traces the program that backend makes.
    """
    environ = dict(os.environ if environ is None else environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**environ, "XLA_FLAGS": child_xla_flags(setting, user_flags), "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, environ.get("PYTHONPATH"))
                                         if p)}
    if setting.cpu_matmul is not None:
        env[MATMUL_ENV] = setting.cpu_matmul
    return env


def measure_in_child(setting: Setting, shapes: Shapes, seconds: float, *,
                     user_flags: str = "") -> Measurement:
    """Time ``setting`` in a fresh interpreter, killed after ``seconds``."""
    spec = {"shapes": asdict(shapes), "micro_batch": setting.micro_batch, "steps": TIMED_STEPS}
    env = child_env(setting, user_flags)
    command = [sys.executable, "-m", "vitzoo.adapt.autotune_trial", json.dumps(spec)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=max(seconds, 0.01))
        out, err, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, code = _text(exc.stdout), _text(exc.stderr), None
    return read_measurement(setting, out, err, code, time.perf_counter() - started, seconds)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def read_measurement(setting: Setting, out: str, err: str, code: int | None, wall: float,
                     seconds: float) -> Measurement:
    """The child's lines -> a :class:`Measurement` (``code`` None: it was stopped at ``seconds``)."""
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # a library's own print
    devices = next((ln["devices"] for ln in lines if "devices" in ln), None)
    products = next((ln["matmul"] for ln in lines if "matmul" in ln), None)
    steps = [float(ln["seconds"]) for ln in lines if ln.get("step", 0) >= 1]
    error = None
    if devices is not None and devices != setting.host_devices:
        error = f"the child ran on {devices} devices, not {setting.host_devices}"
    elif setting.cpu_matmul and products is not None and products != setting.cpu_matmul:
        error = f"the child computed its products with {products}, not {setting.cpu_matmul}"
    elif code not in (None, 0):
        last = [ln for ln in err.strip().splitlines() if ln.strip()]
        error = f"failed: {last[-1][-200:] if last else f'exit status {code}'}"
    elif not steps:
        error = f"no step finished within its {seconds:.0f} s"
    if error:
        return Measurement(setting, None, 0, wall, error, steps)
    images = setting.host_devices * setting.micro_batch
    return Measurement(setting, images / statistics.median(steps), len(steps), wall, None, steps)


def main(argv: list[str]) -> None:
    """The child: compile the run's train step on this process's devices, time a few steps."""
    spec = json.loads(argv[0])
    import jax
    import numpy as np

    from vitzoo.adapt.optimizer import sgd_momentum
    from vitzoo.adapt.steps import init_state, make_train_step
    from vitzoo.backbone.devices import replicate, shard
    from vitzoo.backbone.load import compute_dtype
    from vitzoo.kernels.matmul import matmul_backend
    from vitzoo.models import ModelConfig, build_model

    shapes = spec["shapes"]
    config_fields = dict(shapes["config"])
    if config_fields.get("resnet_blocks") is not None:
        config_fields["resnet_blocks"] = tuple(config_fields["resnet_blocks"])
    module = build_model(ModelConfig(**config_fields), NUM_CLASSES,
                         dtype=compute_dtype(shapes["dtype"]))
    res, micro = int(shapes["resolution"]), int(spec["micro_batch"])
    devices = jax.local_devices()
    products = matmul_backend(compute_dtype(shapes["dtype"]))[0]  # what VITZOO_CPU_MATMUL made
    print(json.dumps({"devices": len(devices), "matmul": products}), flush=True)
    rng = np.random.default_rng(0)
    params = jax.tree.map(  # shapes traced, not compiled; small random values, as after init
        lambda leaf: (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype),
        jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                           np.zeros((1, res, res, 3), np.float32),
                                           train=False))["params"])
    tx = sgd_momentum(lambda step: 1e-3, momentum_dtype=shapes["momentum_dtype"])
    state = replicate(jax.device_get(init_state(params, tx)), devices)
    train_step = make_train_step(module.apply, tx, num_classes=NUM_CLASSES)
    batch = shard({"image": rng.uniform(-1, 1, (len(devices), micro, res, res, 3)).astype(np.float32),
                   "label": rng.integers(0, NUM_CLASSES, (len(devices), micro)).astype(np.int32)},
                  devices)
    key = replicate(np.asarray(jax.random.PRNGKey(0)), devices)
    for step in range(1 + int(spec["steps"])):  # step 0 compiles
        begin = time.perf_counter()
        state, metrics = train_step(state, batch, key)
        jax.block_until_ready(metrics)
        print(json.dumps({"step": step, "seconds": time.perf_counter() - begin}), flush=True)


if __name__ == "__main__":  # pragma: no cover - run in the child
    main(sys.argv[1:])
