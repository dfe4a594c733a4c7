"""Per-token log-probabilities and entropies without materialising ``[B, T, V]`` float32 logits.

For hidden states ``h [B, T, H]`` and output projection ``W [H, V]``, with ``z = h W`` (float32
accumulation):

    logp[b, t]    = z[b, t, y[b, t]] - logsumexp_v z[b, t, v]
    entropy[b, t] = logsumexp_v z[b, t, v] - sum_v softmax(z[b, t])_v z[b, t, v]

Gradients (``p = softmax(z)``, incoming cotangents ``g_lp``, ``g_ent``):

    dlogp/dz    = onehot(y) - p
    dentropy/dz = -p * (z - E_p[z])
    dz          = g_lp (onehot(y) - p) - g_ent p (z - E_p[z]);   dh = dz W^T,   dW = sum_chunks h^T dz

Optionally (``top_k = K > 0``, for SimKO) also, with ``top_K(z)`` the K largest logits' tokens (the selection is
not differentiated):

    topk_logp_sum[b, t] = sum_{v in top_K(z[b, t])} (z[b, t, v] - logsumexp_v z[b, t, v]),
    is_top1[b, t]       = 1[y[b, t] = argmax_v z[b, t, v]]   (a constant, zero gradient),
    d topk_logp_sum/dz  = 1_{top_K} - K p,   added to dz with its cotangent.

The sequence axis is processed in chunks of ``chunk_size`` positions by ``lax.scan``, forward and backward
(a hand-written VJP), so only one chunk's ``[B, chunk, V]`` logits exist at a time; the backward pass
recomputes each chunk's logits from the saved per-token ``logsumexp`` and ``E_p[z]``.

Precision. All three matmuls (``h W``, ``dz W^T``, ``h^T dz``) take their operands in ``compute_dtype``
(default: the hidden states' dtype, e.g. bfloat16) and accumulate in float32; ``dz`` is formed in float32 and
cast to ``compute_dtype`` just before its matmuls, as mixed-precision training does for every layer.
``dW`` is accumulated over chunks in float32 and returned in ``W``'s own dtype (float32 master weights keep a
float32 gradient). Autodiff of the forward would instead have produced float32-cotangent x bfloat16-operand
matmuls (float32 GEMMs on GPUs) and summed ``dW`` in the dtype ``W`` was cast to.
On XLA:CPU the half-precision operands are widened to float32 before each matmul (same products and
float32 sums; ``rlvr_jax.models.precision``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .precision import mixed_einsum


def _logits(h, w):
    return mixed_einsum("bth,hv->btv", h, w, h.dtype, jnp.float32)


def _chunk_forward(h, w, y, top_k: int = 0):
    """``(logp, entropy, lse, E_p[z])`` of one chunk, all ``[B, c]`` float32; with ``top_k`` also
    ``(topk_logp_sum, is_top1)``."""
    z = _logits(h, w)
    lse = jax.nn.logsumexp(z, axis=-1)
    picked = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    ez = jnp.sum(jnp.exp(z - lse[..., None]) * z, axis=-1)
    out = (picked - lse, lse - ez, lse, ez)
    if top_k:
        vals, idx = jax.lax.top_k(z, top_k)
        out += (jnp.sum(vals, axis=-1) - top_k * lse, (idx[..., 0] == y).astype(jnp.float32))
    return out


def _topk_indicator(z, top_k: int):
    """``[B, c, V]`` float32: 1 at the ``top_k`` largest logits of each position (scattered, no one-hot stack)."""
    _, idx = jax.lax.top_k(z, top_k)
    b = jnp.arange(z.shape[0])[:, None, None]
    t = jnp.arange(z.shape[1])[None, :, None]
    return jnp.zeros(z.shape, jnp.float32).at[b, t, idx].add(1.0)


def _chunks(x, n, c):
    """``[B, n*c, ...] -> [n, B, c, ...]``."""
    return x.reshape(x.shape[0], n, c, *x.shape[2:]).swapaxes(0, 1)


def _unchunk(x):
    """``[n, B, c, ...] -> [B, n*c, ...]``."""
    x = x.swapaxes(0, 1)
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _chunked(hidden, unembed, targets, c, compute_dtype, top_k=0):
    out, _ = _chunked_fwd(hidden, unembed, targets, c, compute_dtype, top_k)
    return out


def _chunked_fwd(hidden, unembed, targets, c, compute_dtype, top_k=0):
    B, T, _ = hidden.shape
    n = T // c
    w = unembed.astype(compute_dtype)
    hs = _chunks(hidden.astype(compute_dtype), n, c)

    def step(_, xs):
        h, y = xs
        return None, _chunk_forward(h, w, y, top_k)

    _, outs = jax.lax.scan(step, None, (hs, _chunks(targets, n, c)))
    lp, ent, lse, ez = outs[:4]
    res = (hidden, unembed, targets, _unchunk(lse), _unchunk(ez))
    return (_unchunk(lp), _unchunk(ent)) + tuple(_unchunk(x) for x in outs[4:]), res


def _chunked_bwd(c, compute_dtype, top_k, res, cts):
    hidden, unembed, targets, lse, ez = res
    g_lp, g_ent = cts[:2]
    B, T, H = hidden.shape
    n = T // c
    w = unembed.astype(compute_dtype)
    V = w.shape[1]

    def step(dw, xs):
        h, y, l, e, glp, gent = xs[:6]
        z = _logits(h, w)
        p = jnp.exp(z - l[..., None])
        onehot = jax.nn.one_hot(y, V, dtype=jnp.float32)
        dz = glp[..., None] * (onehot - p) - gent[..., None] * p * (z - e[..., None])
        if top_k:  # d topk_logp_sum / dz = 1_topK - K p (is_top1 is a constant: its cotangent is dropped)
            dz = dz + xs[6][..., None] * (_topk_indicator(z, top_k) - top_k * p)
        dz = dz.astype(compute_dtype)
        dh = mixed_einsum("btv,hv->bth", dz, w, compute_dtype, jnp.float32).astype(hidden.dtype)
        dw = dw + mixed_einsum("bth,btv->hv", h, dz, compute_dtype, jnp.float32)
        return dw, dh

    per_token = (hidden.astype(compute_dtype), targets, lse, ez, g_lp.astype(jnp.float32),
                 g_ent.astype(jnp.float32))
    if top_k:
        per_token += (cts[2].astype(jnp.float32),)
    xs = tuple(_chunks(x, n, c) for x in per_token)
    dw, dh = jax.lax.scan(step, jnp.zeros((H, V), jnp.float32), xs)
    return _unchunk(dh), dw.astype(unembed.dtype), None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def token_logprobs(hidden, unembed, targets, chunk_size: int = 128, compute_dtype=None, top_k: int = 0):
    """Returns ``(logp [B, T], entropy [B, T])`` in float32 (see the module docstring); with ``top_k = K > 0``
    ``(logp, entropy, topk_logp_sum, is_top1)``.

    ``hidden [B, T, H]`` and ``unembed [H, V]`` may have any float dtypes (e.g. bfloat16 activations and a
    float32 master matrix); the matmuls run in ``compute_dtype`` (default ``hidden.dtype``) with float32
    accumulation. ``targets [B, T]`` int. ``chunk_size`` bounds the transient logits to ``B * chunk_size * V``.
    Differentiable in ``hidden`` and ``unembed`` (gradients in their own dtypes).
    """
    if hidden.ndim != 3 or unembed.ndim != 2 or hidden.shape[-1] != unembed.shape[0]:
        raise ValueError(f"token_logprobs expects hidden [B,T,H] and unembed [H,V]; got {hidden.shape} "
                         f"and {unembed.shape}")
    if targets.shape != hidden.shape[:2]:
        raise ValueError(f"targets shape {targets.shape} != hidden's [B, T] {hidden.shape[:2]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    compute_dtype = jnp.dtype(compute_dtype if compute_dtype is not None else hidden.dtype)
    T = hidden.shape[1]
    targets = targets.astype(jnp.int32)
    c = min(chunk_size, T)
    pad = -T % c
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    outs = _chunked(hidden, unembed, targets, c, compute_dtype, int(top_k))
    return tuple(x[:, :T] for x in outs)
