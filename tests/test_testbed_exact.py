"""rlvr_jax.testbed.exact: teacher-forced answer probabilities under the sampler's temperature and top-p.

A 1-layer model over a 6-token vocabulary is small enough to enumerate every output of up to 3 new tokens:
the exact probabilities are checked against a per-token numpy product of softmaxes with its own nucleus, they
sum to 1 over the enumerated output space, and the real sampler's frequencies (and pass@k) fall within
binomial intervals of them."""
import itertools

import numpy as np
import pytest

from rlvr_jax.testbed import exact as E

PAD, EOS, VOCAB, MAX_NEW = 0, 1, 6, 3
WORDS = (2, 3, 4, 5)
PROMPTS = ([2, 3, 4], [5, 2])


@pytest.fixture(scope="module")
def model():
    from helpers_models import tiny_decoder

    m = tiny_decoder(VOCAB, EOS, seed=3)
    m.embed.embedding.value = m.embed.embedding.value * 6.0   # peaked per-token distributions
    return m


def outputs():
    """Every output of at most MAX_NEW new tokens: (tokens before the stop, ends with the stop?)."""
    out = [(list(w), True) for n in range(MAX_NEW) for w in itertools.product(WORDS + (PAD,), repeat=n)]
    out += [(list(w), False) for w in itertools.product(WORDS + (PAD,), repeat=MAX_NEW)]
    return out


def nucleus_probs(logits, t, p):
    """Reference: softmax(logits / t), then keep the smallest descending prefix whose mass reaches p."""
    z = logits / t
    q = np.exp(z - z.max())
    q /= q.sum()
    order = np.argsort(-q, kind="stable")
    keep = np.zeros_like(q, bool)
    mass = 0.0
    for i in order:
        if mass < p or p >= 1.0:
            keep[i] = True
        mass += q[i]
    q = np.where(keep, q, 0.0)
    return q / q.sum()


_JIT = {}


