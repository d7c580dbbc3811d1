"""Where a backbone runs: the runtime settings, the processes and devices, the global batch.

:func:`start` is the first thing a command that computes does: the XLA flags, host
devices and compilation cache (:func:`vitzoo.runtime.configure`, returned so the command
records them), then ``jax.distributed`` when the command runs as one of several
processes (:mod:`vitzoo.backbone.distributed`), then the accelerator guard, in the order
JAX needs.

:class:`Placement` is the data-parallel picture after that: every local device of every
process holds one copy of the parameters and one slice of each global batch, which is
rounded down to a multiple of the device count (and never below it).

:class:`Forward` runs a backbone that way and hands every process the whole global
batch's pre-logits (the features a probe or a new head reads): each process feeds only its own slice
(``Layout.process_index``), the devices ``all_gather`` the rows, and each process reads
them from one of its own devices. With one process no gather is compiled in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.backbone.distributed import Cluster
    from vitzoo.backbone.forward_tune import Tuning
    from vitzoo.backbone.load import Backbone
    from vitzoo.data import Layout


_settings: dict[str, Any] | None = None  # of the last start() in this process


def start(*, cluster: Cluster | None = None, compile_cache: bool | None = None,
          xla_flags: bool = True, guard: bool = True,
          tuned_flags: list[str] | None = None) -> dict[str, Any]:
    """Configure the runtime, join ``cluster`` (None: one process), then the accelerator guard.

    ``guard``: stop when the machine has a GPU/TPU that JAX cannot use
    (:func:`vitzoo.runtime.require_accelerator`, ``--allow-cpu`` runs anyway).
    ``tuned_flags``: XLA flags an autotune trial chose (:func:`vitzoo.runtime.configure`).
    Returns the runtime settings in effect (for the run record).
    """
    global _settings
    from vitzoo import runtime
    from vitzoo.backbone import distributed

    _settings = runtime.configure(compile_cache=compile_cache, xla_flags=xla_flags,
                                  tuned_flags=tuned_flags)
    if cluster is not None:
        distributed.initialize(cluster)
    if guard:
        runtime.require_accelerator()
    return _settings


def started() -> dict[str, Any]:
    """The settings of this process's last :func:`start`, starting now if it never did.

    :class:`Forward` calls it, so no path computes without the compile cache and the
    recorded settings, even one whose command forgot to start. It does not guard: the
    commands do that where they start (``probe`` before its candidates, for one).
    """
    return _settings if _settings is not None else start(guard=False)


@dataclass(frozen=True)
class Placement:
    """The local devices of this process and the processes of the run."""

    devices: list[Any] = field(default_factory=list)
    process_count: int = 1
    process_index: int = 0

    @classmethod
    def here(cls) -> Placement:
        """This process's view (after :func:`start`)."""
        import jax

        return cls(list(jax.local_devices()), jax.process_count(), jax.process_index())

    @property
    def total_devices(self) -> int:
        return len(self.devices) * self.process_count

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    def global_batch(self, batch: int) -> int:
        """``batch`` rounded down to a multiple of all devices, at least one image per device."""
        from vitzoo.errors import VitzooError

        if batch < 1:
            raise VitzooError(f"--batch must be positive, got {batch}", "e.g. --batch 64")
        n = self.total_devices
        return max(n, batch - batch % n)

    def layout(self, batch: int) -> Layout:
        """How a global ``batch`` (rounded) splits over processes and local devices."""
        from vitzoo.data import Layout

        return Layout(self.global_batch(batch), self.process_count, self.process_index,
                      len(self.devices))

    def replicate(self, tree: Any) -> Any:
        from vitzoo.backbone.devices import replicate

        return replicate(tree, self.devices)

    def shard(self, tree: Any) -> Any:
        from vitzoo.backbone.devices import shard

        return shard(tree, self.devices)

    def describe(self) -> dict[str, Any]:
        """What a run record says about where it ran."""
        device = self.devices[0]
        return {"platform": device.platform,
                "device_kind": str(getattr(device, "device_kind", device.platform)),
                "local_devices": len(self.devices), "processes": self.process_count,
                "devices": [str(d) for d in self.devices]}


