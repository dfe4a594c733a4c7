"""Pure token-selection functions used by the in-process sampler (jit-safe; parameters may be traced).

Conventions (the same order as vLLM and Hugging Face):

1. Temperature: ``z = logits / T``. ``T == 0`` means greedy: ``token = argmax(logits)`` and no
   truncation or randomness is involved.
2. Top-k (``top_k <= 0`` or ``top_k >= V`` disables): keep the ``k`` largest entries of ``z``.
3. Top-p / nucleus (``top_p >= 1`` disables), applied to the top-k-filtered distribution
   ``q = softmax(z restricted to the top-k set)``: sort ``q`` descending as ``q_(1) >= q_(2) >= ...`` and keep
   rank ``r`` iff ``sum_{j<r} q_(j) < p``, i.e. the smallest prefix whose mass reaches ``p`` (rank 1 is
   always kept).
   Both truncations keep a prefix of the descending sort; ties with the last kept value are kept too.
4. Sample ``token ~ softmax(z with removed entries at -inf)``.

Log-probability convention (``rlvr_jax.rollout.base.LOGPROB_CONVENTION == "raw"``): the reported
log-prob of a sampled token is ``log_softmax(logits)[token]`` of the *untempered, untruncated* logits,
computed in float32; it is what the learner recomputes by teacher forcing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def truncate_logits(logits: jax.Array, top_k, top_p) -> jax.Array:
    """Top-k then top-p filtering of ``logits[..., V]``; removed entries become ``-inf``.

    ``top_k`` (int) and ``top_p`` (float) are scalars and may be traced. One descending sort is
    shared by both truncations: the kept set is the sorted prefix of length
    ``m = min(k_eff, m_p)`` and every entry ``>= sorted[m - 1]`` is kept.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    top_k = jnp.asarray(top_k, jnp.int32)
    top_p = jnp.asarray(top_p, jnp.float32)
    k_eff = jnp.where((top_k > 0) & (top_k < vocab), top_k, vocab)
    ranks = jnp.arange(vocab, dtype=jnp.int32)
    sorted_desc = -jnp.sort(-logits, axis=-1)
    in_top_k = ranks < k_eff
    # Nucleus on the top-k-renormalised distribution, in sorted order.
    masked_sorted = jnp.where(in_top_k, sorted_desc, -jnp.inf)
    probs = jax.nn.softmax(masked_sorted, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = in_top_k & ((mass_before < top_p) | (top_p >= 1.0))
    num_keep = jnp.maximum(jnp.sum(keep_sorted, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(sorted_desc, num_keep - 1, axis=-1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def row_keys(seed, row_ids: jax.Array, step) -> jax.Array:
    """Per-sequence PRNG keys ``fold_in(fold_in(key(seed), row_id), step)``, shape ``[B]``.

    ``step`` is a scalar or a per-row ``[B]`` array (the continuous scheduler's slots are at their own steps).

    Keys depend only on (seed, row id, decoding step), so a sample does not depend on which other
    sequences share its batch or on how the request was split into chunks.
    """
    base = jax.random.key(jnp.asarray(seed, jnp.uint32))
    step = jnp.broadcast_to(jnp.asarray(step, jnp.uint32), row_ids.shape)
    return jax.vmap(lambda r, t: jax.random.fold_in(jax.random.fold_in(base, r), t))(
        row_ids.astype(jnp.uint32), step)


def sample_tokens(keys: jax.Array, logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Chooses one token per row of ``logits[B, V]`` with per-row ``keys[B]``; returns int32 ``[B]``.

    Greedy (argmax of the raw logits) when ``temperature == 0``; otherwise samples from
    ``truncate_logits(logits / temperature, top_k, top_p)``. The sort behind truncation is skipped
    (``lax.cond``) when both truncations are disabled.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    temperature = jnp.asarray(temperature, jnp.float32)
    top_k = jnp.asarray(top_k, jnp.int32)
    top_p = jnp.asarray(top_p, jnp.float32)
    truncating = ((top_k > 0) & (top_k < vocab)) | (top_p < 1.0)

    def _greedy():
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def _sample():
        scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
        scaled = jax.lax.cond(truncating, lambda z: truncate_logits(z, top_k, top_p), lambda z: z, scaled)
        return jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)

    return jax.lax.cond(temperature == 0.0, _greedy, _sample)


def chosen_token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Raw log-prob ``log_softmax(logits)[token]`` (float32, untempered, untruncated), shape ``tokens.shape``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]