def sequence_logits(model, ids):
    """Logits at every position of one unpadded sequence (jitted per length)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    if id(model) not in _JIT:
        gd, st = nnx.split(model)
        _JIT[id(model)] = (jax.jit(lambda st, x: nnx.merge(gd, st)(x)), st)
    fn, st = _JIT[id(model)]
    return np.asarray(fn(st, jnp.asarray([list(ids)], jnp.int32))[0], np.float64)


def reference_prob(model, prompt, toks, stop, t, p):
    """Product over the output's tokens of the nucleus softmax (numpy) of the unpadded sequence's logits."""
    seq = list(prompt) + list(toks)
    logits = sequence_logits(model, seq + ([EOS] if stop else []))
    prob = 1.0
    for j in range(len(toks) + int(stop)):
        q = nucleus_probs(logits[len(prompt) - 1 + j], t, p)
        prob *= q[toks[j]] if j < len(toks) else q[EOS]
    return prob


def exact_all(model, prompt, settings):
    outs = outputs()
    L = MAX_NEW
    toks = np.zeros((len(outs), L), np.int32)
    lens = np.array([len(o) for o, _ in outs], np.int32)
    for r, (o, _) in enumerate(outs):
        toks[r, :len(o)] = o
    stop = np.array([s for _, s in outs])
    with_stop = E.sequence_logprobs(model, [prompt] * len(outs), toks, lens, (EOS,), settings, batch_rows=64)
    prefix = E.sequence_logprobs(model, [prompt] * len(outs), toks, lens, (EOS,), settings, end_with_stop=False,
                                 batch_rows=64)
    return outs, np.exp(np.where(stop[None], with_stop, prefix))


SETTINGS = [(0.6, 0.9), (0.6, 1.0), (1.0, 1.0)]


def test_exact_equals_product_of_nucleus_softmaxes_and_sums_to_one(model):
    for prompt in PROMPTS:
        outs, probs = exact_all(model, prompt, SETTINGS)
        # the whole output space has probability 1 under every setting
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        # every output by hand (a random sample of them, plus the most likely ones)
        rng = np.random.default_rng(0)
        rows = set(rng.choice(len(outs), 12, replace=False).tolist()) | set(np.argsort(-probs[0])[:8].tolist())
        for s, (t, p) in enumerate(SETTINGS):
            for r in rows:
                ref = reference_prob(model, prompt, outs[r][0], outs[r][1], t, p)
                assert probs[s, r] == pytest.approx(ref, rel=2e-4, abs=1e-7), (prompt, outs[r], t, p)
        # the nucleus really cut something: outputs with mass at top-p 1 and none at top-p 0.9
        assert np.sum((probs[0] == 0) & (probs[1] > 1e-3)) > 0


def test_sampler_frequencies_and_pass_at_k_within_binomial_intervals(model):
    """The real sampler (rlvr_jax.rollout.jax_sampler) at T = 0.6, top-p 0.9 against the exact distribution."""
    from rlvr_jax.rollout import SamplingParams
    from rlvr_jax.rollout.jax_sampler import JaxSampler

    n = 2048
    t, p = SETTINGS[0]
    eng = JaxSampler(model, pad_id=PAD, eos_token_ids=(EOS,), max_batch_size=1024, max_new_tokens_limit=16,
                     scheduler="static")
    res = eng.generate(list(PROMPTS), n, SamplingParams(temperature=t, top_p=p, max_new_tokens=MAX_NEW,
                                                        stop_token_ids=(EOS,), seed=1))
    for prompt, comps in zip(PROMPTS, res):
        outs, probs = exact_all(model, prompt, [(t, p)])
        index = {(tuple(o), s): r for r, (o, s) in enumerate(outs)}
        counts = np.zeros(len(outs))
        for c in comps:
            stop = c.finish_reason == "stop"
            counts[index[(tuple(c.token_ids[:-1] if stop else c.token_ids), stop)]] += 1
        q = probs[0]
        sd = np.sqrt(n * q * (1 - q))
        assert np.all(np.abs(counts - n * q) <= 4.5 * sd + 1.5), "a sampled frequency is off its exact value"
        assert counts[q == 0].sum() == 0, "the sampler emitted an output the exact nucleus gives probability 0"
        # "correct" = the 3rd..6th most likely outputs: pass@4 from disjoint groups of 4 samples is Binomial
        correct_rows = set(np.argsort(-q)[2:6].tolist())
        hit = np.array([index[(tuple(c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids),
                               c.finish_reason == "stop")] in correct_rows for c in comps])
        pc = q[list(correct_rows)].sum()
        for k in (1, 4):
            groups = hit[: n // k * k].reshape(-1, k).any(axis=1)
            exact_pk = E.pass_at_k_curve(np.array([pc]), k)[k - 1]
            m = len(groups)
            assert abs(groups.sum() - m * exact_pk) <= 4.5 * np.sqrt(m * exact_pk * (1 - exact_pk)) + 1, (k, pc)


def test_pass_at_k_curve_closed_form():
    pk = E.pass_at_k_curve(np.array([0.0, 0.5, 1.0, 0.1]), 8)
    for k in range(1, 9):
        want = np.mean([0.0, 1 - 0.5 ** k, 1.0, 1 - 0.9 ** k])
        assert pk[k - 1] == pytest.approx(want, abs=1e-12)


def test_candidate_set_of_testbed_puzzles_and_metrics_add_up(model):
    from rlvr_jax.testbed import task as T
    from rlvr_jax.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    puzzles = [T.Puzzle((3, 8, 6), 30), T.Puzzle((7, 8, 3), 53), T.Puzzle((2, 2, 5), 9)]
    probs_in = T.to_problems(puzzles, "t")
    c = E.candidates(probs_in, tok)
    for i, pz in enumerate(puzzles):
        rows = np.where(c.puzzle == i)[0]
        assert [c.texts[r] for r in rows] == T.all_expressions(pz.numbers)
        assert {c.texts[r] for r in rows if c.correct[r]} == set(T.solutions(pz))
        for r in rows:
            assert tok.decode(c.tokens[r, :c.lengths[r]].tolist()) == T.response_text(c.texts[r], False)
            assert E.STRATEGY_NAMES[c.strategy[r]] == T.strategy(c.texts[r])
    assert c.rare_only.tolist() == [False, True, False]   # 53 = 7*8-3 only
    # metrics from made-up probabilities: masses add up, pass@k and entropy by hand
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(len(c.texts) + 1))[:-1] * 0.9
    m = E.distribution_metrics(probs, c, kmax=4)
    pc = np.array([probs[(c.puzzle == i) & c.correct].sum() for i in range(3)])
    rem = np.array([1 - probs[c.puzzle == i].sum() for i in range(3)])
    assert m["pass_at_k"][3] == pytest.approx(np.mean(1 - (1 - pc) ** 4))
    assert m["correct_mass"] == pytest.approx(pc.mean())
    assert sum(m["strategy_mass"].values()) + m["remaining_mass"] == pytest.approx(1.0)
    h = [-(probs[c.puzzle == i] * np.log(probs[c.puzzle == i])).sum() - rem[i] * np.log(rem[i]) for i in range(3)]
    assert m["answer_entropy"] == pytest.approx(np.mean(h))
    assert m["pass_at_k_rare_only"][0] == pytest.approx(pc[1])
    assert E.kl_base_policy(probs, probs, c) == pytest.approx(0.0, abs=1e-12)
    assert E.kl_base_policy(probs, probs * 0.5, c) > 0
