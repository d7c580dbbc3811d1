"""bf16 matrix products through oneDNN on CPUs with bf16 units, with gradients.

WHY: XLA:CPU computes bfloat16 dots without the CPU's bf16 instructions (AVX512-BF16,
AMX), slower than float32, while oneDNN (what PyTorch/timm use) dispatches on them. This
module calls oneDNN's matmul through a ``jax.ffi`` custom call (the C++ handler in
``onednn_matmul.cc``, built by :mod:`vitzoo.kernels.build`), and the model's dense
products go through :func:`dot_general` / :func:`contract` when :func:`matmul_backend`
says so. When it does not, those helpers are never reached and the traced program is
exactly XLA's.

The switch is ``VITZOO_CPU_MATMUL``:

- ``auto`` (default): oneDNN only when the compute dtype is bfloat16, JAX runs on CPU,
  the CPU has ``avx512_bf16`` or ``amx_bf16``, and the kernel loads (built on first use);
  unless an autotune trial measured the other backend faster for that dtype on this
  machine and said so with :func:`use_measured` (float32 products too: oneDNN's float32
  GEMM beat XLA's by 3-20% on an AMD EPYC, benchmarks/RESULTS.md);
- ``onednn``: always (bf16 and f32 compute), a one-line error if the kernel is unavailable;
- ``xla``: never.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitzoo.errors import VitzooError

ENV = "VITZOO_CPU_MATMUL"
MODES = ("auto", "onednn", "xla")
TARGET = "vitzoo_onednn_matmul"
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_SUPPORTED = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


def mode() -> str:
    """``VITZOO_CPU_MATMUL`` (default ``auto``), or a one-line error for anything else."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise VitzooError(f"{ENV}={value!r} is not a matrix-product backend",
                          f"use one of {', '.join(MODES)}")
    return value


def choose_backend(mode: str, dtype: Any, platform: str, cpu_flags: frozenset[str],
                   unavailable: Callable[[], str | None]) -> tuple[str, str]:
    """``(backend, reason)`` for one compute dtype; pure apart from calling ``unavailable``.

    ``unavailable()`` returns None when the kernel loads, else why not; it is only called
    when the answer depends on it (building the kernel is not free).
    """
    if mode == "xla":
        return "xla", f"{ENV}=xla"
    if mode == "onednn":
        if platform != "cpu":
            raise VitzooError(f"{ENV}=onednn needs JAX on CPU, but it runs on {platform}",
                              f"unset {ENV} or set it to auto")
        problem = unavailable()
        if problem:
            raise VitzooError(f"{ENV}=onednn, but the oneDNN kernel is unavailable: {problem}",
                              f"set {ENV}=xla or auto")
        return "onednn", f"{ENV}=onednn"
    if jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
        return "xla", f"compute dtype is {jnp.dtype(dtype).name}, not bfloat16"
    if platform != "cpu":
        return "xla", f"JAX runs on {platform}, not CPU"
    if not cpu_flags & BF16_FLAGS:
        return "xla", "this CPU has no bf16 units (neither avx512_bf16 nor amx_bf16)"
    problem = unavailable()
    if problem:
        return "xla", f"oneDNN kernel unavailable: {problem}"
    units = "+".join(sorted(cpu_flags & BF16_FLAGS))
    return "onednn", f"bfloat16 on a CPU with {units}"


@functools.cache
def _cpu() -> Any:
    """This machine's :class:`vitzoo.runtime.CpuInfo`, read once (every traced product asks)."""
    from vitzoo.runtime import cpu_info

    return cpu_info()


def _cpu_flags() -> frozenset[str]:
    return _cpu().flags


_lib: list[ctypes.CDLL] = []  # the loaded kernel, once per process


def load(path: Path | None = None) -> ctypes.CDLL:
    """Load and register the kernel at ``path`` (default: build it if needed), once per process."""
    if _lib:
        return _lib[0]
    if path is None:
        from vitzoo.kernels.build import build

        path = build()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise VitzooError(f"the oneDNN kernel {path} does not load: {exc}",
                          f"delete {path.parent} to rebuild it, or set {ENV}=xla") from None
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.OnednnMatmul), platform="cpu")
    _lib.append(lib)
    return lib


