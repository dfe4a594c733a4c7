"""Mixed-precision matmuls: operands rounded to the compute dtype, products accumulated in float32.

On GPU and TPU a bfloat16 (or float16) matmul is a native half-precision GEMM with float32 accumulation. XLA:CPU
(jax 0.10) does not execute every such dot: ``jax.nn.dot_product_attention``'s ``BF16_BF16_F32`` algorithm and
the ``bf16 x bf16 -> f32`` dots that its simplifier makes out of a bf16 matmul followed by a float32 cast (the
gradient of a float32 master kernel) stop a training update with ``UNIMPLEMENTED: Unsupported element type for
DotThunk::Execute: BF16 x BF16 = F32``. On the CPU backend the half-precision operands are therefore rounded to
the compute dtype and then widened to float32 before the matmul: bf16 x bf16 products are exact in float32 and
are summed in float32, which is what the half-precision GEMM computes; the result is rounded to the same output
dtype as on the other backends. The same numbers (up to summation order), in a form every XLA:CPU dot supports;
GPU and TPU programs are unchanged.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


_TRACED_FOR: list[str] = []


def backend() -> str:
    """The backend the traced program is for: ``jax.default_backend()``, or the innermost :func:`traced_for`."""
    return _TRACED_FOR[-1] if _TRACED_FOR else jax.default_backend()


@contextlib.contextmanager
def traced_for(platform: str):
    """Traces programs inside the block as for ``platform`` (e.g. the matmul census of the GPU program on a
    CPU machine: bench.census); only for tracing, not for running."""
    _TRACED_FOR.append(platform)
    try:
        yield
    finally:
        _TRACED_FOR.pop()


def widen_half_on_cpu(dtype) -> bool:
    """True when matmuls in ``dtype`` must run on float32 operands on this backend (half dtypes on CPU)."""
    return jnp.dtype(dtype) in _HALF and backend() == "cpu"


def mixed_einsum(subscripts: str, a, b, compute_dtype, out_dtype=None):
    """``einsum(subscripts, a, b)`` with both operands rounded to ``compute_dtype`` and float32 accumulation;
    the result in ``out_dtype`` (default ``compute_dtype``)."""
    compute_dtype = jnp.dtype(compute_dtype)
    out_dtype = compute_dtype if out_dtype is None else jnp.dtype(out_dtype)
    a, b = a.astype(compute_dtype), b.astype(compute_dtype)
    if widen_half_on_cpu(compute_dtype):
        return jnp.einsum(subscripts, a.astype(jnp.float32), b.astype(jnp.float32)).astype(out_dtype)
    if out_dtype == compute_dtype:
        return jnp.einsum(subscripts, a, b)
    return jnp.einsum(subscripts, a, b, preferred_element_type=out_dtype)


def mixed_dot(x, w, compute_dtype):
    """``x @ w`` (``jnp.dot``) with both operands rounded to ``compute_dtype``; the result in ``compute_dtype``."""
    compute_dtype = jnp.dtype(compute_dtype)
    x, w = x.astype(compute_dtype), w.astype(compute_dtype)
    if widen_half_on_cpu(compute_dtype):
        return jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32)).astype(compute_dtype)
    return jnp.dot(x, w)


def attention_operands(q, k, v):
    """``(q, k, v)`` for ``jax.nn.dot_product_attention``: in ``q``'s dtype, widened to float32 on CPU for half
    dtypes (see the module docstring; cast the result back with ``.astype(q.dtype)``)."""
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if widen_half_on_cpu(q.dtype):
        return q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32)
    return q, k, v
