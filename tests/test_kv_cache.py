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