_problem: list[str] = []  # why the kernel did not load, remembered for the process


def kernel_problem() -> str | None:
    """None when the kernel is loaded and registered, else the one-line reason it is not.

    A failure is remembered (:func:`forget_problem` clears it), so that a machine without
    oneDNN does not look for it again at every dense layer of every trace.
    """
    if _problem:
        return _problem[0]
    try:
        load()
    except VitzooError as exc:
        _problem.append(exc.one_line().rstrip("."))
        return _problem[0]
    return None


def forget_problem() -> None:
    """Look for the kernel again at the next :func:`kernel_problem` (tests, after an install)."""
    _problem.clear()


_measured: dict[str, tuple[str, str]] = {}  # compute dtype -> (backend, why): a trial's winner


def use_measured(dtype: Any, backend: str | None, reason: str = "") -> None:
    """Under ``auto``, compute ``dtype``'s products with ``backend`` (None: the rule again).

    For autotune trials, which time both backends on this machine's shapes and keep the
    faster. It applies to models traced afterwards (a jitted function keeps the backend it
    was traced with) and never overrides ``VITZOO_CPU_MATMUL=xla``/``onednn``; a oneDNN
    choice whose kernel does not load falls back to XLA with the reason.
    """
    name = jnp.dtype(dtype).name
    if backend is None:
        _measured.pop(name, None)
        return
    if backend not in ("onednn", "xla"):
        raise ValueError(f"unknown matrix-product backend {backend!r}")
    _measured[name] = (backend, reason or f"measured fastest on this machine for {name}")


@contextlib.contextmanager
def measured(dtype: Any, backend: str | None) -> Iterator[None]:
    """:func:`use_measured` for the duration of a block (a trial traces each candidate)."""
    name = jnp.dtype(dtype).name
    before = _measured.get(name)
    use_measured(dtype, backend, f"autotune candidate {backend}")
    try:
        yield
    finally:
        if before is None:
            _measured.pop(name, None)
        else:
            _measured[name] = before


def matmul_backend(dtype: Any) -> tuple[str, str]:
    """Which backend computes the model's dense products for compute ``dtype``, and why."""
    chosen = _measured.get(jnp.dtype(dtype).name)
    if chosen is not None and mode() == "auto" and jax.default_backend() == "cpu":
        problem = kernel_problem() if chosen[0] == "onednn" else None
        return ("xla", f"oneDNN kernel unavailable: {problem}") if problem else chosen
    return choose_backend(mode(), dtype, jax.default_backend(), _cpu_flags(), kernel_problem)


def available() -> bool:
    """Whether oneDNN could compute products here: JAX on CPU, mode ``auto``, kernel loads.

    What an autotune trial asks before it offers oneDNN as a candidate.
    """
    return mode() == "auto" and jax.default_backend() == "cpu" and kernel_problem() is None


def record(dtype: Any) -> dict[str, Any]:
    """run.json's ``runtime.matmul``: the backend for compute ``dtype``, why, and oneDNN's ISA."""
    name, reason = matmul_backend(dtype)
    entry: dict[str, Any] = {"backend": name, "reason": reason, "mode": mode()}
    if name == "onednn":
        entry["isa"] = onednn_isa()
    return entry


def active(dtype: Any) -> bool:
    """Whether the model's dense products for compute ``dtype`` go through oneDNN."""
    return matmul_backend(dtype)[0] == "onednn"


