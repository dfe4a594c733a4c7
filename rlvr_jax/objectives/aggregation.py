"""Loss aggregation over tokens and sequences, split into (numerator, denominator) for exact accumulation.

With per-token losses l_{i,t}, response mask m_{i,t}, n_i = sum_t m_{i,t} tokens in sequence i, and
S = #{i : n_i > 0} the non-empty sequences (fully masked rows, e.g. batch padding, never count):

  token-mean               loss = sum_{i,t} m l / sum_{i,t} m                    (DAPO; token-level)
  seq-mean-token-mean      loss = (1/S) sum_i (1/n_i) sum_t m l                  (GRPO Eq. 10, GSPO)
  seq-mean-token-sum       loss = (1/S) sum_i sum_t m l
  seq-mean-token-sum-norm  loss = (1/(S L)) sum_i sum_t m l, L a constant        (Dr.GRPO; L = max length)

``aggregate_sum`` returns the numerator and ``loss_denominator`` the denominator. Both are sums over
sequences, so over micro-batches that split the batch along sequences,
  loss(full batch) = sum_k aggregate_sum(micro_k) / sum_k loss_denominator(micro_k),
exactly, provided L is the same constant for every micro-batch (set ``max_len``; the default L = T, the
padded length, is constant only when all micro-batches are padded to the same T).
"""
from __future__ import annotations

import jax.numpy as jnp

from rlvr_jax.objectives.types import AGG_MODES


def _check_mode(mode: str) -> None:
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {AGG_MODES}")


def _norm_len(mask, max_len):
    if max_len is None:
        return mask.shape[-1]
    if max_len < 1:
        raise ValueError(f"seq-mean-token-sum-norm needs max_len >= 1, got {max_len}")
    return max_len


def loss_denominator(mask, mode: str, max_len: int | None = None, dtype=jnp.float32):
    """The denominator of ``mode`` (see module docstring) from the [B, T] response mask alone."""
    _check_mode(mode)
    m = jnp.asarray(mask) != 0
    if mode == "token-mean":
        return jnp.sum(m, dtype=jnp.int32).astype(dtype)
    n_seq = jnp.sum(jnp.any(m, axis=-1), dtype=jnp.int32).astype(dtype)
    if mode == "seq-mean-token-sum-norm":
        return n_seq * jnp.asarray(_norm_len(m, max_len), dtype)
    return n_seq


def aggregate_sum(per_token, mask, mode: str):
    """The numerator of ``mode`` for per-token losses [B, T] (masked entries contribute exactly zero)."""
    _check_mode(mode)
    m = jnp.asarray(mask) != 0
    masked = jnp.where(m, per_token, jnp.zeros((), per_token.dtype))
    if mode == "seq-mean-token-mean":
        n_i = jnp.sum(m, axis=-1).astype(per_token.dtype)
        return jnp.sum(jnp.sum(masked, axis=-1) / jnp.maximum(n_i, 1))
    return jnp.sum(masked)


def token_weights(mask, mode: str, max_len: int | None = None, dtype=jnp.float32):
    """w_{i,t} with loss = sum_{i,t} w_{i,t} l_{i,t} for one full batch (0 where masked, 0 if all masked)."""
    _check_mode(mode)
    m = (jnp.asarray(mask) != 0).astype(dtype)
    denom = jnp.maximum(loss_denominator(mask, mode, max_len, dtype), 1)
    if mode == "seq-mean-token-mean":
        n_i = jnp.sum(m, axis=-1, keepdims=True)
        return m / jnp.maximum(n_i, 1) / denom
    return m / denom
