"""Compile the oneDNN matrix-product kernel into ``VITZOO_HOME/kernels/<key>/``.

WHY a build step of our own: the kernel links jaxlib's FFI headers and the oneDNN wheel
(``pip install 'vitzoo[cpu-bf16]'``), both of which live in the user's environment, so it
cannot ship pre-built. The key hashes the source, the jaxlib version and the oneDNN
library path: a new jaxlib or a moved environment gets a fresh build, an unchanged one
reuses the file. The shared object is written to a temporary name and renamed, under a
file lock, so two processes building at once neither race nor see half a file.

Every reason the kernel cannot be had (no oneDNN, no compiler, a failed compile) is a
:class:`~vitzoo.errors.VitzooError` with one line saying what and what to do.

``python -m vitzoo.kernels.build`` (``make kernels``) builds it and prints its path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vitzoo.errors import VitzooError

SOURCE = Path(__file__).with_name("onednn_matmul.cc")
LIB_NAME = "libvitzoo_onednn.so"
ONEDNN_LIB_DIST = "onednn-cpu-gomp"
ONEDNN_DEVEL_DIST = "onednn-devel-cpu-gomp"
_INSTALL_HINT = ("install it with pip install 'vitzoo[cpu-bf16]' "
                 "(or set VITZOO_CPU_MATMUL=xla to use XLA's matrix products)")


@dataclass(frozen=True)
class OneDnn:
    """Where the oneDNN wheels put their files."""

    include_dir: Path  # holds oneapi/dnnl/dnnl.h
    library: Path  # libdnnl.so.3


def _dist_file(dist: str, suffix: str) -> Path | None:
    """The installed file of distribution ``dist`` whose path ends with ``suffix``."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if ("/" + str(entry).replace("\\", "/")).endswith("/" + suffix):
            path = Path(os.path.normpath(entry.locate()))
            if path.exists():
                return path
    return None


def find_onednn() -> OneDnn:
    """The oneDNN headers and library from the ``onednn-*-cpu-gomp`` wheels, or a one-line error."""
    library = _dist_file(ONEDNN_LIB_DIST, "libdnnl.so.3")
    header = _dist_file(ONEDNN_DEVEL_DIST, "oneapi/dnnl/dnnl.h")
    if library is None:
        raise VitzooError(f"oneDNN is not installed ({ONEDNN_LIB_DIST} not found)", _INSTALL_HINT)
    if header is None:
        raise VitzooError(f"oneDNN's headers are not installed ({ONEDNN_DEVEL_DIST} not found)",
                          _INSTALL_HINT)
    return OneDnn(include_dir=header.parents[2], library=library)


def find_compiler() -> str:
    """``$CXX`` or ``g++``/``c++`` on PATH, or a one-line error."""
    wanted = os.environ.get("CXX", "").strip()
    for name in ([wanted] if wanted else ["g++", "c++"]):
        path = shutil.which(name)
        if path:
            return path
    raise VitzooError(f"no C++ compiler found ({wanted or 'g++'} is not on PATH)",
                      "install g++ (or set CXX), or set VITZOO_CPU_MATMUL=xla to use XLA's "
                      "matrix products")


def ffi_include_dir() -> Path:
    import jax

    return Path(jax.ffi.include_dir())


def build_key(source: bytes, jaxlib_version: str, library: Path) -> str:
    """What a build depends on, hashed: the source, the jaxlib version, the oneDNN library path."""
    digest = hashlib.sha256()
    for part in (source, jaxlib_version.encode(), str(library).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def kernels_dir() -> Path:
    from vitzoo.config import vitzoo_home

    return vitzoo_home() / "kernels"


def compile_command(compiler: str, onednn: OneDnn, ffi_include: Path, out: Path) -> list[str]:
    """g++ against jaxlib's FFI headers and oneDNN, with an rpath to oneDNN's folder."""
    libdir = onednn.library.parent
    return [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w",
            f"-I{ffi_include}", f"-I{onednn.include_dir}", str(SOURCE),
            f"-L{libdir}", f"-l:{onednn.library.name}", f"-Wl,-rpath,{libdir}",
            "-o", str(out)]


def built_path(root: Path | None = None) -> Path:
    """Where the kernel for this environment lives (built or not); needs oneDNN installed."""
    from importlib.metadata import version

    onednn = find_onednn()  # jaxlib comes with jax; its version is read, not imported
    key = build_key(SOURCE.read_bytes(), version("jaxlib"), onednn.library)
    return (root or kernels_dir()) / key / LIB_NAME


def build(root: Path | None = None, *, announce: bool = True) -> Path:
    """The kernel's shared object, compiled first if this environment has none yet.

    ``announce``: print one line on stderr while compiling (it takes ~10-20 s).
    """
    from filelock import FileLock

    from vitzoo.atomic import atomic_path, output_dir

    target = built_path(root)
    if target.exists():
        return target
    compiler = find_compiler()
    onednn = find_onednn()
    output_dir(target.parent, "kernel build folder")
    with FileLock(str(target.parent.with_name(f"{target.parent.name}.lock"))):
        if target.exists():  # another process built it while we waited
            return target
        if announce:
            print(f"vitzoo: compiling the oneDNN matrix-product kernel into {target.parent} "
                  "(once per environment)...", file=sys.stderr, flush=True)
        with atomic_path(target) as tmp:
            cmd = compile_command(compiler, onednn, ffi_include_dir(), tmp)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                lines = [ln for ln in done.stderr.splitlines() if "error" in ln] or \
                    done.stderr.strip().splitlines() or ["no output"]
                raise VitzooError(f"compiling the oneDNN kernel failed: {lines[0].strip()}",
                                  "set VITZOO_CPU_MATMUL=xla to use XLA's matrix products")
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m vitzoo.kernels.build``: build (if needed) and print the kernel's path."""
    try:
        print(build())
    except VitzooError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