class Forward:
    """A backbone compiled data-parallel over every device of every process.

    ``forward(images)`` takes this process's slice of a global batch, ``[local_devices,
    per_device, H, W, 3]`` (what ``eval_batches`` yields for :attr:`layout`), and returns
    the pre-logits of the whole global batch ``[global_batch, D]`` float32 on every process,
    rows in global slot order.

    The matrix-product backend is chosen at the first call (:mod:`vitzoo.backbone.forward_tune`:
    a remembered answer, or a trial whose winning compiled step is then used); ``batches``
    is how many batches the job runs (None: enough to be worth a trial).
    :attr:`tuning` says what was decided (None before the first call).
    """

    def __init__(self, backbone: Backbone, *, batch: int, dtype: str = "float32",
                 placement: Placement | None = None, batches: int | None = None) -> None:
        import jax

        from vitzoo.backbone.devices import AXIS
        from vitzoo.backbone.load import check_dtype

        self.backbone = backbone
        self.dtype = check_dtype(dtype)
        self.runtime = started()
        self.placement = placement or Placement.here()
        self.layout = self.placement.layout(batch)
        self.global_batch = self.layout.global_batch
        self.batches = batches
        self.tuning: Tuning | None = None
        module = backbone.module(self.dtype)
        gather = self.placement.process_count > 1

        def make_step() -> Any:
            """A step over a function made by this call: JAX caches a trace by function, so
            a race's second candidate over the first's function would reuse its trace (and
            its matrix-product backend) instead of tracing its own."""
            def step(params: Any, images: Any) -> Any:
                _, out = module.apply({"params": params}, images, train=False, outputs=True)
                rows = out["pre_logits"]  # the unused logits are dead code under pmap
                if gather:  # [total devices, per_device, D] on every device
                    rows = jax.lax.all_gather(rows, AXIS)
                return rows

            return jax.pmap(step, axis_name=AXIS)

        self._gather = gather
        self._make_step = make_step
        self._step: Any = None
        self._race: Any = None  # a forward_tune.Race while the backend is being raced
        self._params = self.placement.replicate(backbone.params)

    def tune(self) -> Tuning:
        """The backend decided, now: a trial the job's batches have not finished runs on random
        pixels (the probe's img/s, timed after ``forward.tune()``).
        """
        self._start_tuning()
        if self._race is not None and not self._race.done:
            layout, res = self.layout, self.backbone.resolution
            images = np.random.default_rng(0).uniform(
                -1, 1, (layout.local_devices, layout.per_device, res, res, 3)).astype(np.float32)
            self._race.finish(self._params, self.placement.shard(images))
        assert self.tuning is not None
        return self.tuning

    def _start_tuning(self) -> None:
        """At the first use: a remembered or fixed backend, or a race on the job's batches."""
        if self.tuning is not None:
            return
        from vitzoo.backbone import forward_tune

        layout = self.layout
        job = forward_tune.Job("features", self.backbone.config, self.backbone.resolution,
                               layout.per_device, layout.local_devices, self.dtype,
                               self.placement.process_count)
        self.tuning, self._race = forward_tune.decide(job, self._make_step,
                                                      batches=self.batches)
        self._step = self._race or self._make_step()

    def matmul_record(self) -> dict[str, Any]:
        """The run record's ``matmul``: the backend this forward uses, why, and the autotune.

        Before the first call (every feature was cached) nothing was decided: the rule's
        backend, said so, rather than a trial for a forward that never runs.
        """
        if self.tuning is None:
            from vitzoo.backbone.forward_tune import Tuning

            return Tuning("skipped", "the forward did not run").record(self.dtype)
        return self.tuning.record(self.dtype)

    def device_call(self, device_images: Any) -> Any:
        """The compiled step on already-sharded images (a trial's batch while one runs)."""
        self._start_tuning()
        assert self.tuning is not None
        with self.tuning.applied(self.dtype):  # a (re)trace uses the decided backend
            return self._step(self._params, device_images)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self.device_call(self.placement.shard(images))
        if self._gather:  # every device holds all rows: read one local copy
            from vitzoo.backbone.devices import unreplicate

            rows = unreplicate(out)
        else:
            rows = np.asarray(out)
        return rows.reshape(-1, rows.shape[-1])
