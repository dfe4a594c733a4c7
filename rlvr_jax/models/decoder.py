"""The decoder-only policy (Qwen2/2.5, Qwen3, Llama 3.x) as one ``flax.nnx`` module.

Conventions:

* ``attention_mask [B, T]``: 1 = real token, 0 = padding (left padding for prompt batches). Without one
  the sequence is taken as unpadded (or right-padded: trailing pads never influence earlier tokens) and
  attention is causal-only, with no mask array (the fast cuDNN path; see ``Attention.attend``).
* Default positions are ``max(cumsum(mask) - 1, 0)``, so a left-padded row gets the same positions
  (and thus the same logits on its real tokens) as the unpadded row.
* Logits are ``final_norm(h) @ unembed`` in float32, ``unembed = embedding^T`` when tied, else the
  ``lm_head`` kernel ``[H, V]``.
* KV cache: ``{'k', 'v'}``, each a tuple of ``L`` per-layer arrays (compute dtype): ``[B, S, K, D]``
  with ``decode_attention_impl='xla'`` (the default), head-major ``[B, K, S, D]`` with ``'pallas'``
  (the layout the Pallas decode kernel of :mod:`rlvr_jax.models.decode_attention` walks without copying).
  Separate per-layer buffers let XLA update each layer's slot in place inside the sampler's decode
  loop (a stacked ``[L, ...]`` array was copied layer by layer on every step). :meth:`Decoder.prefill`
  writes slots ``[0, T)``; :meth:`Decoder.decode_step` writes slot ``cache_index`` and attends to
  the slots whose ``kv_mask`` is 1 (the caller includes ``cache_index`` itself): ``'xla'`` masks the
  whole cache, ``'pallas'`` reads only the slot range from the first to the last 1 of each row.

Layers are a Python list (not scanned) so that each parameter maps 1:1 onto a Hugging Face tensor.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..sharding import with_logical_constraint
from .config import ModelConfig
from .decode_attention import kv_range_from_mask
from .precision import mixed_einsum
from .layers import Block, RMSNorm, causal_padding_mask, dtype_of, normal_init, rope_cos_sin, rope_inv_freq

_REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole layer
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def default_positions(attention_mask):
    """``max(cumsum(mask) - 1, 0)`` along the sequence axis (int32)."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class Embedding(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.dtype = dtype_of(config.dtype)
        self.embedding = nnx.Param(
            normal_init(rngs, (config.vocab_size, config.hidden_size), dtype_of(config.param_dtype)),
            logical_axes=("vocab", "embed"))

    def __call__(self, ids):
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


