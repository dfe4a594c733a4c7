"""JaxSampler on the real decoder (tiny Qwen3 preset) and the static vs continuous schedulers request by request.

Part 1 (tests/test_jax_sampler.py) holds the toy-decoder checks; the helpers are in tests/helpers_sampler.py.
"""
import numpy as np
import pytest
from flax import nnx

from helpers_sampler import (SCHEDULERS, _float32_matmuls, full_forward_logps, greedy_reference,  # noqa: F401
                             make_sampler, toy)
from rlvr_jax.rollout.base import SamplingParams
from rlvr_jax.rollout.jax_sampler import JaxSampler


# ----------------------------------------------------------------------------------------------------------
# The real decoder (tiny Qwen3 preset, float32), one sampler and one compile shared by the tests.

REAL_PROMPTS = [[5, 17, 301, 42, 9, 88, 7], [250, 3], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [400]]


@pytest.fixture(scope="module")
def real_model():
    from rlvr_jax.models import Decoder, get_preset
    return Decoder(get_preset("tiny-qwen3", dtype="float32", param_dtype="float32"), rngs=nnx.Rngs(3))


@pytest.fixture(scope="module", params=SCHEDULERS)
def real(real_model, request):
    sampler = make_sampler(real_model, request.param, [8], prompt_buckets=[16], new_token_buckets=[16],
                           max_prompt_len=16, max_new_tokens_limit=16)
    return real_model, sampler


def test_real_greedy_matches_stepwise_argmax_and_teacher_forced_logprobs(real):
    model, sampler = real
    out = sampler.generate(REAL_PROMPTS, 2, SamplingParams(temperature=0.0, max_new_tokens=12))
    for p, prompt in enumerate(REAL_PROMPTS):
        ref = greedy_reference(model, prompt, 12)
        for c in out[p]:
            assert c.token_ids == ref and c.finish_reason == "length"
            np.testing.assert_allclose(c.logprobs, full_forward_logps(model, prompt, c.token_ids), atol=1e-5)


def test_real_sampled_logprobs_equal_teacher_forced(real):
    model, sampler = real
    diffs = []
    for params in (SamplingParams(temperature=1.0, max_new_tokens=16, seed=1),
                   SamplingParams(temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=16, seed=2)):
        out = sampler.generate(REAL_PROMPTS, 2, params)
        for p, prompt in enumerate(REAL_PROMPTS):
            for c in out[p]:
                assert len(c.token_ids) == 16
                diffs.append(np.abs(np.asarray(c.logprobs) - full_forward_logps(model, prompt, c.token_ids)))
    diffs = np.concatenate(diffs)
    assert diffs.max() <= 1e-5, (diffs.mean(), diffs.max())


def test_real_stop_ids_cut_exactly_at_first_stop(real):
    """Sampling is a function of (seed, row, step), so adding stop ids must cut each no-stop sample at the
    first stop id it contains (inclusive) and change nothing before it."""
    _, sampler = real
    base = SamplingParams(temperature=1.0, max_new_tokens=16, seed=5)
    free = sampler.generate(REAL_PROMPTS, 2, base)
    stop = (free[0][0].token_ids[3], free[1][1].token_ids[6], free[3][0].token_ids[0])
    cut = sampler.generate(REAL_PROMPTS, 2, SamplingParams(temperature=1.0, max_new_tokens=16, seed=5,
                                                           stop_token_ids=stop))
    reasons = []
    for row_free, row_cut in zip(free, cut):
        for f, c in zip(row_free, row_cut):
            hits = [i for i, t in enumerate(f.token_ids) if t in stop]
            end = hits[0] + 1 if hits else len(f.token_ids)
            assert c.token_ids == f.token_ids[:end]
            np.testing.assert_allclose(c.logprobs, f.logprobs[:end], atol=1e-6)
            assert c.finish_reason == ("stop" if hits else "length")
            reasons.append(c.finish_reason)
    assert reasons.count("stop") >= 3 and "length" in reasons
    # max_new_tokens below the bucket: 'length' at exactly that many tokens.
    short = sampler.generate(REAL_PROMPTS, 2, SamplingParams(temperature=1.0, max_new_tokens=5, seed=5))
    for row_free, row_short in zip(free, short):
        for f, s in zip(row_free, row_short):
            assert s.token_ids == f.token_ids[:5] and s.finish_reason == "length"


def test_real_determinism_seeds_and_no_recompilation(real):
    _, sampler = real
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=123)
    a = [c.token_ids for row in sampler.generate(REAL_PROMPTS, 2, params) for c in row]
    b = [c.token_ids for row in sampler.generate(REAL_PROMPTS, 2, params) for c in row]
    other = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=124)
    d = [c.token_ids for row in sampler.generate(REAL_PROMPTS, 2, other) for c in row]
    assert a == b
    assert all(x != y for x, y in zip(a, d))
    # A second batch with other prompts/lengths/sizes in the same buckets reuses the compiled program.
    sampler.generate([[1, 2, 3], [4] * 16, [7, 8]], 1, SamplingParams(temperature=0.3, top_k=5, max_new_tokens=9))
    assert sampler.num_compilations == (1 if sampler.scheduler == "static" else 2)  # continuous: init and run


