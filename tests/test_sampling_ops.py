"""Token-selection ops: truncation vs a NumPy reference, sampled distributions (chi-square), raw log-probs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from rlvr_jax.rollout import sampling_ops

VOCAB = 10


def reference_probs(logits, temperature, top_k, top_p):
    """The exact sampling distribution, written independently of the implementation (NumPy, float64)."""
    logits = np.asarray(logits, np.float64)
    if temperature == 0:
        out = np.zeros_like(logits)
        out[np.argmax(logits)] = 1.0
        return out
    z = logits / temperature
    order = np.argsort(-z)
    if 0 < top_k < len(z):
        order = order[:top_k]
    q = special.softmax(z[order])
    keep = np.zeros(len(z), bool)
    mass = 0.0
    for idx, qi in zip(order, q):
        if top_p >= 1.0 or mass < top_p:
            keep[idx] = True
        mass += qi
    probs = np.where(keep, np.exp(z - z.max()), 0.0)
    return probs / probs.sum()


@pytest.fixture(scope="module")
def logits():
    # Distinct, well-separated values (no ties); several tokens carry little mass.
    return np.array([2.0, 0.3, -1.2, 1.1, 0.9, -0.4, 1.6, -2.5, 0.0, 0.5], np.float32)


@pytest.mark.parametrize("top_k,top_p", [(-1, 1.0), (3, 1.0), (VOCAB, 1.0), (-1, 0.6), (-1, 0.95), (4, 0.7),
                                         (1, 0.5), (-1, 0.05)])
def test_truncate_logits_matches_reference(logits, top_k, top_p):
    for temperature in (1.0, 0.5, 2.0):
        out = np.asarray(sampling_ops.truncate_logits(jnp.asarray(logits) / temperature, top_k, top_p))
        ref = reference_probs(logits, temperature, top_k, top_p)
        np.testing.assert_array_equal(np.isfinite(out), ref > 0)
        np.testing.assert_allclose(special.softmax(np.where(np.isfinite(out), out, -np.inf)), ref, atol=1e-6)


def test_truncate_logits_batched_rows_independent(logits):
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(5, VOCAB)).astype(np.float32)
    out = np.asarray(jax.jit(sampling_ops.truncate_logits)(batch, 3, 0.8))
    for row, row_out in zip(batch, out):
        np.testing.assert_array_equal(np.isfinite(row_out), reference_probs(row, 1.0, 3, 0.8) > 0)


SETTINGS = [(1.0, -1, 1.0), (0.7, 3, 1.0), (1.3, -1, 0.8), (0.9, 5, 0.7), (2.0, 6, 0.9)]


@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_sample_tokens_distribution_chi_square(logits, temperature, top_k, top_p):
    num = 40_000
    keys = jax.random.split(jax.random.key(1234), num)
    batch_logits = jnp.broadcast_to(jnp.asarray(logits), (num, VOCAB))
    tokens = np.asarray(jax.jit(sampling_ops.sample_tokens)(keys, batch_logits, temperature, top_k, top_p))
    counts = np.bincount(tokens, minlength=VOCAB)
    ref = reference_probs(logits, temperature, top_k, top_p)
    kept = ref > 0
    assert counts[~kept].sum() == 0, f"sampled truncated tokens: {counts}"
    result = stats.chisquare(counts[kept], num * ref[kept])
    assert result.pvalue > 1e-3, (counts, num * ref)
    # The test has power: the untruncated, untempered distribution is rejected whenever it differs.
    raw = special.softmax(logits.astype(np.float64))
    if not np.allclose(raw, ref, atol=1e-3):
        wrong = stats.chisquare(counts, num * raw)
        assert wrong.pvalue < 1e-6


def test_sample_tokens_greedy_is_argmax_and_ignores_keys():
    rng = np.random.default_rng(1)
    batch = jnp.asarray(rng.normal(size=(64, VOCAB)).astype(np.float32))
    keys_a = jax.random.split(jax.random.key(0), 64)
    keys_b = jax.random.split(jax.random.key(99), 64)
    sample = jax.jit(sampling_ops.sample_tokens)
    a = np.asarray(sample(keys_a, batch, 0.0, 2, 0.3))
    b = np.asarray(sample(keys_b, batch, 0.0, -1, 1.0))
    np.testing.assert_array_equal(a, np.argmax(np.asarray(batch), axis=-1))
    np.testing.assert_array_equal(a, b)


def test_top_k_one_is_greedy_for_any_temperature(logits):
    keys = jax.random.split(jax.random.key(5), 256)
    batch = jnp.broadcast_to(jnp.asarray(logits), (256, VOCAB))
    tokens = np.asarray(jax.jit(sampling_ops.sample_tokens)(keys, batch, 3.0, 1, 1.0))
    assert np.all(tokens == int(np.argmax(logits)))


def test_chosen_token_logprobs_are_raw_log_softmax():
    rng = np.random.default_rng(2)
    batch = rng.normal(size=(3, 4, VOCAB)).astype(np.float32) * 3
    tokens = rng.integers(0, VOCAB, size=(3, 4))
    got = np.asarray(sampling_ops.chosen_token_logprobs(jnp.asarray(batch, jnp.bfloat16).astype(jnp.float32),
                                                        jnp.asarray(tokens)))
    ref_logits = np.asarray(jnp.asarray(batch, jnp.bfloat16).astype(jnp.float32), np.float64)
    ref = np.take_along_axis(special.log_softmax(ref_logits, axis=-1), tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert got.dtype == np.float32


def test_row_keys_deterministic_and_distinct():
    rows = jnp.arange(6, dtype=jnp.int32)
    data = lambda keys: np.asarray(jax.vmap(jax.random.key_data)(keys))  # noqa: E731
    a = data(sampling_ops.row_keys(7, rows, 3))
    np.testing.assert_array_equal(a, data(sampling_ops.row_keys(7, rows, 3)))
    assert len({tuple(k) for k in a}) == 6
    for other in (data(sampling_ops.row_keys(8, rows, 3)), data(sampling_ops.row_keys(7, rows, 4))):
        assert not np.any(np.all(a == other, axis=-1))
    # A row's key does not depend on its neighbours.
    np.testing.assert_array_equal(data(sampling_ops.row_keys(7, rows[3:4], 3))[0], a[3])
