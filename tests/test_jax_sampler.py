"""JaxSampler: decoding correctness, raw log-probs, sampling distributions, stop handling, bucketing, seeds.

Part 1 uses a toy decoder defined here (fast, tiny vocab) that implements the cache contract of
rlvr_jax.models; part 2 runs the same checks against the real rlvr_jax.models.Decoder. The correctness checks
run against both schedulers (``static`` and ``continuous``; the continuous sampler gets fewer slots than rows,
so its slots are refilled); part 3 compares the two paths request by request.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special, stats

from rlvr_jax.rollout.base import SamplingParams
from rlvr_jax.sharding import make_mesh
from rlvr_jax.rollout.jax_sampler import JaxSampler, pick_bucket, power_of_two_buckets


class ToyDecoder(nnx.Module):
    """A cache-using toy LM: ``logits_t = (E[x_t] + mean_{s attended} C[x_s]) @ W + B[pos_t]``.

    "Attended" = real tokens at or before t (the cache holds ``C[x_s]`` per slot), so correct output
    needs correct left padding, positions, cache slots and kv masks.
    """

    def __init__(self, vocab: int = 16, dim: int = 8, max_pos: int = 128, *, rngs: nnx.Rngs):
        init = lambda *shape: nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32))  # noqa: E731
        self.embed, self.ctx, self.out, self.pos_bias = init(vocab, dim), init(vocab, dim), init(dim, vocab), \
            init(max_pos, vocab)

    def _head(self, tokens, ctx_mean, positions):
        return (self.embed[...][tokens] + ctx_mean) @ self.out[...] + self.pos_bias[...][positions]

    def __call__(self, input_ids, attention_mask=None):
        mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        ctx = self.ctx[...][input_ids] * mask[..., None]
        mean = jnp.cumsum(ctx, axis=1) / jnp.maximum(jnp.cumsum(mask, axis=1), 1)[..., None]
        return self._head(input_ids, mean, positions)

    def init_cache(self, batch_size, max_len):
        return {"c": jnp.zeros((batch_size, max_len, self.ctx.shape[1]), jnp.float32)}

    def prefill(self, input_ids, attention_mask, cache, last_only=False):
        ctx = self.ctx[...][input_ids] * attention_mask[..., None]
        logits = self(input_ids, attention_mask)
        return logits[:, -1] if last_only else logits, {"c": cache["c"].at[:, :input_ids.shape[1]].set(ctx)}

    def decode_step(self, tokens, positions, cache_index, kv_mask, cache):
        new = self.ctx[...][tokens]
        if jnp.ndim(cache_index) == 1:  # per-row slots (continuous scheduler)
            c = cache["c"].at[jnp.arange(tokens.shape[0]), cache_index].set(new)
        else:
            c = jax.lax.dynamic_update_slice_in_dim(cache["c"], new[:, None], cache_index, axis=1)
        w = kv_mask.astype(jnp.float32)[..., None]
        mean = jnp.sum(c * w, axis=1) / jnp.sum(w, axis=1)
        return self._head(tokens, mean, positions), {"c": c}


PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7], [2]]


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full float32 matmuls (no TF32 on GPU), so the 1e-5 log-prob checks hold on any backend."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def toy():
    return ToyDecoder(rngs=nnx.Rngs(0))


SCHEDULERS = ("static", "continuous")


def make_sampler(model, scheduler, batch_buckets, **kw):
    """The continuous sampler gets a quarter of the slots (at least 2), refilled 2 rows at a time, queues of one
    slot count per call and at most 3 steps per call, so the tests exercise refills, queue hand-overs, resumed
    calls and slot reuse."""
    if scheduler == "continuous":
        kw = dict(kw, decode_steps=3, queue_slots=1, refill_rows=kw.pop("refill_rows", 2))
        batch_buckets = [max(2, b // 4) for b in batch_buckets]
    return JaxSampler(model, pad_id=0, batch_buckets=batch_buckets, scheduler=scheduler, **kw)


@pytest.fixture(scope="module", params=SCHEDULERS)
def toy_sampler(toy, request):
    return make_sampler(toy, request.param, [16], max_prompt_len=16, max_new_tokens_limit=16)


FORWARD_LEN = 32


@jax.jit
def _forward(graphdef, state, seq):
    return nnx.merge(graphdef, state)(seq)


def forward_logits(model, seq):
    """Full-forward logits [len(seq), V] of one sequence, right-padded to a fixed length (one compile).

    Right padding cannot change earlier positions of a causal model, so the first len(seq) rows are exact.
    """
    padded = np.zeros((1, FORWARD_LEN), np.int32)
    padded[0, :len(seq)] = seq
    graphdef, state = nnx.split(model)
    return np.asarray(_forward(graphdef, state, jnp.asarray(padded)), np.float64)[0, :len(seq)]


def full_forward_logps(model, prompt, completion):
    """Teacher-forced raw log-probs of ``completion`` after ``prompt`` from one full forward (float64 softmax)."""
    logits = forward_logits(model, prompt + completion[:-1])[len(prompt) - 1:]
    return special.log_softmax(logits, axis=-1)[np.arange(len(completion)), completion]


def greedy_reference(model, prompt, steps, stop_ids=()):
    """Step-by-step argmax of the full forward re-run on the growing sequence."""
    seq = list(prompt)
    for _ in range(steps):
        tok = int(np.argmax(forward_logits(model, seq)[-1]))
        seq.append(tok)
        if tok in stop_ids:
            break
    return seq[len(prompt):]


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


# ----------------------------------------------------------------------------------------------------------
# Part 2: the real decoder (tiny Qwen3 preset, float32), one sampler and one compile shared by the tests.

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
# Part 3: static vs continuous, request by request.

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
