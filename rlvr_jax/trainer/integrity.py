"""Integrity of saved arrays: order-independent checksums, computed when a checkpoint is saved, verified on restore.

Checksum of one array (bit-exact, any dtype, any sharding): view its bytes as 32-bit words ``w_i`` (16- and
8-bit types widened, 64-bit types split in two) and take, modulo ``2**32``,

    c1 = sum_i w_i,        c2 = sum_i w_i * (2654435761 * i + 1).

Integer addition modulo ``2**32`` is associative, so the value does not depend on the reduction order, the
sharding or the device: sharded arrays are reduced by XLA where they live (all processes take part), numpy arrays
on the host, both giving the same numbers. Any change of a single word changes ``c1`` (the difference of two
distinct words is never a multiple of ``2**32``); ``c2`` also catches moved or swapped words.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_MULT = 2654435761  # Knuth's multiplicative hash constant
_MASK = (1 << 32) - 1


def _words_np(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if x.dtype == bool:
        x = x.view(np.uint8)
    size = x.dtype.itemsize
    view = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[size]
    return x.reshape(-1).view(view).astype(np.uint64)


def _checksum_np(x: np.ndarray) -> tuple[int, int]:
    w = _words_np(x)
    idx = np.arange(w.size, dtype=np.uint64)
    mult = (idx * np.uint64(_MULT) + np.uint64(1)) & np.uint64(_MASK)
    return int(w.sum(dtype=np.uint64) & np.uint64(_MASK)), int((w * mult).sum(dtype=np.uint64) & np.uint64(_MASK))


def _words_jax(x: jax.Array) -> jax.Array:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.reshape(-1).astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    narrow = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, narrow).reshape(-1).astype(jnp.uint32)


@jax.jit
def _checksums_jax(arrays: list) -> list:
    out = []
    for x in arrays:
        w = _words_jax(x)
        mult = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(_MULT) + jnp.uint32(1)
        out.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * mult, dtype=jnp.uint32)]))
    return out


def tree_checksums(leaves: Mapping[str, Any]) -> dict[str, list[int]]:
    """``{name: [c1, c2]}`` for a flat mapping of arrays (see the module docstring)."""
    names = list(leaves)
    dev = [k for k in names if isinstance(leaves[k], jax.Array)]
    out: dict[str, list[int]] = {}
    groups: dict[tuple, list[str]] = {}  # one jit call per device set (committed arrays cannot be mixed)
    for k in dev:
        groups.setdefault(tuple(sorted(d.id for d in leaves[k].sharding.device_set)), []).append(k)
    for keys in groups.values():
        sums = jax.device_get(_checksums_jax([leaves[k] for k in keys]))
        out.update({k: [int(v[0]), int(v[1])] for k, v in zip(keys, sums)})
    for k in names:
        if k not in out:
            out[k] = list(_checksum_np(np.asarray(leaves[k])))
    return {k: out[k] for k in names}


def checksum_mismatches(arrays: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """Names of ``arrays`` whose checksums differ from ``saved`` (or that ``saved`` does not list)."""
    now = tree_checksums(arrays)
    return [k for k in arrays if k not in saved or list(saved[k]) != now[k]]