def onednn_isa() -> str | None:
    """The instruction set oneDNN dispatches to here (e.g. ``avx512_core_amx``), if loaded."""
    try:
        lib = load()
    except VitzooError:
        return None
    names = {0x1: "sse41", 0x3: "avx", 0x7: "avx2", 0xF: "avx2_vnni", 0x1F: "avx2_vnni_2",
             0x27: "avx512_core", 0x67: "avx512_core_vnni", 0xE7: "avx512_core_bf16",
             0x1EF: "avx512_core_fp16", 0xFEF: "avx512_core_amx",
             0x1FEF: "avx512_core_amx_fp16"}  # dnnl_cpu_isa_t in oneDNN 3.x's dnnl_types.h
    value = lib.vitzoo_onednn_isa()
    if value in names:
        return names[value]
    return f"isa {value:#x}"


def _threads() -> int:
    """Cores per local device: several host devices call the kernel at once."""
    return max(1, _cpu().physical_cores // max(1, jax.local_device_count()))


def _call(a: jax.Array, b: jax.Array, out_dtype: Any, *, transpose_a: bool = False,
          transpose_b: bool = False) -> jax.Array:
    """One custom call: ``op(a) @ op(b)`` for 2-D ``a``/``b``, op = transpose when asked."""
    load()
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), out_dtype),
                            vmap_method="sequential")
    return call(a, b, transpose_a=np.bool_(transpose_a), transpose_b=np.bool_(transpose_b),
                threads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(a: jax.Array, b: jax.Array, out_dtype: Any) -> jax.Array:
    return _call(a, b, out_dtype)


def _matmul_fwd(a: jax.Array, b: jax.Array, out_dtype: Any):
    return _call(a, b, out_dtype), (a, b)


def _matmul_bwd(out_dtype: Any, saved: tuple[jax.Array, jax.Array], g: jax.Array):
    a, b = saved
    g = g.astype(a.dtype)
    da = _call(g, b, a.dtype, transpose_b=True)  # dA = G . B^T
    db = _call(a, g, b.dtype, transpose_a=True)  # dB = A^T . G
    return da, db


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def onednn_matmul(a: jax.Array, b: jax.Array, out_dtype: Any = None) -> jax.Array:
    """``a @ b`` for 2-D ``a [M, K]``, ``b [K, N]`` of one dtype (bf16/f32), via oneDNN.

    Accumulates in float32; the result has ``out_dtype`` (default: the operands' dtype).
    Differentiable: both backward products go through the kernel too.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"onednn_matmul needs [M, K] @ [K, N], got {a.shape} @ {b.shape}")
    if a.dtype != b.dtype or jnp.dtype(a.dtype) not in _SUPPORTED:
        raise ValueError(f"onednn_matmul needs two bfloat16 or two float32 operands, got "
                         f"{a.dtype} and {b.dtype}")
    return _matmul(a, b, jnp.dtype(out_dtype or a.dtype))


def contract(lhs: jax.Array, rhs: jax.Array, n: int, out_dtype: Any = None) -> jax.Array:
    """Contract ``lhs``'s last ``n`` dims with ``rhs``'s first ``n`` through oneDNN.

    ``[*batch, *k] x [*k, *out] -> [*batch, *out]``, as one 2-D product (reshapes only).
    """
    batch, k, out = lhs.shape[:lhs.ndim - n], lhs.shape[lhs.ndim - n:], rhs.shape[n:]
    if tuple(rhs.shape[:n]) != tuple(k):
        raise ValueError(f"cannot contract {lhs.shape} with {rhs.shape} over {n} dims")
    y = onednn_matmul(lhs.reshape(math.prod(batch), math.prod(k)),
                      rhs.reshape(math.prod(k), math.prod(out)), out_dtype)
    return y.reshape(*batch, *out)


def _routable(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any) -> int | None:
    """n when the product contracts lhs's trailing n dims with rhs's leading n, no batch."""
    (lc, rc), (lb, rb) = dimension_numbers
    n = len(lc)
    if lb or rb or n == 0 or len(rc) != n:
        return None
    if tuple(lc) != tuple(range(lhs.ndim - n, lhs.ndim)) or tuple(rc) != tuple(range(n)):
        return None
    if lhs.dtype != rhs.dtype or jnp.dtype(lhs.dtype) not in _SUPPORTED:
        return None
    return n


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                precision: Any = None, preferred_element_type: Any = None,
                **kwargs: Any) -> jax.Array:
    """``jax.lax.dot_general`` with the dense-layer case sent to oneDNN when it is active.

    Routed: no batch dims, lhs's trailing dims contracted with rhs's leading dims, both
    operands bf16 (or f32) and :func:`active` for that dtype. Everything else, and
    everything when the backend is off, is ``jax.lax.dot_general`` unchanged.
    """
    n = _routable(lhs, rhs, dimension_numbers)
    if n is not None and not kwargs and active(lhs.dtype):
        return contract(lhs, rhs, n, preferred_element_type)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)


def dense_dot_general(dtype: Any) -> Callable[..., jax.Array] | None:
    """What a model passes as ``nn.Dense(dot_general=...)``: ours when active, else None.

    None keeps Flax's own default, so a model with the backend off traces as before.
    """
    return dot_general if active(dtype) else None


def count_calls(jaxpr: Any) -> int:
    """How many oneDNN custom calls a (closed) jaxpr makes, sub-jaxprs included."""
    return str(jaxpr).count(TARGET)


__all__: Sequence[str] = ("ENV", "MODES", "attention_einsum", "available", "batched_einsum",
                          "choose_backend", "contract", "count_calls", "dense_dot_general",
                          "dot_general", "matmul_backend", "measured", "mode", "onednn_matmul",
                          "use_measured")


# Batched products (attention's q.k^T and p.v) ------------------------------------------

BATCHED_TARGET = "vitzoo_onednn_batched_matmul"
_batched_registered: list[bool] = []  # the batched handler registered, once per process


def _register_batched() -> None:
    """Register the batched handler of the loaded kernel (once; load() registers the 2-D one)."""
    lib = load()
    if not _batched_registered:
        jax.ffi.register_ffi_target(BATCHED_TARGET, jax.ffi.pycapsule(lib.OnednnBatchedMatmul),
                                    platform="cpu")
        _batched_registered.append(True)


def _parse_einsum(spec: str) -> tuple[str, str, str, str, str, str]:
    """``(x, y, out, batch, m, k)`` letters for a batched product ``x,y->out``, or ValueError.

    The form oneDNN's batched matmul computes: the letters in all three are batch dims, one
    letter in ``x`` and ``out`` only (M), one in ``y`` and ``out`` only (N), one in ``x`` and
    ``y`` only (K, contracted); no letter repeats within an operand.
    """
    inputs, _, out = spec.replace(" ", "").partition("->")
    x, _, y = inputs.partition(",")
    if not (x and y and out) or any(len(set(t)) != len(t) for t in (x, y, out)):
        raise ValueError(f"not a batched product: {spec!r}")
    batch = "".join(c for c in out if c in x and c in y)
    m = [c for c in x if c in out and c not in y]
    n = [c for c in y if c in out and c not in x]
    k = [c for c in x if c in y and c not in out]
    if len(m) != 1 or len(n) != 1 or len(k) != 1 or \
            len(batch) + 2 != len(out) or len(batch) + 2 != len(x) or len(batch) + 2 != len(y):
        raise ValueError(f"not a batched product (one M, one N, one K letter): {spec!r}")
    return x, y, out, batch, m[0] + n[0], k[0]


def _view(letters: str, shape: Sequence[int], order: str) -> tuple[list[int], list[int]]:
    """Dims and element strides of a row-major array with axes ``letters``, seen in ``order``."""
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    pos = [letters.index(c) for c in order]
    return [int(shape[i]) for i in pos], [int(strides[i]) for i in pos]


def _batched_call(spec: str, x: jax.Array, y: jax.Array, out_dtype: Any) -> jax.Array:
    """One custom call computing ``jnp.einsum(spec, x, y)`` (no copies: strided views)."""
    _register_batched()
    xs, ys, outs, batch, mn, k = _parse_einsum(spec)
    m, n = mn
    if outs[-1] == m:  # swap the operands so that the result's rows are contiguous:
        # oneDNN's fast (brgemm) matmul needs that, a column-major result falls back to its
        # reference loop, ~1000x slower (the backward product dk of q.k^T did)
        return _batched_call(f"{ys},{xs}->{outs}", y, x, out_dtype)
    sizes = dict(zip(xs, x.shape, strict=True)) | dict(zip(ys, y.shape, strict=True))
    out_shape = tuple(sizes[c] for c in outs)
    a_dims, a_strides = _view(xs, x.shape, batch + m + k)
    b_dims, b_strides = _view(ys, y.shape, batch + k + n)
    c_dims, c_strides = _view(outs, out_shape, batch + m + n)
    call = jax.ffi.ffi_call(BATCHED_TARGET, jax.ShapeDtypeStruct(out_shape, out_dtype),
                            vmap_method="sequential")
    ints = functools.partial(np.asarray, dtype=np.int64)
    return call(x, y, a_dims=ints(a_dims), a_strides=ints(a_strides), b_dims=ints(b_dims),
                b_strides=ints(b_strides), c_dims=ints(c_dims), c_strides=ints(c_strides),
                threads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _einsum(spec: str, x: jax.Array, y: jax.Array, out_dtype: Any) -> jax.Array:
    return _batched_call(spec, x, y, out_dtype)


def _einsum_fwd(spec: str, x: jax.Array, y: jax.Array, out_dtype: Any):
    return _batched_call(spec, x, y, out_dtype), (x, y)


def _einsum_bwd(spec: str, out_dtype: Any, saved: tuple[jax.Array, jax.Array], g: jax.Array):
    x, y = saved
    xs, ys, outs, *_ = _parse_einsum(spec)
    g = g.astype(x.dtype)
    dx = _batched_call(f"{outs},{ys}->{xs}", g, y, x.dtype)  # contracts N
    dy = _batched_call(f"{xs},{outs}->{ys}", x, g, y.dtype)  # contracts M
    return dx, dy


_einsum.defvjp(_einsum_fwd, _einsum_bwd)


def batched_einsum(spec: str, x: jax.Array, y: jax.Array, out_dtype: Any = None) -> jax.Array:
    """``jnp.einsum(spec, x, y)`` for a batched product, through oneDNN; differentiable.

    ``spec`` has batch letters (in all three), one M, one N and one contracted letter, in
    any order per operand (``bqhe,bkhe->bhqk``): the layouts become strides, so nothing is
    transposed or copied. One dtype for both operands (bf16/f32), f32 accumulation; the
    result has ``out_dtype`` (default: the operands'). Both backward products use it too.
    """
    xs, ys, *_ = _parse_einsum(spec)
    if x.ndim != len(xs) or y.ndim != len(ys):
        raise ValueError(f"{spec!r} does not fit operands of shapes {x.shape} and {y.shape}")
    if any(x.shape[xs.index(c)] != y.shape[ys.index(c)] for c in xs if c in ys):
        raise ValueError(f"{spec!r}: operand shapes {x.shape} and {y.shape} disagree")
    if x.dtype != y.dtype or jnp.dtype(x.dtype) not in _SUPPORTED:
        raise ValueError(f"batched_einsum needs two bfloat16 or two float32 operands, got "
                         f"{x.dtype} and {y.dtype}")
    if x.size == 0 or y.size == 0:  # oneDNN refuses empty dims; XLA's answer is zeros or empty
        return jnp.einsum(spec, x, y, preferred_element_type=jnp.dtype(out_dtype or x.dtype))
    return _einsum(spec, x, y, jnp.dtype(out_dtype or x.dtype))


def attention_einsum(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """What the model's attention calls: :func:`batched_einsum` when the backend is active
    for the operands' dtype, else ``jnp.einsum`` itself (so the XLA path is unchanged)."""
    if x.dtype == y.dtype and jnp.dtype(x.dtype) in _SUPPORTED and active(x.dtype):
        return batched_einsum(spec, x, y)
    return jnp.einsum(spec, x, y)
