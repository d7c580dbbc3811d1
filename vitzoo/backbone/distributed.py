"""Multi-host start-up: ``jax.distributed.initialize`` from options or the environment.

``--coordinator host:port --num-processes N --process-id I`` win; otherwise
``VITZOO_COORDINATOR`` / ``VITZOO_NUM_PROCESSES`` / ``VITZOO_PROCESS_ID`` (and JAX's
own ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``). Without
any of them the run is single-process. Must run before anything touches a device.

In a multi-process run, JAX's CPU collectives library (Gloo) writes ``[Gloo] Rank 0 is
connected to 1 peer ranks...`` from C++ to file descriptor 1 when a collective first runs
(not at ``initialize``; a new group of devices can print again), which would spoil ``--format
json`` on stdout. :func:`initialize` therefore points descriptor 1 at stderr for the rest of
the process and gives Python's ``sys.stdout`` a descriptor of its own on the real stdout
(:func:`native_stdout_to_stderr`): stdout carries vitzoo's output only.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass

from vitzoo.errors import VitzooError


@dataclass(frozen=True)
class Cluster:
    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def resolve(coordinator: str | None = None, num_processes: int | None = None,
            process_id: int | None = None) -> Cluster:
    """Merge options and environment into a :class:`Cluster` (validated)."""
    coordinator = coordinator or _env("VITZOO_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
    if num_processes is None and (v := _env("VITZOO_NUM_PROCESSES", "JAX_NUM_PROCESSES")):
        num_processes = int(v)
    if process_id is None and (v := _env("VITZOO_PROCESS_ID", "JAX_PROCESS_ID")):
        process_id = int(v)
    if coordinator is None:
        if (num_processes or 1) > 1:
            raise VitzooError("--num-processes > 1 needs --coordinator host:port")
        return Cluster()
    if ":" not in coordinator:
        raise VitzooError(f"--coordinator {coordinator!r} must be host:port",
                          "e.g. --coordinator 10.0.0.1:1234")
    if num_processes is None or process_id is None:
        raise VitzooError("--coordinator needs --num-processes and --process-id")
    if not 0 <= process_id < num_processes:
        raise VitzooError(f"--process-id {process_id} is outside 0..{num_processes - 1}")
    return Cluster(coordinator, num_processes, process_id)


_initialized: Cluster | None = None


def initialize(cluster: Cluster) -> None:
    """Call ``jax.distributed.initialize`` once for a multi-process cluster."""
    global _initialized
    if cluster.coordinator is None or _initialized == cluster:
        return
    import jax

    if _initialized is not None:
        raise VitzooError("jax.distributed is already initialised for another cluster",
                          "start a new process")
    native_stdout_to_stderr()  # before the first collective: Gloo prints then
    jax.distributed.initialize(coordinator_address=cluster.coordinator,
                               num_processes=cluster.num_processes,
                               process_id=cluster.process_id)
    _initialized = cluster


_stdout_moved = False


def native_stdout_to_stderr() -> None:
    """Send what native code writes to descriptor 1 to stderr; ``sys.stdout`` keeps the real
    stdout on a duplicate descriptor. Once per process; nothing when ``sys.stdout`` is not
    descriptor 1 (a test's capture, a caller's own stream): then it is not the stdout at stake.
    """
    global _stdout_moved
    if _stdout_moved:
        return
    try:
        on_fd1 = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        on_fd1 = False
    if not on_fd1:
        return
    old = sys.stdout
    old.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(real, "w")), encoding=old.encoding,
                                  errors=old.errors, line_buffering=old.line_buffering,
                                  write_through=getattr(old, "write_through", False))
    _stdout_moved = True