# ----------------------------------------------------------------------------------------------------------
# Static vs continuous, request by request.

def _long_tail_caps(rng, num, limit):
    """Per-prompt token budgets with max / mean >= 4 (most short, a few at the limit)."""
    caps = np.minimum(limit, rng.geometric(0.5, num))
    caps[::12] = limit
    return [int(c) for c in caps]


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0, max_new_tokens=16, seed=21, stop_token_ids=(3, 9)),
                                    SamplingParams(temperature=0.0, max_new_tokens=16)])
def test_toy_continuous_equals_static_per_request_with_budgets(toy, params):
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(1, 16, rng.integers(1, 12)))) for _ in range(24)]
    caps = _long_tail_caps(rng, len(prompts), 16)
    assert max(caps) / np.mean(caps) >= 4
    static = JaxSampler(toy, pad_id=0, batch_buckets=[8], max_prompt_len=16, max_new_tokens_limit=16,
                        scheduler="static")
    cont = JaxSampler(toy, pad_id=0, batch_buckets=[8], max_prompt_len=16, max_new_tokens_limit=16,
                      scheduler="continuous", refill_rows=2)
    a = static.generate(prompts, 2, params, max_new_tokens_per_prompt=caps)
    b = cont.generate(prompts, 2, params, max_new_tokens_per_prompt=caps)
    reasons = []
    for p, (row_a, row_b) in enumerate(zip(a, b)):
        for ca, cb in zip(row_a, row_b):
            assert ca.token_ids == cb.token_ids and ca.finish_reason == cb.finish_reason
            np.testing.assert_allclose(cb.logprobs, ca.logprobs, atol=1e-6)
            assert len(cb.token_ids) == caps[p] if cb.finish_reason == "length" else len(cb.token_ids) <= caps[p]
            np.testing.assert_allclose(cb.logprobs, full_forward_logps(toy, prompts[p], cb.token_ids), atol=1e-5)
            reasons.append(cb.finish_reason)
    if not params.greedy:
        assert "stop" in reasons and "length" in reasons
    # Stats: the same useful tokens; static pays for each chunk's longest row, continuous for idle slots only.
    sa, sb = static.last_stats, cont.last_stats
    useful = sum(len(c.token_ids) for row in b for c in row)
    assert sa["useful_tokens"] == sb["useful_tokens"] == useful
    lengths = [len(c.token_ids) for row in a for c in row]
    assert sa["slot_steps"] == sum(8 * max(lengths[i:i + 8]) for i in range(0, len(lengths), 8))
    assert sb["slot_steps"] >= useful and sb["utilisation"] > sa["utilisation"]
    assert sb["slots"] == 8 and sb["refill_rows"] == 2 and sb["queue_rows"] == 16
    assert sb["compiled_calls"] == 3  # 48 requests in queues of 16: the host round trips


def test_continuous_options_and_budget_errors(toy):
    with pytest.raises(ValueError, match="scheduler must be one of"):
        JaxSampler(toy, scheduler="dynamic")
    with pytest.raises(ValueError, match="decode_steps must be >= 1"):
        JaxSampler(toy, scheduler="continuous", decode_steps=0)
    with pytest.raises(ValueError, match="refill_rows must be >= 1"):
        JaxSampler(toy, scheduler="continuous", refill_rows=0)
    with pytest.raises(ValueError, match="queue_slots must be >= 1"):
        JaxSampler(toy, scheduler="continuous", queue_slots=0)
    sampler = JaxSampler(toy, pad_id=0, batch_buckets=[4], max_prompt_len=16, max_new_tokens_limit=16,
                         scheduler="continuous")
    with pytest.raises(ValueError, match=r"max_new_tokens_per_prompt needs one value in \[1, 8\] per prompt"):
        sampler.generate([[1], [2]], 1, SamplingParams(max_new_tokens=8), max_new_tokens_per_prompt=[3, 9])
    with pytest.raises(ValueError, match="per prompt"):
        sampler.generate([[1], [2]], 1, SamplingParams(max_new_tokens=8), max_new_tokens_per_prompt=[3])
    # One request, more slots than requests: the slot count is the request count's bucket.
    out = sampler.generate([[1, 2]], 1, SamplingParams(temperature=0.0, max_new_tokens=5))
    assert out[0][0].token_ids == greedy_reference(toy, [1, 2], 5) and sampler.last_stats["slots"] == 4
