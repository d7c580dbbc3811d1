"""The batched oneDNN product (attention's q.k^T and p.v) against NumPy and jax.grad.

Oracle: ``np.einsum`` in float32 of the bf16-rounded inputs (what an exact f32-accumulating
bf16 product computes), and ``jax.grad`` of XLA's float32 einsum for the custom VJP.
Tolerances as tests/kernels/test_onednn_matmul.py: a wrong stride, transpose or batch
index is off by O(1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support.adapt_helpers import run_python
from tests.support.concurrency import worst_errors_at_once
from vitzoo.kernels import matmul

SIZES = {"b": 3, "h": 2, "q": 7, "k": 13, "e": 5, "m": 11, "n": 9, "c": 4}
SPECS = [
    "bqhe,bkhe->bhqk",  # attention scores: both operands strided, K transposed
    "bhqk,bkhe->bqhe",  # attention values: output written back in [B, T, H, Dh]
    "bhqk,bqhe->bkhe",  # the backward products of the two above
    "bqhe,bhqk->bkhe",
    "bmc,bnc->bmn",  # transposed B
    "bcm,bcn->bmn",  # transposed A
    "bcm,bnc->bnm",  # both, and a transposed result
    "mc,cn->mn",  # no batch dim
    "hbmc,bhcn->bhmn",  # batch dims in different orders per operand
]


def _operands(spec: str, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_letters, y_letters = spec.split("->")[0].split(",")
    shape = [tuple(SIZES[c] for c in letters) for letters in (x_letters, y_letters)]
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shape]


def _close(got, want: np.ndarray, rel: float) -> None:
    got = np.asarray(got, np.float32)
    assert got.shape == want.shape
    scale = np.abs(want).max() + 1e-30
    assert np.abs(got - want).max() <= rel * scale, np.abs(got - want).max() / scale


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("in_dtype,out_dtype", [(jnp.bfloat16, jnp.bfloat16),
                                                (jnp.bfloat16, jnp.float32),
                                                (jnp.float32, jnp.float32)])
def test_batched_einsum_matches_numpy(kernel, spec, in_dtype, out_dtype):
    x, y = _operands(spec, in_dtype)
    want = np.einsum(spec, np.asarray(x, np.float32), np.asarray(y, np.float32))
    got = jax.jit(lambda x, y: matmul.batched_einsum(spec, x, y, out_dtype))(x, y)
    assert got.dtype == out_dtype
    _close(got, want, 2**-8 if out_dtype == jnp.bfloat16 else 1e-5)


def test_attention_shapes(kernel):
    """Ti/16's real attention shapes (197 tokens, 3 heads of 64), large enough to block."""
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.standard_normal((4, 197, 3, 64)), jnp.bfloat16) for _ in range(2))
    want = np.einsum("bqhe,bkhe->bhqk", np.asarray(q, np.float32), np.asarray(k, np.float32))
    _close(matmul.batched_einsum("bqhe,bkhe->bhqk", q, k, jnp.float32), want, 1e-5)


