"""``vitzoo doctor``: is this machine ready to fetch and fine-tune?

Why: the two silent failures that cost the most are a GPU machine where JAX only
sees the CPU (a CUDA/jaxlib mismatch trains 50x slower without a word), and
TensorFlow grabbing the GPU memory JAX needs (tf.data is only used on the CPU).
Both are checked here, next to library versions, the reachability of every
configured source and the cache size. Exit status 1 when a problem is found,
including when no source at all can serve checkpoints (one unreachable source is
only a warning: the bucket refuses anonymous reads anyway).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vitzoo import accelerators as hardware
from vitzoo import config
from vitzoo.versions import installed

PACKAGES = ("numpy", "jax", "jaxlib", "flax", "optax", "tensorflow", "tensorflow-cpu",
            "tensorflow-datasets", "gcsfs", "fsspec", "huggingface-hub", "safetensors", "typer")


@dataclass
class Line:
    section: str
    item: str
    value: str
    level: str = "ok"  # ok, info, warn, problem


def versions() -> list[Line]:
    """The key libraries' versions, and a warning for every dependency outside its tested range.

    Why: the most frequent breakage of JAX research code is a JAX/Flax release that moved an
    API; a version outside the range the suite ran on is the first thing to suspect.
    """
    from packaging.utils import canonicalize_name

    from vitzoo.versions import outside_range, tested_ranges

    ranges = tested_ranges()
    found = installed(PACKAGES)
    found.update(installed(name for name in ranges if canonicalize_name(name) not in
                           {canonicalize_name(p) for p in PACKAGES}))
    lines = []
    for name, version in found.items():
        spec = ranges.get(canonicalize_name(name), "")
        if version is None:
            if name in PACKAGES and name not in ("tensorflow", "tensorflow-cpu"):
                lines.append(Line("versions", name, "not installed", "info"))
        elif spec and outside_range(version, spec):
            lines.append(Line("versions", name, f"{version}: outside the tested range {spec}; "
                              f"install a tested one: pip install '{name}{spec}'", "warn"))
        elif name in PACKAGES:
            lines.append(Line("versions", name, f"{version} (tested {spec})" if spec else version))
    if not ranges:
        lines.append(Line("versions", "tested ranges", "unknown: vitzoo's package metadata is "
                          "missing (run from a checkout without pip install -e .)", "info"))
    return lines


def accelerators() -> list[Line]:
    """JAX backend and devices, and TensorFlow kept off the GPU."""
    lines: list[Line] = []
    found = hardware.detect()  # a GPU or TPU, from what the kernel shows (vitzoo.accelerators)
    gpu = found.evidence if found else None
    try:
        from vitzoo.backbone import Placement, start

        # the start finetune makes before JAX computes (host device count included), then the
        # same view of the devices: the count below is the one finetune will use
        settings = start(compile_cache=False, guard=False)
        import jax

        backend = jax.default_backend()
        here = Placement.here()
        kinds = sorted({d.device_kind for d in here.devices})
        lines.append(Line("jax", "backend", backend))
        lines.append(Line("jax", "devices", f"{len(here.devices)} x {backend} "
                          f"({', '.join(kinds)}; {here.process_count} process), as finetune "
                          "will use them"
                          + (f" (XLA_FLAGS {settings['xla_flags']})" if settings["xla_flags"]
                             else "")))
        problem = hardware.unused_accelerator(backend, found)
        if found and problem:  # the line finetune, evaluate, probe and predict stop with
            lines.append(Line("jax", f"{found.kind.upper()} NOT USED", problem, "problem"))
    except Exception as exc:  # report, never crash the doctor
        lines.append(Line("jax", "import", f"failed: {exc}", "problem"))
    try:
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")

        tf.config.set_visible_devices([], "GPU")
        visible = tf.config.get_visible_devices("GPU")
        if visible:
            lines.append(Line("tensorflow", "GPU", f"TensorFlow still sees {len(visible)} GPU(s)",
                              "problem"))
        else:
            lines.append(Line("tensorflow", "GPU", "hidden from TensorFlow (input pipeline on "
                              "CPU, GPU memory left to JAX)"))
    except ImportError:
        lines.append(Line("tensorflow", "import", "not installed (needed for TFDS datasets)",
                          "info"))
    except Exception as exc:
        lines.append(Line("tensorflow", "GPU", f"could not hide the GPU: {exc}", "problem"))
    if gpu is None:
        lines.append(Line("jax", "GPU", "no GPU or TPU detected (no /dev/nvidia*, nvidia-smi, TPU)", "info"))
    return lines


def cpu_matmul() -> list[Line]:
    """Which library computes ``--dtype bfloat16``'s dense products here, and why.

    oneDNN (``vitzoo.kernels``) on CPUs with bf16 units; XLA otherwise. On such a CPU a
    missing kernel is a warning: bf16 then runs slower than it could.
    """
    try:
        import jax.numpy as jnp

        from vitzoo.errors import VitzooError
        from vitzoo.kernels import matmul

        try:
            name, reason = matmul.matmul_backend(jnp.bfloat16)
        except VitzooError as exc:  # VITZOO_CPU_MATMUL=onednn, but the kernel is unavailable
            return [Line("jax", "bf16 matmul", exc.one_line(), "problem")]
        if name == "onednn":
            return [Line("jax", "bf16 matmul", f"oneDNN ({matmul.onednn_isa()}): {reason}")]
        level = "warn" if reason.startswith("oneDNN kernel unavailable") else "info"
        return [Line("jax", "bf16 matmul", f"XLA: {reason}", level)]
    except Exception as exc:  # report, never crash the doctor
        return [Line("jax", "bf16 matmul", f"could not be checked: {exc}", "problem")]


def _tcp(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return "host name lookup failed"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def _host_port(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _gcs_line(timeout: float) -> Line:
    from vitzoo import storage
    from vitzoo.errors import VitzooError

    endpoint = config.gcs_endpoint() or "https://storage.googleapis.com"
    where = _host_port(endpoint)
    reason = _tcp(*where, timeout) if where else "bad endpoint"
    if reason:
        return Line("sources", f"gcs {endpoint}", f"unreachable: {reason}", "warn")
    previous = os.environ.get("VITZOO_CONNECT_TIMEOUT")
    os.environ["VITZOO_CONNECT_TIMEOUT"] = str(timeout)
    try:
        storage.stat(config.DEFAULT_INDEX_CSV)
        return Line("sources", f"gcs {endpoint}", "reachable; anonymous read of "
                    f"{config.DEFAULT_INDEX_CSV} works")
    except VitzooError as exc:
        return Line("sources", f"gcs {endpoint}", f"reachable; {exc.message}", "warn")
    finally:
        if previous is None:
            os.environ.pop("VITZOO_CONNECT_TIMEOUT", None)
        else:
            os.environ["VITZOO_CONNECT_TIMEOUT"] = previous


def sources(timeout: float) -> list[Line]:
    from vitzoo import storage
    from vitzoo.download import hub

    lines = [_gcs_line(timeout)]
    mirrors = config.mirrors()
    if not mirrors:
        lines.append(Line("sources", "mirrors", "none configured (VITZOO_MIRRORS)", "info"))
    for prefix in mirrors:
        if not storage.is_remote(prefix):
            path = Path(prefix.removeprefix("file://")).expanduser()
            ok = path.is_dir()
            lines.append(Line("sources", f"mirror {prefix}", "folder exists" if ok else
                              "folder does not exist", "ok" if ok else "warn"))
            continue
        where = storage._endpoint_for(prefix) if storage.scheme_of(prefix) != "gs" else \
            _host_port(config.gcs_endpoint() or "https://storage.googleapis.com")
        reason = _tcp(*where, timeout) if where else None
        lines.append(Line("sources", f"mirror {prefix}", "reachable" if reason is None else
                          f"unreachable: {reason}", "ok" if reason is None else "warn"))
    if hub.offline():
        lines.append(Line("sources", f"hf {hub.endpoint()}", "offline mode (HF_HUB_OFFLINE); "
                          f"only the local cache {hub.hub_cache_dir()} is used", "info"))
    else:
        where = _host_port(hub.endpoint())
        reason = _tcp(*where, timeout) if where else "bad endpoint"
        lines.append(Line("sources", f"hf {hub.endpoint()}", "reachable" if reason is None else
                          f"unreachable: {reason}", "ok" if reason is None else "warn"))
    return lines


def cache_lines() -> list[Line]:
    from vitzoo.download import cache

    found = cache.entries()
    total = sum(e.size for e in found)
    partial = sum(1 for e in found if e.state == "partial")
    text = f"{len(found) - partial} checkpoints, {total / 1e9:.2f} GB in {config.cache_dir()}"
    if partial:
        text += f" ({partial} unfinished downloads)"
    return [Line("cache", "size", text)]


_SERVING = ("gcs ", "mirror ", "hf ")


def serving(lines: list[Line]) -> list[Line]:
    """Whether any source can serve checkpoints now; a problem line when none can.

    Usable: the bucket with a working read, a mirror that exists or answers, the Hugging
    Face Hub when reachable, or checkpoints already in the cache.
    """
    checked = [line for line in lines if line.section == "sources" and line.item.startswith(_SERVING)]
    usable = [line.item for line in checked if line.level == "ok"]
    cached = [line for line in lines if line.section == "cache" and not line.value.startswith("0 ")]
    if usable or cached:
        what = ", ".join(usable + (["the cache"] if cached else []))
        return [Line("sources", "checkpoints", f"can be served by {what}")]
    offline = checked and all("host name lookup failed" in line.value for line in checked
                              if "unreachable" in line.value) and any(
        "host name lookup failed" in line.value for line in checked)
    why = ("this machine looks offline: every host name lookup failed" if offline else
           "no source can serve checkpoints")
    return [Line("sources", "checkpoints", f"{why}; set VITZOO_MIRRORS to a copy of the bucket, "
                 "allow access to huggingface.co (unset HF_HUB_OFFLINE), or use `vitzoo download "
                 "NAME --gcs-auth` with Google credentials", "problem")]


def run_doctor(*, skip_ml: bool = False, timeout: float = 3.0) -> int:
    """Print the report (stdout); return the exit status (1 if a problem was found)."""
    from rich.console import Console
    from rich.table import Table

    lines = versions()
    if not skip_ml:
        lines += accelerators()
        lines += cpu_matmul()
    lines += sources(timeout)
    lines += cache_lines()
    lines += serving(lines)
    style = {"ok": "green", "info": "dim", "warn": "yellow", "problem": "bold red"}
    table = Table(title="vitzoo doctor", title_justify="left")
    for column in ("section", "check", "result"):
        table.add_column(column)
    for line in lines:
        table.add_row(line.section, line.item, line.value, style=style[line.level])
    console = Console(soft_wrap=True)
    console.print(table)
    problems = [line for line in lines if line.level == "problem"]
    for line in problems:
        console.print(f"PROBLEM: {line.item}: {line.value}", style="bold red", markup=False)
    return 1 if problems else 0
