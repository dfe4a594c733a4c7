"""JaxSampler on a toy decoder: decoding correctness, raw log-probs, sampling distributions, stop handling,
bucketing, seeds, recompilation, weight sync and mesh sharding.

The toy decoder (tests/helpers_sampler.py, fast, tiny vocab) implements the cache contract of rlvr_jax.models.
The correctness checks run against both schedulers (``static`` and ``continuous``; the continuous sampler gets
fewer slots than rows, so its slots are refilled). tests/test_jax_sampler_real.py runs the same checks against
the real rlvr_jax.models.Decoder and compares the two schedulers request by request.
"""
import jax
import numpy as np
import pytest
from flax import nnx
from scipy import special, stats

from helpers_sampler import (PROMPTS, SCHEDULERS, ToyDecoder, _float32_matmuls,  # noqa: F401 (fixtures)
                             forward_logits, full_forward_logps, greedy_reference, make_sampler, toy, toy_sampler)
from rlvr_jax.rollout.base import SamplingParams
from rlvr_jax.rollout.jax_sampler import JaxSampler, pick_bucket, power_of_two_buckets
from rlvr_jax.sharding import make_mesh


def test_buckets():
    assert power_of_two_buckets(16, 100) == (16, 32, 64, 100)
    assert pick_bucket(17, (16, 32), "x") == 32
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        pick_bucket(33, (16, 32), "prompt length")


def test_toy_greedy_matches_stepwise_argmax(toy, toy_sampler):
    out = toy_sampler.generate(PROMPTS, 1, SamplingParams(temperature=0.0, max_new_tokens=12))
    for p, prompt in enumerate(PROMPTS):
        c = out[p][0]
        assert c.token_ids == greedy_reference(toy, prompt, 12)
        assert c.finish_reason == "length" and len(c.token_ids) == 12
        np.testing.assert_allclose(c.logprobs, full_forward_logps(toy, prompt, c.token_ids), atol=1e-5)


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0, max_new_tokens=10, seed=3),
                                    SamplingParams(temperature=0.6, top_k=4, top_p=0.9, max_new_tokens=10, seed=4)])
def test_toy_sampled_logprobs_equal_teacher_forced_raw(toy, toy_sampler, params):
    out = toy_sampler.generate(PROMPTS, 3, params)
    for p, prompt in enumerate(PROMPTS):
        assert [c.sample_index for c in out[p]] == [0, 1, 2] and all(c.prompt_index == p for c in out[p])
        for c in out[p]:
            np.testing.assert_allclose(c.logprobs, full_forward_logps(toy, prompt, c.token_ids), atol=1e-5)


def test_toy_stop_tokens_end_sequences(toy, toy_sampler):
    stop = (7, 11)
    params = SamplingParams(temperature=1.0, max_new_tokens=16, stop_token_ids=stop, seed=1)
    out = toy_sampler.generate(PROMPTS, 4, params)
    reasons = [c.finish_reason for row in out for c in row]
    assert "stop" in reasons and "length" in reasons  # both paths exercised by this seed
    for p, row in enumerate(out):
        for c in row:
            body = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
            assert not set(body) & set(stop)
            if c.finish_reason == "stop":
                assert c.token_ids[-1] in stop and len(c.token_ids) <= 16
            else:
                assert len(c.token_ids) == 16
            np.testing.assert_allclose(c.logprobs, full_forward_logps(toy, PROMPTS[p], c.token_ids), atol=1e-5)
    # Engine-level EOS ids act like stop ids; greedy with a stop id = the greedy reference cut at it.
    ref = greedy_reference(toy, PROMPTS[0], 16)
    eos = ref[2]
    eos_sampler = JaxSampler(toy, pad_id=0, eos_token_ids=[eos], batch_buckets=[1], max_prompt_len=16,
                             max_new_tokens_limit=16)
    c = eos_sampler.generate([PROMPTS[0]], 1, SamplingParams(temperature=0.0, max_new_tokens=16))[0][0]
    assert c.token_ids == ref[:ref.index(eos) + 1] and c.finish_reason == "stop"


