"""Single-token (decode) attention over a head-major KV cache that reads only a per-row slot range.

For one new query token per row ``b`` and query head ``n`` (kv head ``k = n // G``, ``G = N / K``)::

    out[b, n] = sum_{s in [start_b, end_b)} softmax_s( q[b, n] . k_cache[b, k, s] / sqrt(D) ) v_cache[b, k, s]

where the softmax is taken over ``s in [start_b, end_b)`` only.

Layout and range contract (``decode_attention_impl='pallas'`` of :class:`rlvr_jax.models.ModelConfig`):

* ``q [B, N, D]``; ``k_cache, v_cache [B, K, S, D]`` (head-major, so each ``(b, k)`` sequence is one
  contiguous ``[S, D]`` slab the kernel can walk without any transpose or copy of the cache);
  ``start, end [B]`` int32 with ``0 <= start_b < end_b <= S``. Output ``[B, N, D]`` in ``q``'s dtype.
* The work is the Pallas GPU (Triton) decode kernel shipped with JAX
  (``jax.experimental.pallas.ops.gpu.decode_attention.decode_attn_unbatched``), vmapped over ``B`` and
  ``K`` with the ``G`` query heads of one kv head as the kernel's head block. The kernel cuts ``S`` into
  ``k_splits`` parts of ``block_k``-slot blocks, skips parts that lie wholly outside
  ``[start_b, end_b)``, and walks each other part from its first block up to the block holding
  ``end_b - 1``; the parts' partial softmaxes are merged at the end (flash-decoding). A step thus reads
  about ``end_b`` slots (rounded up to a block; minus the parts wholly before ``start_b``), not ``S``.
* Slots outside the range are masked, but those in the blocks walked above are still read, so they must
  hold finite values (a NaN there would poison the result). The model's cache is zero-initialised and
  every written slot is finite, which satisfies this.
* ``S`` must be a multiple of 16 (see :func:`choose_blocks`). On CPU the kernel runs in Pallas
  interpret mode (tests); TPU is rejected (this is the GPU Triton kernel).
* Under a multi-device mesh (``jax.set_mesh``), a ``pallas_call`` is not partitioned by GSPMD, so the
  kernel runs inside ``jax.shard_map`` with rows split over the ``batch`` logical axis and kv heads over
  ``kv_heads`` (the active rules of :mod:`rlvr_jax.sharding`, :func:`~rlvr_jax.sharding.mesh_axes_for`),
  each where the mesh axes divide the size.

:func:`decode_attention_reference` is the plain ``jnp`` version (masking, whole cache) used by tests.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from ..sharding import mesh_axes_for

BLOCK_H = 16  # query heads per kernel program (the kernel's default; G < 16 is masked)
_BLOCK_KS = (128, 64, 32, 16)


def _kernel():
    """The unbatched Pallas decode kernel, or a clear error naming the installed jax version."""
    try:
        from jax.experimental.pallas.ops.gpu.decode_attention import decode_attn_unbatched
    except ImportError as e:  # pragma: no cover - depends on the installed jax
        raise ImportError(
            "decode_attention_impl='pallas' needs jax.experimental.pallas.ops.gpu.decode_attention."
            f"decode_attn_unbatched, which jax {jax.__version__} does not provide ({e}); "
            "use decode_attention_impl='xla'") from e
    return decode_attn_unbatched


def choose_blocks(S: int) -> tuple[int, int]:
    """``(k_splits, block_k)`` for a cache of ``S`` slots.

    The largest ``block_k`` of 128/64/32/16 that divides ``S`` wins (long blocks keep the kernel's
    matmuls and loads wide), then ``k_splits`` is the largest divisor of ``S / block_k`` up to 16 (parts
    of whole blocks, enough programs to fill the device). E.g. 1280 -> (10, 128), 2048 -> (16, 128),
    80 -> (5, 16). Raises ``ValueError`` naming ``S`` when ``S`` is not a positive multiple of 16.
    """
    for bk in _BLOCK_KS:
        if S > 0 and S % bk == 0:
            blocks = S // bk
            return max(d for d in range(1, min(16, blocks) + 1) if blocks % d == 0), bk
    raise ValueError(f"pallas decode attention needs a cache length S that is a positive multiple of 16, "
                     f"got S={S} (pick prompt / new-token buckets whose sum is a multiple of 16)")


def _interpret_mode() -> bool:
    backend = jax.default_backend()
    if backend == "cpu":
        return True
    if backend == "gpu":
        return False
    raise ValueError(f"the pallas decode kernel is the GPU Triton kernel (backend is {backend!r}); "
                     "use decode_attention_impl='xla' on TPU")


def _check_shapes(q, k_cache, v_cache, start, end):
    if q.ndim != 3 or k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"decode_attention expects q [B,N,D] and k/v caches [B,K,S,D] of one shape; got "
                         f"q {q.shape}, k {k_cache.shape}, v {v_cache.shape}")
    B, N, D = q.shape
    Bk, K, _, Dk = k_cache.shape
    if Bk != B or Dk != D or N % K:
        raise ValueError(f"decode_attention: q {q.shape} does not fit caches {k_cache.shape} "
                         "(need the same B and D, and N a multiple of K)")
    if start.shape != (B,) or end.shape != (B,):
        raise ValueError(f"decode_attention: start/end must be [B]={B}, got {start.shape}, {end.shape}")


def _local_decode_attention(q, k_cache, v_cache, start, end, *, k_splits, block_k, interpret):
    """Unsharded body: ``q [B, K, G, D]``, caches ``[B, K, S, D]``, ``start/end [B]`` -> ``[B, K, G, D]``."""
    B, K, _, D = q.shape
    inner = functools.partial(
        _kernel(), sm_scale=1.0 / math.sqrt(D), block_h=BLOCK_H, block_k=block_k, k_splits=k_splits,
        num_warps=None, num_stages=2, grid=None, interpret=interpret, debug=False, return_residuals=False,
        normalize_output=True)
    start = jnp.broadcast_to(start.astype(jnp.int32)[:, None], (B, K))
    end = jnp.broadcast_to(end.astype(jnp.int32)[:, None], (B, K))
    return jax.vmap(jax.vmap(inner))(q, k_cache, v_cache, start, end)


def decode_attention(q, k_cache, v_cache, start, end):
    """``softmax over s in [start_b, end_b) of q.k/sqrt(D)`` times ``v`` (module docstring), ``[B, N, D]``.

    ``q [B, N, D]``, ``k_cache/v_cache [B, K, S, D]``, ``start/end [B]`` int32. Runs the Pallas decode
    kernel (interpret mode on CPU); under a multi-device mesh it is wrapped in ``shard_map``.
    """
    _check_shapes(q, k_cache, v_cache, start, end)
    B, N, D = q.shape
    K, S = k_cache.shape[1], k_cache.shape[2]
    k_splits, block_k = choose_blocks(S)
    interpret = _interpret_mode()
    _kernel()  # fail early with the version message
    qg = q.astype(k_cache.dtype).reshape(B, K, N // K, D)
    body = functools.partial(_local_decode_attention, k_splits=k_splits, block_k=block_k, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or mesh.size == 1:
        out = body(qg, k_cache, v_cache, start, end)
    else:
        rows = mesh_axes_for(mesh, "batch", B)
        heads = mesh_axes_for(mesh, "kv_heads", K)
        if heads is not None and rows is not None and set(heads) & set(rows):
            heads = None
        spec4 = PartitionSpec(rows, heads, None, None)
        out = jax.shard_map(body, mesh=mesh, in_specs=(spec4, spec4, spec4, PartitionSpec(rows),
                                                       PartitionSpec(rows)),
                            out_specs=spec4, check_vma=False)(qg, k_cache, v_cache, start, end)
    return out.reshape(B, N, D).astype(q.dtype)


def kv_range_from_mask(kv_mask):
    """``(start, end)`` ``[B]`` int32 of a ``[B, S]`` 0/1 mask: the first 1 and one past the last 1.

    Exact only when each row's ones are contiguous (the JaxSampler layout: left-padded prompt, then the
    generated slots); zeros between them would be attended. A row without ones gives ``[0, S)``.
    """
    m = kv_mask > 0
    S = m.shape[-1]
    start = jnp.argmax(m, axis=-1).astype(jnp.int32)
    end = (S - jnp.argmax(m[:, ::-1], axis=-1)).astype(jnp.int32)
    return start, end


def decode_attention_reference(q, k_cache, v_cache, start, end):
    """Plain ``jnp`` decode attention with the same signature: masks the slots outside ``[start, end)``
    (with ``where``, so their values never matter) and reads the whole cache. float32 softmax."""
    _check_shapes(q, k_cache, v_cache, start, end)
    B, N, D = q.shape
    K, S = k_cache.shape[1], k_cache.shape[2]
    qg = q.astype(jnp.float32).reshape(B, K, N // K, D)
    logits = jnp.einsum("bkgd,bksd->bkgs", qg, k_cache.astype(jnp.float32)) / math.sqrt(D)
    slots = jnp.arange(S)[None, :]
    valid = (slots >= start[:, None]) & (slots < end[:, None])  # [B, S]
    logits = jnp.where(valid[:, None, None, :], logits, -jnp.inf)
    p = jax.nn.softmax(logits, axis=-1)
    v = jnp.where(valid[:, None, :, None], v_cache.astype(jnp.float32), 0.0)
    out = jnp.einsum("bkgs,bksd->bkgd", p, v)
    return out.reshape(B, N, D).astype(q.dtype)