@pytest.mark.parametrize("spec", ["bqhe,bkhe->bhqk", "bhqk,bkhe->bqhe", "bcm,bnc->bnm"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_gradients_match_xla_float32(kernel, spec, dtype):
    x, y = _operands(spec, dtype, seed=2)
    out = np.einsum(spec, np.asarray(x, np.float32), np.asarray(y, np.float32))
    w = jnp.asarray(np.random.default_rng(3).standard_normal(out.shape), jnp.float32)

    def ours(x, y):
        return (matmul.batched_einsum(spec, x, y, jnp.float32) * w).sum()

    def reference(x, y):
        return (jnp.einsum(spec, x.astype(jnp.float32), y.astype(jnp.float32)) * w).sum()

    dx, dy = jax.jit(jax.grad(ours, argnums=(0, 1)))(x, y)
    rx, ry = jax.grad(reference, argnums=(0, 1))(x, y)
    assert dx.dtype == dtype and dy.dtype == dtype
    rel = 2**-7 if dtype == jnp.bfloat16 else 1e-5  # bf16: the cotangent and result rounded
    _close(dx, np.asarray(rx, np.float32), rel)
    _close(dy, np.asarray(ry, np.float32), rel)


@pytest.mark.parametrize("spec", ["bq,bk->bqk", "bqhe,bkhe->bhqkz", "bqe,bke->bqk,x",
                                  "bqhe,bkhf->bhqk", "bqq,bqk->bqk", "bme,bne->bn"])
def test_other_einsums_are_refused(spec):
    with pytest.raises(ValueError, match="batched product"):
        matmul._parse_einsum(spec)


def test_empty_operands(kernel):
    x, y = jnp.ones((2, 0, 3), jnp.bfloat16), jnp.ones((2, 0, 4), jnp.bfloat16)
    got = matmul.batched_einsum("bkm,bkn->bmn", x, y, jnp.float32)
    np.testing.assert_array_equal(np.asarray(got), np.zeros((2, 3, 4), np.float32))


def test_operands_must_fit_the_spec(kernel):
    x = jnp.ones((2, 3, 4), jnp.bfloat16)
    with pytest.raises(ValueError, match="disagree"):
        matmul.batched_einsum("bmc,bnc->bmn", x, jnp.ones((2, 5, 3), jnp.bfloat16))
    with pytest.raises(ValueError, match="two bfloat16 or two float32"):
        matmul.batched_einsum("bmc,bnc->bmn", x, jnp.ones((2, 5, 4), jnp.float32))


def test_the_kernel_refuses_a_view_past_its_buffer(kernel):
    """A view that would read outside its buffer is an error from the kernel, not a crash."""
    matmul._register_batched()
    call = jax.ffi.ffi_call(matmul.BATCHED_TARGET, jax.ShapeDtypeStruct((2, 2), jnp.float32))
    ints = lambda *v: np.asarray(v, np.int64)  # noqa: E731
    x = jnp.ones((2, 2), jnp.float32)
    with pytest.raises(Exception, match="reaches past its buffer"):
        call(x, x, a_dims=ints(2, 2), a_strides=ints(3, 1), b_dims=ints(2, 2),
             b_strides=ints(2, 1), c_dims=ints(2, 2), c_strides=ints(2, 1),
             threads=np.int64(1)).block_until_ready()


def test_attention_einsum_is_jnp_einsum_when_off(kernel, monkeypatch):
    monkeypatch.setenv(matmul.ENV, "xla")
    x, y = _operands("bqhe,bkhe->bhqk", jnp.bfloat16)
    ours = jax.make_jaxpr(lambda x, y: matmul.attention_einsum("bqhe,bkhe->bhqk", x, y))(x, y)
    plain = jax.make_jaxpr(lambda x, y: jnp.einsum("bqhe,bkhe->bhqk", x, y))(x, y)
    assert str(ours) == str(plain)


def test_threads_calling_one_cached_primitive_at_once_get_their_own_answers(onednn):
    """Two host devices run attention at once: each thread brings its own scratchpad."""
    rng = np.random.default_rng(4)
    spec = "bhqk,bkhe->bqhe"
    problems = [(rng.uniform(-1, 1, (8, 3, 197, 197)).astype(np.float32),
                 rng.uniform(-1, 1, (8, 197, 3, 64)).astype(np.float32)) for _ in range(2)]
    inputs = [(jnp.asarray(p, jnp.bfloat16), jnp.asarray(v, jnp.bfloat16)) for p, v in problems]
    wants = [np.einsum(spec, np.asarray(p, np.float32), np.asarray(v, np.float32))
             for p, v in inputs]
    product = jax.jit(lambda p, v: matmul.batched_einsum(spec, p, v, jnp.float32))
    product(*inputs[0]).block_until_ready()  # compiled and the primitive cached first
    worst = worst_errors_at_once(product, inputs, wants, calls=20)
    assert max(worst) < 1e-5, worst


def test_attention_and_its_gradient_use_onednn_fast_kernels(kernel):
    """No product of attention or its gradient falls back to oneDNN's reference loop.

    (A result laid out column-major did: the gradient of q.k^T took 2 s instead of 2 ms.)
    ``ONEDNN_VERBOSE`` names the implementation of every execution.
    """
    code = f"""
    import jax, jax.numpy as jnp, numpy as np
    from vitzoo.kernels import matmul
    matmul.load({str(kernel)!r})
    q, k, v = (jnp.asarray(np.ones((2, 197, 3, 64)), jnp.bfloat16) for _ in range(3))
    def f(q, k, v):
        p = jax.nn.softmax(matmul.batched_einsum("bqhe,bkhe->bhqk", q, k, jnp.float32))
        return matmul.batched_einsum("bhqk,bkhe->bqhe", p.astype(q.dtype), v).sum()
    jax.block_until_ready(jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, v))
    """
    done = run_python(code, env={"ONEDNN_VERBOSE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    impls = [line.split(",matmul,")[1].split(",")[0] for line in done.stdout.splitlines()
             if line.startswith("onednn_verbose") and ",exec," in line and ",matmul," in line]
    # q.k^T and the 4 backward products (the gradient never reads p.v: XLA drops it)
    assert len(impls) == 5, done.stdout[-2000:]
    assert not [impl for impl in impls if impl.startswith("ref")], impls