def test_toy_determinism_seeds_and_chunking(toy, toy_sampler):
    sampler = toy_sampler
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=11)
    tokens = lambda out: [c.token_ids for row in out for c in row]  # noqa: E731
    a = tokens(sampler.generate(PROMPTS, 4, params))
    assert a == tokens(sampler.generate(PROMPTS, 4, params))
    b = tokens(sampler.generate(PROMPTS, 4, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=12)))
    assert sum(x != y for x, y in zip(a, b)) >= len(a) // 2
    # Samples depend on (seed, prompt index, sample index) only, not on how rows are chunked.
    # The static sampler in chunks of 4 rows gives the same samples as either scheduler.
    small = JaxSampler(toy, pad_id=0, batch_buckets=[4], max_prompt_len=16, max_new_tokens_limit=16,
                       scheduler="static")
    assert tokens(small.generate(PROMPTS, 4, params)) == a
    # Distinct samples of one prompt differ.
    assert len({tuple(t) for t in a[:4]}) > 1


def test_toy_no_recompilation_within_bucket(toy):
    sampler = JaxSampler(toy, pad_id=0, max_batch_size=16, max_prompt_len=16, max_new_tokens_limit=16,
                         scheduler="static")  # one trace per bucket (continuous: two, tested below)
    sampler.generate(PROMPTS, 2, SamplingParams(temperature=1.0, max_new_tokens=9))  # 8 rows, prompt 7 -> 16
    assert sampler.num_compilations == 1
    # Same buckets: 6 rows -> 8, longest prompt 12 -> 16, 13 new tokens -> 16; other sampling params and seed.
    sampler.generate([[1] * 12, [2, 3], [4]], 2, SamplingParams(temperature=0.5, top_k=3, top_p=0.8,
                                                                 max_new_tokens=13, seed=5, stop_token_ids=(3,)))
    sampler.generate([[5, 6]], 7, SamplingParams(temperature=0.0, max_new_tokens=16))
    assert sampler.num_compilations == 1
    sampler.generate(PROMPTS, 4, SamplingParams(max_new_tokens=4))  # 16 rows: a new batch bucket
    assert sampler.num_compilations == 2


def test_toy_sync_weights_without_recompiling(toy):
    model = ToyDecoder(rngs=nnx.Rngs(0))
    sampler = JaxSampler(model, pad_id=0, batch_buckets=[4], max_prompt_len=16, max_new_tokens_limit=16)
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    before = sampler.generate(PROMPTS, 1, params)
    model.pos_bias[...] = model.pos_bias[...].at[:, 13].add(100.0)  # token 13 now always wins
    seconds = sampler.sync_weights(model, version=3)
    assert seconds >= 0 and sampler.version == 3
    after = sampler.generate(PROMPTS, 1, params)
    assert sampler.num_compilations == (1 if sampler.scheduler == "static" else 2)  # continuous: init and run
    assert all(c.token_ids == [13] * 8 for row in after for c in row)
    assert before[0][0].token_ids != after[0][0].token_ids
    # A state also works; a mismatched one is refused with the offending leaf named.
    sampler.sync_weights(nnx.split(toy)[1], version=4)
    assert sampler.generate(PROMPTS, 1, params)[0][0].token_ids == before[0][0].token_ids
    with pytest.raises(ValueError, match=r"leaf \['ctx'\].* has shape/dtype \(16, 4\)"):
        sampler.sync_weights(ToyDecoder(vocab=16, dim=4, rngs=nnx.Rngs(1)), version=5)


