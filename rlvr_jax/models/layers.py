"""Building blocks of the decoder: RMSNorm, rotary embeddings (incl. llama3 scaling), attention, MLP.

Layout conventions (chosen so each parameter maps 1:1 onto a Hugging Face tensor):

* Dense kernels are ``[in, out]`` (the transpose of torch's ``Linear.weight [out, in]``); q/k/v
  outputs are ``heads * head_dim`` flattened in HF's head-major order.
* Every parameter carries ``logical_axes`` metadata, mapped to mesh axes by :mod:`rlvr_jax.sharding`.
* RMSNorm: ``y = w * (x / sqrt(mean(x^2) + eps))`` with the normalisation in float32 and the result
  cast back to the compute dtype before multiplying by ``w`` (as transformers does).
* RoPE (rotate-half form): ``x' = x * cos(p * f) + rotate_half(x) * sin(p * f)`` with inverse
  frequencies ``f_i = theta^(-2i / head_dim)`` (float32), optionally rescaled (linear, llama3).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..sharding import with_logical_constraint
from .config import ModelConfig
from .decode_attention import decode_attention
from .precision import attention_operands, mixed_dot

_INIT_STD = 0.02


def dtype_of(name: str):
    return jnp.dtype(name)


def normal_init(rngs: nnx.Rngs, shape, param_dtype, std=_INIT_STD):
    """``std * N(0, 1)`` drawn in float32 from ``rngs.params()``, stored in ``param_dtype``."""
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(param_dtype)


class Dense(nnx.Module):
    """``y = x @ kernel (+ bias)``; kernel ``[in, out]`` in ``param_dtype``, matmul in ``dtype``."""

    def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], *, use_bias: bool, config: ModelConfig,
                 rngs: nnx.Rngs):
        pdt = dtype_of(config.param_dtype)
        self.dtype = dtype_of(config.dtype)
        self.kernel = nnx.Param(normal_init(rngs, (d_in, d_out), pdt), logical_axes=axes)
        self.bias = nnx.Param(jnp.zeros((d_out,), pdt), logical_axes=(axes[1],)) if use_bias else None

    def __call__(self, x):
        y = mixed_dot(x, self.kernel[...], self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, config: ModelConfig, rngs: nnx.Rngs | None = None):
        del rngs
        self.eps = float(config.rms_norm_eps)
        self.dtype = dtype_of(config.dtype)
        self.scale = nnx.Param(jnp.ones((dim,), dtype_of(config.param_dtype)), logical_axes=("norm",))

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * y.astype(self.dtype)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse RoPE frequencies ``[head_dim // 2]`` (float32), with linear or llama3 scaling applied.

    llama3: with wavelength ``w = 2*pi/f``, ``L_lo = orig_max / low_freq_factor`` and
    ``L_hi = orig_max / high_freq_factor``: ``f`` is kept if ``w < L_hi``, divided by ``factor`` if
    ``w > L_lo``, and otherwise interpolated: ``(1-s) f/factor + s f`` with
    ``s = (orig_max / w - low_freq_factor) / (high_freq_factor - low_freq_factor)``.
    """
    dim = config.head_dim
    exponent = (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)).astype(np.float32)
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    scaling = config.rope_scaling_dict
    if scaling is None:
        return inv_freq
    rope_type = scaling.get("rope_type", scaling.get("type"))
    factor = np.float32(scaling["factor"])
    if rope_type == "linear":
        return (inv_freq / factor).astype(np.float32)
    if rope_type == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_ctx = float(scaling["original_max_position_embeddings"])
        low_wl, high_wl = old_ctx / low, old_ctx / high
        wavelen = (2 * math.pi / inv_freq).astype(np.float32)
        scaled = np.where(wavelen > low_wl, inv_freq / factor, inv_freq).astype(np.float32)
        smooth = ((old_ctx / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = ((1 - smooth) * scaled / factor + smooth * scaled).astype(np.float32)
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise NotImplementedError(f"rope type {rope_type!r}")


def rope_cos_sin(positions, inv_freq: np.ndarray):
    """``cos, sin`` of shape ``[B, T, head_dim]`` (float32) for integer ``positions [B, T]``."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE on ``x [B, T, heads, head_dim]`` with ``cos/sin [B, T, head_dim]``."""
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    c = cos[:, :, None, :].astype(x.dtype)
    s = sin[:, :, None, :].astype(x.dtype)
    return x * c + rot * s


def causal_padding_mask(attention_mask):
    """Boolean ``[B, 1, T, T]``: query ``t`` sees key ``s`` iff ``s <= t`` and key ``s`` is a real token."""
    T = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    return causal[None, None] & (attention_mask[:, None, None, :] > 0)


class Attention(nnx.Module):
    """Grouped-query self-attention with optional q/k/v (and o) biases and Qwen3 per-head q/k RMSNorm."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.impl = c.attention_impl
        self.decode_impl = c.decode_attention_impl
        self.dtype = dtype_of(c.dtype)
        h, n, k, d = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = Dense(h, n * d, ("embed", "heads"), use_bias=c.attention_bias, config=c, rngs=rngs)
        self.k_proj = Dense(h, k * d, ("embed", "kv_heads"), use_bias=c.attention_bias, config=c, rngs=rngs)
        self.v_proj = Dense(h, k * d, ("embed", "kv_heads"), use_bias=c.attention_bias, config=c, rngs=rngs)
        self.o_proj = Dense(n * d, h, ("heads", "embed"), use_bias=c.o_proj_bias, config=c, rngs=rngs)
        if c.qk_norm:
            self.q_norm = RMSNorm(d, config=c)
            self.k_norm = RMSNorm(d, config=c)
        else:
            self.q_norm = self.k_norm = None

    def qkv(self, x, cos, sin):
        """Projects ``x [B, T, H]`` to roped ``q [B,T,N,D]``, ``k, v [B,T,K,D]`` (compute dtype)."""
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = with_logical_constraint(apply_rope(q, cos, sin), ("batch", "length", "act_heads", "head_dim"))
        k = with_logical_constraint(apply_rope(k, cos, sin), ("batch", "length", "act_heads", "head_dim"))
        return q, k, v

    def attend(self, q, k, v, mask):
        """``softmax(q k^T / sqrt(D) masked) v`` then the output projection.

        ``mask`` is bool ``[B,1,T,S]``, or ``None`` for plain causal attention over an unpadded (or
        right-padded) sequence: then no mask array is built and ``is_causal`` lets cuDNN take its causal
        flash-attention path, which skips the blocks above the diagonal.
        """
        B, T = q.shape[:2]
        dt = q.dtype
        q, k, v = attention_operands(q, k, v) if self.impl in (None, "xla") else (q, k.astype(dt), v.astype(dt))
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=mask is None,
                                           implementation=self.impl).astype(dt)
        return self.o_proj(out.reshape(B, T, self.num_heads * self.head_dim))


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        h, f = config.hidden_size, config.intermediate_size
        self.gate_proj = Dense(h, f, ("embed", "mlp"), use_bias=False, config=config, rngs=rngs)
        self.up_proj = Dense(h, f, ("embed", "mlp"), use_bias=False, config=config, rngs=rngs)
        self.down_proj = Dense(f, h, ("mlp", "embed"), use_bias=False, config=config, rngs=rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def _write_rows(cache, new, index, head_major: bool):
    """Writes ``new [B, 1, K, D]`` at slot ``index[b]`` of row ``b`` (a scatter XLA updates in place)."""
    if new.shape[1] != 1:
        raise ValueError(f"a per-row cache index takes one token per row, got {new.shape[1]}")
    rows = jnp.arange(new.shape[0])
    value = new[:, 0].astype(cache.dtype)  # [B, K, D]
    if head_major:  # [B, K, S, D]: advanced indices on axes 0 and 2 -> indexed shape [B, K, D]
        return cache.at[rows, :, index].set(value)
    return cache.at[rows, index].set(value)


class Block(nnx.Module):
    """Pre-norm transformer layer: ``h = x + attn(norm(x)); y = h + mlp(norm(h))``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(config.hidden_size, config=config)
        self.attn = Attention(config, rngs=rngs)
        self.post_attn_norm = RMSNorm(config.hidden_size, config=config)
        self.mlp = MLP(config, rngs=rngs)

    def _finish(self, x, attn_out):
        h = x + attn_out
        y = h + self.mlp(self.post_attn_norm(h))
        return with_logical_constraint(y, ("batch", "length", "act_embed"))

    def __call__(self, x, cos, sin, mask):
        """Full-sequence forward; ``mask`` bool ``[B, 1, T, T]``, or ``None`` for causal-only attention."""
        q, k, v = self.attn.qkv(self.input_norm(x), cos, sin)
        return self._finish(x, self.attn.attend(q, k, v, mask))

    def cached(self, x, cos, sin, mask, cache_k, cache_v, index, attend_to_cache: bool, kv_range=None):
        """Forward that also writes this step's K/V into the cache at slot ``index``.

        ``index`` is a scalar (every row writes slots ``[index, index + T)``) or, for one token per row, an
        int32 ``[B]`` of per-row slots (continuous batching: each slot of the batch is at its own step).
        The cache is ``cache_k/v [B, S, K, D]`` (``decode_attention_impl='xla'``) or head-major
        ``[B, K, S, D]`` (``'pallas'``: the fresh ``[B, T, K, D]`` K/V are transposed once before the write;
        for a decode step, ``T = 1``, that is a free reshape).
        ``attend_to_cache=False`` (prefill): attends to the fresh K/V with ``mask [B,1,T,T]``.
        ``attend_to_cache=True`` (decode): ``'xla'`` attends to the whole updated cache with
        ``mask [B,1,T,S]``; ``'pallas'`` attends to slots ``[start_b, end_b)`` of ``kv_range = (start, end)``
        (each ``[B]`` int32) with :func:`rlvr_jax.models.decode_attention.decode_attention`.
        """
        q, k, v = self.attn.qkv(self.input_norm(x), cos, sin)
        head_major = self.attn.decode_impl == "pallas"
        if jnp.ndim(index) == 1:
            cache_k, cache_v = _write_rows(cache_k, k, index, head_major), _write_rows(cache_v, v, index, head_major)
        else:
            if head_major:
                k_new, v_new, start = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), (0, 0, index, 0)
            else:
                k_new, v_new, start = k, v, (0, index, 0, 0)
            cache_k = jax.lax.dynamic_update_slice(cache_k, k_new.astype(cache_k.dtype), start)
            cache_v = jax.lax.dynamic_update_slice(cache_v, v_new.astype(cache_v.dtype), start)
        if attend_to_cache and head_major:
            if kv_range is None:
                raise ValueError("decode_attention_impl='pallas' needs kv_range=(start, end) for a decode step")
            if q.shape[1] != 1:
                raise ValueError(f"pallas decode attention takes one token per row, got {q.shape[1]}")
            B = q.shape[0]
            o = decode_attention(q[:, 0], cache_k, cache_v, *kv_range)
            out = self.attn.o_proj(o.reshape(B, 1, self.attn.num_heads * self.attn.head_dim))
        elif attend_to_cache:
            out = self.attn.attend(q, cache_k, cache_v, mask)
        else:
            out = self.attn.attend(q, k, v, mask)
        return self._finish(x, out), cache_k, cache_v
