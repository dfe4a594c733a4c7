"""KV-cache path (prefill + decode_step under nnx.split/merge + jit) == full forward, with left padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers_models import make_tiny_hf_model
from rlvr_jax.models import load_hf

STEPS = 5


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
def test_prefill_and_decode_match_full_forward(tmp_path, family):
    model, cfg = load_hf(make_tiny_hf_model(tmp_path, family, seed=3))
    graphdef, state = nnx.split(model)

    @jax.jit
    def prefill(state, ids, mask, cache):
        return nnx.merge(graphdef, state).prefill(ids, mask, cache)

    @jax.jit
    def step(state, tok, pos, idx, kv_mask, cache):
        return nnx.merge(graphdef, state).decode_step(tok, pos, idx, kv_mask, cache)

    @jax.jit
    def full(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, attention_mask=mask)

    rs = np.random.RandomState(0)
    lengths = [6, 3, 1]
    B, T0 = len(lengths), max(lengths)
    ids = np.zeros((B, T0), np.int32)
    mask = np.zeros((B, T0), np.int32)
    for i, n in enumerate(lengths):
        ids[i, T0 - n:] = rs.randint(3, cfg.vocab_size, n)
        mask[i, T0 - n:] = 1
    S = T0 + STEPS + 2  # spare slots stay masked
    cache = model.init_cache(B, S)
    assert len(cache["k"]) == len(cache["v"]) == cfg.num_layers  # one buffer per layer
    assert all(k.shape == (B, S, cfg.num_kv_heads, cfg.head_dim) for k in cache["k"] + cache["v"])

    logits, cache = prefill(state, jnp.asarray(ids), jnp.asarray(mask), cache)
    ref = full(state, jnp.asarray(ids), jnp.asarray(mask))
    real = mask.astype(bool)
    errs = [_rel(np.asarray(logits)[real], np.asarray(ref)[real])]
    # last_only (the samplers' token-0 prefill): the last column's logits [B, V] and the same cache.
    last_only, cache_last = jax.jit(lambda st, i, m, c: nnx.merge(graphdef, st).prefill(i, m, c, last_only=True))(
        state, jnp.asarray(ids), jnp.asarray(mask), model.init_cache(B, S))
    assert last_only.shape == (B, cfg.vocab_size)
    errs.append(_rel(last_only, np.asarray(ref)[:, -1]))
    for a, b in zip(cache_last["k"] + cache_last["v"], cache["k"] + cache["v"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)

    kv_mask = np.zeros((B, S), np.int32)
    kv_mask[:, :T0] = mask
    seq = ids
    last = np.asarray(logits[:, -1])
    decoded = []
    pos = mask.sum(1)  # position of the next token
    for s in range(STEPS):
        tok = last.argmax(-1).astype(np.int32)
        slot = T0 + s
        kv_mask[:, slot] = 1
        last, cache = step(state, jnp.asarray(tok), jnp.asarray(pos, jnp.int32), jnp.asarray(slot, jnp.int32),
                           jnp.asarray(kv_mask), cache)
        last = np.asarray(last)
        decoded.append(last)
        seq = np.concatenate([seq, tok[:, None]], 1)
        pos = pos + 1
    # Causality: the full forward over the final sequence gives every step's logits at once.
    seq_mask = np.concatenate([mask, np.ones((B, STEPS), np.int32)], 1)
    ref_all = np.asarray(full(state, jnp.asarray(seq), jnp.asarray(seq_mask)))
    errs += [_rel(d, ref_all[:, T0 + s]) for s, d in enumerate(decoded)]
    print(f"\n[kv-cache {family}] max rel err prefill/decode vs full: {max(errs):.2e}")
    assert max(errs) < 1e-5
    assert step._cache_size() == 1  # one compilation for all steps (cache_index is traced)
    # The unused slots were never written.
    assert max(float(jnp.abs(k[:, T0 + STEPS:]).max()) for k in cache["k"] + cache["v"]) == 0.0


def test_prompt_longer_than_cache_raises(tmp_path):
    model, _ = load_hf(make_tiny_hf_model(tmp_path, "qwen3"))
    with pytest.raises(ValueError, match="exceeds the cache length"):
        model.prefill(jnp.ones((1, 5), jnp.int32), jnp.ones((1, 5), jnp.int32), model.init_cache(1, 4))


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_per_row_cache_index_equals_scalar_index_per_row(tmp_path, impl):
    """decode_step with int32 [B] cache indices (continuous batching) writes row b at slot index[b] only and
    gives each row the logits of a scalar-index step at that slot."""
    model, cfg = load_hf(make_tiny_hf_model(tmp_path, "qwen3", seed=5), decode_attention_impl=impl)
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tok, pos, idx, kv_mask, cache):
        return nnx.merge(graphdef, state).decode_step(tok, pos, idx, kv_mask, cache)

    B, S = 3, 16
    rs = np.random.RandomState(1)
    # A cache with random finite contents, rows filled up to different lengths.
    cache = jax.tree.map(lambda x: jnp.asarray(rs.standard_normal(x.shape), x.dtype), model.init_cache(B, S))
    index = np.array([4, 9, 2], np.int32)
    kv_mask = (np.arange(S)[None, :] <= index[:, None]).astype(np.int32)
    tok = jnp.asarray(rs.randint(3, cfg.vocab_size, B), jnp.int32)
    pos = jnp.asarray(index)
    logits, new = step(state, tok, pos, jnp.asarray(index), jnp.asarray(kv_mask), cache)
    head_major = impl == "pallas"
    for b in range(B):
        ref_logits, ref = step(state, tok, pos, jnp.int32(index[b]), jnp.asarray(kv_mask), cache)
        np.testing.assert_allclose(np.asarray(logits[b]), np.asarray(ref_logits[b]), rtol=1e-5, atol=1e-5)
        for c, r, old in zip(new["k"] + new["v"], ref["k"] + ref["v"], cache["k"] + cache["v"]):
            slots = np.arange(S) != index[b]
            got = np.asarray(c[b]).swapaxes(0, 1) if head_major else np.asarray(c[b])  # [S, K, D]
            want = np.asarray(r[b]).swapaxes(0, 1) if head_major else np.asarray(r[b])
            before = np.asarray(old[b]).swapaxes(0, 1) if head_major else np.asarray(old[b])
            np.testing.assert_array_equal(got[index[b]], want[index[b]])  # the new K/V at its own slot
            np.testing.assert_array_equal(got[slots], before[slots])  # every other slot untouched
