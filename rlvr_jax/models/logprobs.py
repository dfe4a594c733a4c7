"""Per-token log-probabilities and entropies without materialising ``[B, T, V]`` float32 logits.

For hidden states ``h [B, T, H]`` and output projection ``W [H, V]``, with ``z = h W`` (float32
accumulation):

    logp[b, t]    = z[b, t, y[b, t]] - logsumexp_v z[b, t, v]
    entropy[b, t] = logsumexp_v z[b, t, v] - sum_v softmax(z[b, t])_v z[b, t, v]

The sequence axis is processed in chunks of ``chunk_size`` positions by a ``lax.scan`` whose body is
rematerialised (``jax.checkpoint``), so the forward and the backward pass each hold one chunk's
``[B, chunk, V]`` logits at a time. Fully differentiable in ``h`` and ``W``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _chunk_stats(h, w, y):
    z = jnp.einsum("bth,hv->btv", h, w, preferred_element_type=jnp.float32)
    lse = jax.nn.logsumexp(z, axis=-1)
    picked = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    p = jnp.exp(z - lse[..., None])
    entropy = lse - jnp.sum(p * z, axis=-1)
    return picked - lse, entropy


def token_logprobs(hidden, unembed, targets, chunk_size: int = 128):
    """Returns ``(logp [B, T], entropy [B, T])`` in float32 (see the module docstring).

    ``hidden [B, T, H]`` and ``unembed [H, V]`` may be bfloat16 (float32 accumulation);
    ``targets [B, T]`` int. ``chunk_size`` bounds the transient logits to ``B * chunk_size * V``.
    """
    if hidden.ndim != 3 or unembed.ndim != 2 or hidden.shape[-1] != unembed.shape[0]:
        raise ValueError(f"token_logprobs expects hidden [B,T,H] and unembed [H,V]; got {hidden.shape} "
                         f"and {unembed.shape}")
    if targets.shape != hidden.shape[:2]:
        raise ValueError(f"targets shape {targets.shape} != hidden's [B, T] {hidden.shape[:2]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, H = hidden.shape
    targets = targets.astype(jnp.int32)
    if hidden.dtype != unembed.dtype:
        dt = jnp.promote_types(hidden.dtype, unembed.dtype)
        hidden, unembed = hidden.astype(dt), unembed.astype(dt)
    c = min(chunk_size, T)
    n = -(-T // c)
    pad = n * c - T
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hs = hidden.reshape(B, n, c, H).swapaxes(0, 1)  # [n, B, c, H]
    ys = targets.reshape(B, n, c).swapaxes(0, 1)

    body = jax.checkpoint(_chunk_stats)

    def step(carry, xs):
        h, y = xs
        return carry, body(h, unembed, y)

    _, (lp, ent) = jax.lax.scan(step, None, (hs, ys))
    lp = lp.swapaxes(0, 1).reshape(B, n * c)[:, :T]
    ent = ent.swapaxes(0, 1).reshape(B, n * c)[:, :T]
    return lp, ent