def test_toy_errors(toy_sampler):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        toy_sampler.generate([[1], []], 1, SamplingParams())
    with pytest.raises(ValueError, match="prompt 0 has 17 tokens"):
        toy_sampler.generate([[1] * 17], 1, SamplingParams(max_new_tokens=4))
    with pytest.raises(ValueError, match="max_new_tokens 17 exceeds"):
        toy_sampler.generate([[1]], 1, SamplingParams(max_new_tokens=17))
    with pytest.raises(ValueError, match="n .* must be >= 1"):
        toy_sampler.generate([[1]], 0, SamplingParams())


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_toy_first_token_distribution_chi_square(scheduler):
    """End to end: 4096 first tokens of one prompt follow the exact truncated distribution, per setting."""
    vocab, num, prompt = 8, 4096, [1, 2, 3]
    model = ToyDecoder(vocab=vocab, dim=4, rngs=nnx.Rngs(7))
    logits = forward_logits(model, prompt)[-1]
    sampler = make_sampler(model, scheduler, [1024], max_prompt_len=16, max_new_tokens_limit=16, refill_rows=256)
    for temperature, top_k, top_p in [(1.0, -1, 1.0), (0.7, 3, 1.0), (1.4, -1, 0.75), (0.9, 5, 0.8)]:
        z = logits / temperature
        order = np.argsort(-z)[: top_k if top_k > 0 else vocab]
        q, keep, mass = special.softmax(z[order]), np.zeros(vocab, bool), 0.0
        for idx, qi in zip(order, q):
            keep[idx] = mass < top_p or top_p >= 1.0
            mass += qi
        ref = np.where(keep, special.softmax(z), 0.0)
        ref /= ref.sum()
        out = sampler.generate([prompt], num, SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p,
                                                             max_new_tokens=1, seed=2024))
        first = np.array([c.token_ids[0] for c in out[0]])
        counts = np.bincount(first, minlength=vocab)
        assert counts[~keep].sum() == 0, (temperature, top_k, top_p, counts)
        assert stats.chisquare(counts[keep], num * ref[keep]).pvalue > 1e-3, (counts, num * ref)
        if not np.allclose(ref, special.softmax(logits), atol=1e-3):  # the check has power
            assert stats.chisquare(counts, num * special.softmax(logits)).pvalue < 1e-6
        np.testing.assert_allclose([c.logprobs[0] for c in out[0]], special.log_softmax(logits)[first], atol=1e-5)
    # 4 settings x 4096 rows: one compile (static: 4 chunks of 1024 rows; continuous: init and run)
    assert sampler.num_compilations == (1 if scheduler == "static" else 2)


def test_toy_sharded_over_mesh_matches_unsharded(toy, toy_sampler):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 CPU devices)")
    mesh = make_mesh({"data": 2, "fsdp": 4, "tp": 1})
    # 16 rows on 8 slots (or in 2 chunks of 8); continuous refills round up to the 8-way split (1 -> 8 rows).
    sampler = JaxSampler(toy, pad_id=0, batch_buckets=[1, 8], max_prompt_len=16, max_new_tokens_limit=16, mesh=mesh,
                         scheduler=toy_sampler.scheduler, decode_steps=3, refill_rows=1)
    assert sampler.batch_buckets == (8,)  # buckets rounded up to the 8-way batch split
    params = SamplingParams(temperature=1.0, top_k=6, max_new_tokens=10, seed=9, stop_token_ids=(3,))
    sharded = sampler.generate(PROMPTS, 4, params)
    plain = toy_sampler.generate(PROMPTS, 4, params)
    if sampler.scheduler == "continuous":
        assert sampler.last_stats["slots"] == 8 and sampler.last_stats["refill_rows"] == 8
    for row_s, row_p in zip(sharded, plain):
        for cs, cp in zip(row_s, row_p):
            assert cs.token_ids == cp.token_ids and cs.finish_reason == cp.finish_reason
            np.testing.assert_allclose(cs.logprobs, cp.logprobs, atol=1e-6)


def test_a_pending_stop_ends_generation_between_compiled_calls(toy, toy_sampler):
    """Issue 27 finding 5: a stop requested (by the trainer's signal guard) while the sampler works is honoured
    at its next return to the host (continuous: after decode_steps steps; static: between chunks of rows), not
    after the whole generation; the next generation runs normally once the request is cleared."""
    from rlvr_jax.rollout import stop
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=1)
    calls = []
    if toy_sampler.scheduler == "continuous":
        target, name = toy_sampler._continuous, "_run_jit"
    else:
        target, name = toy_sampler, "_run_chunk"
    inner = getattr(target, name)

    def counted(*a, **kw):
        calls.append(1)
        stop.request_stop()  # as a signal arriving during this compiled call
        return inner(*a, **kw)

    setattr(target, name, counted)
    try:
        with pytest.raises(stop.GenerationStopped):
            toy_sampler.generate(PROMPTS * 8, 4, params)  # static: 2 chunks of 16 rows; continuous: many calls
        assert len(calls) == 1
    finally:
        setattr(target, name, inner)
        stop.clear_stop()
    assert len(toy_sampler.generate(PROMPTS, 2, params)) == len(PROMPTS)
