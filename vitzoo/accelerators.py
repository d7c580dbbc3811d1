"""Is there an accelerator on this machine that JAX is not using? Pure Python, no jax import.

Why: a GPU machine with the CPU-only jaxlib (or a CUDA wheel that failed to load) runs a
fine-tune 50x slower without a word, and a TPU VM without ``libtpu`` does the same. The
hardware is detected here from what the kernel exposes, cheaply and without starting JAX;
:func:`vitzoo.runtime.require_accelerator` compares it with the platform JAX actually chose
and stops the command with the fix, unless the user said ``--allow-cpu``.

Detection follows JAX's own probes (``jax/_src/hardware_utils.py``): an NVIDIA GPU shows
as ``/proc/driver/nvidia/version`` or ``/dev/nvidia<N>`` (``nvidia-smi -L`` is asked only
when neither exists: it is a subprocess); a TPU shows as a PCI device of Google's vendor
id with a TPU device id, as ``/dev/accel<N>`` (TPU v4 and later), or as ``/dev/vfio/<N>``
on a VM whose environment names a TPU (``TPU_ACCELERATOR_TYPE``, ``TPU_NAME``,
``TPU_WORKER_ID``, as Cloud TPU VMs and GKE set them).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pkgutil
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The ``pip install`` that gives JAX each kind of accelerator (vitzoo's extras).
INSTALL_FIX = {"gpu": 'pip install "vitzoo[cuda12]"', "tpu": 'pip install "vitzoo[tpu]"'}
#: Set to 1 to run on the CPU although an accelerator is present (the CLI's ``--allow-cpu``).
ALLOW_CPU_ENV = "VITZOO_ALLOW_CPU"
ALLOW_CPU_FIX = f"or pass --allow-cpu (or set {ALLOW_CPU_ENV}=1) to run on the CPU anyway"

NVIDIA_FILES = ("/proc/driver/nvidia/version",)
NVIDIA_DEVICE_GLOB = "/dev/nvidia[0-9]*"
PCI_DEVICES_GLOB = "/sys/bus/pci/devices/*"
GOOGLE_PCI_VENDOR = "0x1ae0"
#: PCI device ids of TPU chips (v3 .. TPU7x), as in jax/_src/hardware_utils.py.
TPU_PCI_DEVICES = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f",
                             "0x0076"})
TPU_ACCEL_GLOB = "/dev/accel[0-9]*"
VFIO_GLOB = "/dev/vfio/[0-9]*"
TPU_ENV = ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "TPU_WORKER_ID")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Accelerator:
    """What this machine has: ``kind`` (gpu or tpu) and how we know (for the message)."""

    kind: str
    evidence: str


def nvidia_gpu() -> str | None:
    """How we know an NVIDIA GPU is attached (None if none seems to be)."""
    for name in NVIDIA_FILES:
        if Path(name).exists():
            return f"NVIDIA driver loaded ({name})"
    devices = sorted(glob.glob(NVIDIA_DEVICE_GLOB))
    if devices:
        return f"NVIDIA device {devices[0]}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = [line for line in out.stdout.splitlines() if line.startswith("GPU")]
        if out.returncode == 0 and lines:
            return lines[0].strip()
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def tpu() -> str | None:
    """How we know a TPU is attached (None if none seems to be)."""
    chips = [d for d in sorted(glob.glob(PCI_DEVICES_GLOB))
             if _read(f"{d}/vendor") == GOOGLE_PCI_VENDOR and _read(f"{d}/device") in TPU_PCI_DEVICES]
    if chips:
        return f"{len(chips)} TPU chip(s) on PCI ({Path(chips[0]).name})"
    accel = sorted(glob.glob(TPU_ACCEL_GLOB))
    if accel:
        return f"TPU device {accel[0]}"
    named = [k for k in TPU_ENV if os.environ.get(k)]
    vfio = sorted(glob.glob(VFIO_GLOB))
    if named and vfio:
        return f"TPU VM ({named[0]}={os.environ[named[0]]}, {vfio[0]})"
    return None


def detect() -> Accelerator | None:
    """The accelerator attached to this machine, if any (TPU first: TPU VMs have no GPU)."""
    found = tpu()
    if found:
        return Accelerator("tpu", found)
    found = nvidia_gpu()
    return Accelerator("gpu", found) if found else None


_cli_allow_cpu: bool | None = None  # --allow-cpu of the running command


def set_allow_cpu(flag: bool | None) -> None:
    """Remember the command line's ``--allow-cpu`` (None: back to the environment)."""
    global _cli_allow_cpu
    _cli_allow_cpu = flag


def cpu_allowed() -> bool:
    """``--allow-cpu`` when given, else ``VITZOO_ALLOW_CPU`` (off)."""
    if _cli_allow_cpu:
        return True
    return os.environ.get(ALLOW_CPU_ENV, "").strip().lower() in _TRUE


def jax_plugin_installed(kind: str) -> bool:
    """Could JAX reach a ``kind`` accelerator from this install? False only when certain.

    JAX finds a GPU through a PJRT plugin (a module of the ``jax_plugins`` namespace
    package, or an entry point of that group: ``jax-cuda12-pjrt`` and ROCm's) and a TPU
    through ``libtpu`` (or ``TPU_LIBRARY_PATH``). Looking costs no JAX start, so a command
    can stop before it reads data or downloads a checkpoint; a plugin that is present but
    fails to load is left to :func:`vitzoo.runtime.require_accelerator`.
    """
    if kind == "tpu":
        return bool(os.environ.get("TPU_LIBRARY_PATH")) or importlib.util.find_spec("libtpu") is not None
    namespace = importlib.util.find_spec("jax_plugins")
    if namespace is not None and any(pkgutil.iter_modules(namespace.submodule_search_locations)):
        return True
    from importlib.metadata import entry_points

    return bool(entry_points(group="jax_plugins"))


def stop_early_if_unreachable() -> None:
    """Stop a model command at its start when an accelerator is here but no JAX for it is
    installed, before its cheap checks lead to data reads and downloads (``--allow-cpu``
    runs anyway). The authoritative check is :func:`vitzoo.runtime.require_accelerator`,
    where JAX starts."""
    if cpu_allowed():
        return
    found = detect()
    if found is not None and not jax_plugin_installed(found.kind):
        from vitzoo.errors import VitzooError

        raise VitzooError(unused_accelerator("cpu", found) or "", ALLOW_CPU_FIX)


def unused_accelerator(platform: str, found: Accelerator | None) -> str | None:
    """The one-line problem when ``found`` is present but JAX runs on ``platform`` (cpu)."""
    if found is None or platform != "cpu":
        return None
    what = "an NVIDIA GPU" if found.kind == "gpu" else "a TPU"
    return (f"this machine has {what} ({found.evidence}) but JAX only sees the CPU; "
            f"install JAX for it: {INSTALL_FIX[found.kind]}")
