"""Native kernels vitzoo builds for itself (optional; the XLA path is always there).

Today one: a bf16/f32 matrix product through oneDNN, called from JAX via ``jax.ffi``
(:mod:`vitzoo.kernels.matmul`), built by ``python -m vitzoo.kernels.build`` or on first use.
"""