class LMHead(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(
            normal_init(rngs, (config.hidden_size, config.vocab_size), dtype_of(config.param_dtype)),
            logical_axes=("embed", "vocab"))


class Decoder(nnx.Module):
    """Causal LM: embeddings -> ``num_layers`` x :class:`Block` -> final RMSNorm -> logits."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.embed = Embedding(config, rngs=rngs)
        self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.hidden_size, config=config)
        self.lm_head = None if config.tie_word_embeddings else LMHead(config, rngs=rngs)

    # ------------------------------------------------------------------------------------------
    def unembed_matrix(self):
        """``[H, V]`` output projection (the tied embedding transposed, or the lm_head kernel)."""
        if self.lm_head is None:
            return self.embed.embedding[...].T
        return self.lm_head.kernel[...]

    def logits_from_hidden(self, h):
        w = self.unembed_matrix()
        dt = dtype_of(self.config.dtype)
        return mixed_einsum("...h,hv->...v", h, w, dt, jnp.float32)

    def _prepare(self, input_ids, positions, attention_mask):
        """Embeddings, RoPE tables and the attention mask (``None`` = causal only, when there is no
        ``attention_mask``: no ``[B, 1, T, T]`` array, and cuDNN can use its causal kernel)."""
        B, T = input_ids.shape
        if positions is None:
            positions = (jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)) if attention_mask is None
                         else default_positions(attention_mask))
        cos, sin = rope_cos_sin(positions, rope_inv_freq(self.config))
        x = with_logical_constraint(self.embed(input_ids), ("batch", "length", "act_embed"))
        mask = None if attention_mask is None else causal_padding_mask(attention_mask)
        return x, cos, sin, mask

    def _run_layers(self, x, cos, sin, mask, collect: bool):
        hiddens = [x] if collect else None
        policy = self.config.remat
        for blk in self.layers:
            if policy == "none":
                x = blk(x, cos, sin, mask)
            else:
                x = nnx.remat(lambda b, *a: b(*a), policy=_REMAT_POLICIES[policy])(blk, x, cos, sin, mask)
            if collect:
                hiddens.append(x)
        return x, hiddens

    def hidden(self, input_ids, positions=None, attention_mask=None):
        """Final-normed hidden states ``[B, T, H]`` (compute dtype)."""
        x, cos, sin, mask = self._prepare(input_ids, positions, attention_mask)
        x, _ = self._run_layers(x, cos, sin, mask, collect=False)
        return self.final_norm(x)

    def __call__(self, input_ids, positions=None, attention_mask=None, return_hidden_states: bool = False):
        """Logits ``[B, T, V]`` float32; with ``return_hidden_states`` also the tuple
        ``(embeddings, layer_1, ..., layer_L)`` of residual-stream states (before the final norm)."""
        x, cos, sin, mask = self._prepare(input_ids, positions, attention_mask)
        x, hiddens = self._run_layers(x, cos, sin, mask, collect=return_hidden_states)
        logits = self.logits_from_hidden(self.final_norm(x))
        return (logits, tuple(hiddens)) if return_hidden_states else logits

    # ------------------------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype=None):
        """Zeroed per-layer K/V buffers: ``[B, S, K, D]``, or ``[B, K, S, D]`` for the pallas decode path."""
        c = self.config
        if c.decode_attention_impl == "pallas":
            shape = (batch_size, c.num_kv_heads, max_len, c.head_dim)
        else:
            shape = (batch_size, max_len, c.num_kv_heads, c.head_dim)
        dt = jnp.dtype(dtype) if dtype is not None else dtype_of(c.dtype)
        return {"k": tuple(jnp.zeros(shape, dt) for _ in range(c.num_layers)),
                "v": tuple(jnp.zeros(shape, dt) for _ in range(c.num_layers))}

    def cache_logical_axes(self):
        """Logical axis names of every :meth:`init_cache` leaf (same tree), for the sharding rules:
        ``('batch', 'length', 'kv_heads', 'head_dim')``, or head-major for the pallas decode path."""
        c = self.config
        axes = (("batch", "kv_heads", "length", "head_dim") if c.decode_attention_impl == "pallas"
                else ("batch", "length", "kv_heads", "head_dim"))
        return {"k": (axes,) * c.num_layers, "v": (axes,) * c.num_layers}

    def cache_len(self, cache) -> int:
        """Number of slots ``S`` of a cache from :meth:`init_cache` (either layout)."""
        return cache["k"][0].shape[2 if self.config.decode_attention_impl == "pallas" else 1]

    def _run_cached(self, x, cos, sin, mask, cache, index, attend_to_cache, kv_range=None, last_only=False):
        ks, vs = [], []
        for blk, ck, cv in zip(self.layers, cache["k"], cache["v"]):
            x, ck, cv = blk.cached(x, cos, sin, mask, ck, cv, index, attend_to_cache, kv_range)
            ks.append(ck)
            vs.append(cv)
        if last_only:
            x = x[:, -1]
        return self.logits_from_hidden(self.final_norm(x)), {"k": tuple(ks), "v": tuple(vs)}

    def prefill(self, input_ids, attention_mask, cache, last_only: bool = False):
        """Runs left-padded prompts ``[B, T]``, writes K/V into cache slots ``[0, T)``.

        Returns ``(logits [B, T, V] float32, cache)``; positions come from the mask. With ``last_only`` the
        logits are those of the last column only, ``[B, V]`` (the samplers' token 0: one weight pass for the
        whole prompt and no ``[B, T, V]`` unembedding).
        """
        T, S = input_ids.shape[1], self.cache_len(cache)
        if T > S:
            raise ValueError(f"prompt length {T} exceeds the cache length {S}")
        x, cos, sin, mask = self._prepare(input_ids, None, attention_mask)
        return self._run_cached(x, cos, sin, mask, cache, 0, attend_to_cache=False, last_only=last_only)

    def decode_step(self, tokens, positions, cache_index, kv_mask, cache):
        """One token per row: ``tokens [B]`` at ``positions [B]``, K/V written at slot ``cache_index``
        (a scalar shared by all rows, or an int32 ``[B]`` of per-row slots for continuous batching).

        Attends to the cache slots where ``kv_mask [B, S]`` is 1. Returns ``(logits [B, V], cache)``.
        With ``decode_attention_impl='pallas'`` the attended slots are ``[first 1, last 1]`` of each row
        (:func:`~rlvr_jax.models.decode_attention.kv_range_from_mask`), so each row's ones in ``kv_mask``
        must be contiguous; the JaxSampler layout guarantees it (a left-padded prompt, then the
        generated slots in order; the continuous scheduler keeps that layout per slot).
        """
        ids = tokens[:, None]
        cos, sin = rope_cos_sin(positions[:, None], rope_inv_freq(self.config))
        x = self.embed(ids)
        if self.config.decode_attention_impl == "pallas":
            mask, kv_range = None, kv_range_from_mask(kv_mask)
        else:
            mask, kv_range = (kv_mask > 0)[:, None, None, :], None
        logits, cache = self._run_cached(x, cos, sin, mask, cache, jnp.asarray(cache_index, jnp.int32),
                                         attend_to_cache=True, kv_range=kv_range)
        return logits[:, 0], cache
