"""The oneDNN kernel against NumPy float32 products, and its gradients against jax.grad.

Oracle: NumPy's float32 matrix product of the bf16-rounded inputs (what an exact
f32-accumulating bf16 product computes), and ``jax.grad`` of XLA's float32 product for
the custom VJP. Tolerance: f32 accumulation in a different order is off by ~1e-6
relative; a bf16 result adds one rounding (2^-9 relative); a wrong transpose or operand
is off by O(1).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support.concurrency import worst_errors_at_once
from vitzoo.kernels import matmul

SHAPES = [(37, 129, 65), (1, 1, 1), (64, 768, 3072), (197, 64, 3)]


def _bf16(x: np.ndarray) -> np.ndarray:
    return np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))


def _close(got: jax.Array, want: np.ndarray, rel: float) -> None:
    got = np.asarray(got, np.float32)
    assert got.shape == want.shape
    scale = np.abs(want).max() + 1e-30
    assert np.abs(got - want).max() <= rel * scale, np.abs(got - want).max() / scale


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("in_dtype,out_dtype", [(jnp.bfloat16, jnp.bfloat16),
                                                (jnp.bfloat16, jnp.float32),
                                                (jnp.float32, jnp.float32)])
def test_kernel_matches_numpy_for_every_transpose(kernel, ta, tb, in_dtype, out_dtype):
    rng = np.random.default_rng(0)
    m, k, n = 37, 129, 65
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    a_in, b_in = jnp.asarray(a, in_dtype), jnp.asarray(b, in_dtype)
    want = (np.asarray(a_in, np.float32).T if ta else np.asarray(a_in, np.float32)) @ \
        (np.asarray(b_in, np.float32).T if tb else np.asarray(b_in, np.float32))
    got = jax.jit(lambda x, y: matmul._call(x, y, out_dtype, transpose_a=ta,
                                            transpose_b=tb))(a_in, b_in)
    assert got.dtype == out_dtype
    _close(got, want, 2**-8 if out_dtype == jnp.bfloat16 else 1e-5)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_onednn_matmul_shapes(kernel, m, k, n):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    got = matmul.onednn_matmul(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16),
                               jnp.float32)
    _close(got, _bf16(a) @ _bf16(b), 1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_gradients_match_xla_float32(kernel, dtype):
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.standard_normal((37, 129)), dtype)
    b = jnp.asarray(rng.standard_normal((129, 65)), dtype)
    w = jnp.asarray(rng.standard_normal((37, 65)), jnp.float32)  # a non-uniform cotangent

    def ours(a, b):
        return (matmul.onednn_matmul(a, b, jnp.float32) * w).sum()

    def reference(a, b):
        return ((a.astype(jnp.float32) @ b.astype(jnp.float32)) * w).sum()

    da, db = jax.jit(jax.grad(ours, argnums=(0, 1)))(a, b)
    ra, rb = jax.grad(reference, argnums=(0, 1))(a, b)
    assert da.dtype == dtype and db.dtype == dtype
    rel = 2**-7 if dtype == jnp.bfloat16 else 1e-5  # bf16: the cotangent and result rounded
    _close(da, np.asarray(ra, np.float32), rel)
    _close(db, np.asarray(rb, np.float32), rel)


def test_dot_general_routes_only_the_dense_form(onednn):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 5, 4, 8)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((4, 8, 6)), jnp.bfloat16)
    dense = (((2, 3), (0, 1)), ((), ()))
    jaxpr = jax.make_jaxpr(lambda x, w: matmul.dot_general(x, w, dense))(x, w)
    assert matmul.count_calls(jaxpr) == 1
    got = matmul.dot_general(x, w, dense, preferred_element_type=jnp.float32)
    want = np.einsum("abcd,cde->abe", np.asarray(x, np.float32), np.asarray(w, np.float32))
    _close(got, want, 1e-5)
    batched = (((3,), (1,)), ((0,), (0,)))  # a batch dim: XLA's, unchanged
    y = jnp.asarray(rng.standard_normal((2, 8, 3)), jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda x, y: matmul.dot_general(x, y, batched))(x, y)
    assert matmul.count_calls(jaxpr) == 0 and "dot_general" in str(jaxpr)


def test_dot_general_is_lax_when_off(kernel, monkeypatch):
    monkeypatch.setenv(matmul.ENV, "xla")
    x, w = jnp.ones((3, 4), jnp.bfloat16), jnp.ones((4, 5), jnp.bfloat16)
    dims = (((1,), (0,)), ((), ()))
    ours = jax.make_jaxpr(lambda x, w: matmul.dot_general(x, w, dims))(x, w)
    lax = jax.make_jaxpr(lambda x, w: jax.lax.dot_general(x, w, dims))(x, w)
    assert str(ours) == str(lax)


def test_threads_calling_one_cached_primitive_at_once_get_their_own_answers(onednn):
    """Two host devices run the same shapes at once, so two threads execute one cached
    primitive together; each must get its own product (a shared scratchpad mixed them)."""
    rng = np.random.default_rng(3)
    shape_a, shape_b = (1024, 768), (768, 1536)  # big enough for oneDNN to use a scratchpad
    problems = [(rng.uniform(-1, 1, shape_a).astype(np.float32),
                 rng.uniform(-1, 1, shape_b).astype(np.float32)) for _ in range(2)]
    wants = [_bf16(a) @ _bf16(b) for a, b in problems]
    product = jax.jit(lambda a, b: matmul.onednn_matmul(a, b, jnp.float32))
    inputs = [(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)) for a, b in problems]
    product(*inputs[0]).block_until_ready()  # compiled and the primitive cached first
    worst = worst_errors_at_once(product, inputs, wants, calls=30)
    assert max(worst) < 1e-5, worst
