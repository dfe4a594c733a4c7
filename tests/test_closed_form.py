"""The closed-form logit gradients (rlvr_jax.objectives.closed_form) against jax.grad through the registered
objectives, in float64 (x64 is enabled for this module only).

Each case draws random logits z [B, T, V], sampled tokens y, advantages of both signs, for several vocab sizes
(V = 2, a random small V, and a random V >= 1000) and many seeds at once (the seeds are the B*T tokens).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import ObjectiveHParams, closed_form, get_objective

RTOL = 1e-10
_rng = np.random.default_rng(20240611)
VOCABS = (2, int(_rng.integers(3, 64)), int(_rng.integers(1000, 1600)))


pytestmark = pytest.mark.usefixtures("float64_module")


def assert_rel_close(got, want, rtol=RTOL):
    """Per token: max_v |got - want| <= rtol * max_v |want| (and exact zeros where want is all zero)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == np.float64 and got.shape == want.shape
    err = np.max(np.abs(got - want), axis=-1)
    scale = np.max(np.abs(want), axis=-1)
    bad = err > rtol * scale
    assert not bad.any(), f"max rel err {np.max(err / np.maximum(scale, 1e-300)):.3e} at {np.argwhere(bad)[:3]}"


def make_case(seed, v, b=8, t=16, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, t, v)) * scale
    pi = np.exp(z - z.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    y = np.minimum(np.sum(np.cumsum(pi, -1) < rng.random((b, t, 1)), -1), v - 1)  # y ~ pi (inverse CDF)
    adv = rng.normal(size=(b, t))
    adv[adv == 0] = 1.0
    sign = np.where(rng.random((b, t)) < 0.5, -1.0, 1.0)
    return jnp.asarray(z), jnp.asarray(y), jnp.asarray(adv), jnp.asarray(sign)


def logp_of(z, y):
    return jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), y[..., None], axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("configs", "with_entropy"))
def _grads(z, y, adv, old, ref, *, configs, with_entropy):
    mask = jnp.ones(y.shape, jnp.int32)

    def loss_sum(zz, name, hp):
        batch = dict(logp=logp_of(zz, y), old_logp=old, mask=mask, advantages=adv, ref_logp=ref)
        if with_entropy:
            lp = jax.nn.log_softmax(zz, axis=-1)
            batch["entropy"] = -jnp.sum(jnp.exp(lp) * lp, axis=-1)
        return get_objective(name)(batch, hp).loss_sum

    return tuple(jax.grad(loss_sum)(z, name, hp) for name, hp in configs)


def grads_wrt_logits(configs, z, y, adv, *, old_logp=None, ref_logp=None, with_entropy=False):
    """d loss_sum / dz for each (name, hp) in ``configs`` (token-mean, all tokens valid, so loss_sum = sum_t l_t),
    in one compiled call. old_logp defaults to the current log-probs (ratio exactly 1)."""
    old = logp_of(z, y) if old_logp is None else old_logp
    ref = old if ref_logp is None else ref_logp
    return _grads(z, y, adv, old, ref, configs=tuple(configs), with_entropy=with_entropy)


def grad_wrt_logits(name, hp, z, y, adv, **kwargs):
    return grads_wrt_logits(((name, hp),), z, y, adv, **kwargs)[0]


@pytest.mark.parametrize("v", VOCABS)
def test_eq6_prob_loss_gradient(v):
    """Eq. 6: dL/dz_v = -R pi_v (1 - pi_v) on y_t, R pi_v pi_y elsewhere; PSR/NSR give Eq. 7/8 directions."""
    hp = ObjectiveHParams(form="prob")
    for seed in range(3):
        z, y, _, sign = make_case(100 * v + seed, v)
        want = closed_form.prob_loss_logit_grad(z, y, sign)
        g_all, g_psr, g_nsr = grads_wrt_logits([(n, hp) for n in ("reinforce", "psr", "nsr")], z, y, sign)
        assert_rel_close(g_all, want)
        pos = np.asarray(sign) > 0
        assert_rel_close(g_psr[pos], want[pos])
        assert_rel_close(g_nsr[~pos], want[~pos])
        assert np.all(np.asarray(g_psr)[~pos] == 0) and np.all(np.asarray(g_nsr)[pos] == 0)
        # Element-wise form of Appendix B and the signs of Eq. 7 (PSR) / Eq. 8 (NSR) descent directions.
        pi = np.asarray(jax.nn.softmax(z, -1))
        onehot = np.eye(v, dtype=bool)[np.asarray(y)]
        pi_y = np.take_along_axis(pi, np.asarray(y)[..., None], -1)
        r = np.asarray(sign)[..., None]
        hand = np.where(onehot, -r * pi * (1 - pi), r * pi * pi_y)
        assert_rel_close(want, hand)
        descent = -np.asarray(want)
        assert np.all(descent[onehot & pos[..., None]] >= 0) and np.all(descent[~onehot & pos[..., None]] <= 0)
        assert np.all(descent[onehot & ~pos[..., None]] <= 0) and np.all(descent[~onehot & ~pos[..., None]] >= 0)


CLIPPED_AT_RATIO_ONE = [
    ("reinforce", ObjectiveHParams(form="logprob"), lambda a: a),
    ("reinforce", ObjectiveHParams(form="clipped"), lambda a: a),
    ("psr", ObjectiveHParams(form="clipped"), lambda a: np.where(a > 0, a, 0)),
    ("nsr", ObjectiveHParams(form="logprob"), lambda a: np.where(a < 0, a, 0)),
    ("w_reinforce", ObjectiveHParams(form="clipped", lam=0.1), lambda a: np.where(a > 0, 0.1 * a, a)),
    ("ppo", ObjectiveHParams(), lambda a: a),
    ("grpo", ObjectiveHParams(), lambda a: a),
    ("dapo", ObjectiveHParams(clip_eps_high=0.28), lambda a: a),
    ("gspo", ObjectiveHParams(clip_eps_low=3e-4, clip_eps_high=4e-4), lambda a: a),
    ("grpo_n", ObjectiveHParams(), lambda a: np.where(a < 0, a, 0)),
    ("gspo_n", ObjectiveHParams(), lambda a: np.where(a < 0, a, 0)),
]


@pytest.mark.parametrize("v", VOCABS)
def test_lemma1_logprob_and_clipped_ratio_at_one(v):
    """Lemma 1: d(A log pi_y)/dz = A (1 - pi_y) on y, -A pi_u elsewhere; every clipped loss matches at r = 1."""
    z, y, adv, _ = make_case(7 * v, v, b=8, t=8)
    pi = np.asarray(jax.nn.softmax(z, -1))
    onehot = np.eye(v, dtype=bool)[np.asarray(y)]
    a = np.asarray(adv)
    lemma = closed_form.logprob_objective_logit_grad(z, y, adv)
    pi_y = np.take_along_axis(pi, np.asarray(y)[..., None], -1)
    assert_rel_close(lemma, np.where(onehot, a[..., None] * (1 - pi_y), -a[..., None] * pi))
    j_grad = jax.jit(jax.grad(lambda zz: jnp.sum(adv * logp_of(zz, y))))(z)
    assert_rel_close(j_grad, lemma)
    grads = grads_wrt_logits([(name, hp) for name, hp, _ in CLIPPED_AT_RATIO_ONE], z, y, adv)
    for (name, _, weight), got in zip(CLIPPED_AT_RATIO_ONE, grads):
        want = -closed_form.logprob_objective_logit_grad(z, y, jnp.asarray(weight(a)))
        assert_rel_close(got, want)


@pytest.mark.parametrize("v", VOCABS)
def test_theorem1_expected_update_by_enumeration(v):
    """E_{u~pi}[A(u) grad log pi_u] = pi_v[(1 - pi_v) A(v) - sum_{u != v} pi_u A(u)], enumerating every u:
    one token per vocabulary entry, weighted by pi_u, through the REINFORCE objective."""
    rng = np.random.default_rng(31 * v)
    zs = jnp.asarray(rng.normal(size=(4, v)) * 2.0)  # 4 seeds
    advs = jnp.asarray(rng.normal(size=(4, v)))

    def through_objective(z, a_of):
        pi = jax.nn.softmax(z)
        u = jnp.arange(v)[None, :]

        def neg_loss(zz):
            zb = jnp.broadcast_to(zz, (1, v, v))
            batch = dict(logp=logp_of(zb, u), mask=jnp.ones((1, v)), advantages=(pi * a_of)[None, :])
            return -get_objective("reinforce")(batch, ObjectiveHParams(form="logprob")).loss_sum

        lemma_sum = jnp.sum(pi[:, None] * closed_form.logprob_objective_logit_grad(
            jnp.broadcast_to(z, (v, v)), jnp.arange(v), a_of), axis=0)
        return jax.grad(neg_loss)(z), lemma_sum, closed_form.expected_logit_update(pi, a_of)

    got, lemma_sum, want = jax.jit(jax.vmap(through_objective))(zs, advs)
    assert_rel_close(got, want)
    assert_rel_close(lemma_sum, want)  # direct sum over samples of Lemma 1 (independent of the objective code)


@pytest.mark.parametrize("v", VOCABS)
def test_entropy_gradient(v):
    """dH/dz_v = -pi_v (log pi_v - sum_u pi_u log pi_u); the entropy bonus adds -c dH/dz to the loss gradient."""
    z, y, _, _ = make_case(3 * v + 1, v, b=4, t=8)
    want = closed_form.entropy_logit_grad(z)

    def ent(zz):
        lp = jax.nn.log_softmax(zz, -1)
        return jnp.sum(-jnp.sum(jnp.exp(lp) * lp, -1))

    assert_rel_close(jax.jit(jax.grad(ent))(z), want)
    c = 0.37
    zero_adv = jnp.zeros(y.shape)
    names = ("reinforce", "grpo", "gspo_n")
    hp = ObjectiveHParams(entropy_coef=c)
    for got in grads_wrt_logits([(n, hp) for n in names], z, y, zero_adv, with_entropy=True):
        assert_rel_close(got, -c * want)


def test_nsr_sampled_token_step_vanishes_as_pi_to_one():
    """NSR's step on the sampled token: A (1 - pi_y) for the log-prob / ratio forms, pi_y (1 - pi_y) for Eq. 6;
    both shrink to 0 as pi_y -> 1 (relative check up to 1 - pi_y ~ 1e-3: beyond, 1 - pi_y itself is below the
    float64 resolution of pi_y and only the absolute smallness is checked)."""
    v = 50
    gaps = jnp.asarray([0.0, 1.0, 2.0, 5.0, 8.0, 20.0, 30.0])
    z = jnp.zeros((1, gaps.shape[0], v)).at[0, :, 0].set(gaps)
    y = jnp.zeros((1, gaps.shape[0]), jnp.int32)
    neg = -jnp.ones(y.shape)
    pi_y = np.asarray(jax.nn.softmax(z, -1)[0, :, 0])
    one_minus = (v - 1) / (np.exp(np.asarray(gaps)) + (v - 1))  # 1 - pi_y without cancellation
    forms = (("logprob", one_minus), ("clipped", one_minus), ("prob", pi_y * one_minus))
    grads = grads_wrt_logits([("nsr", ObjectiveHParams(form=f)) for f, _ in forms], z, y, neg)
    for (form, expect), g in zip(forms, grads):
        step = -np.asarray(g)[0, :, 0]  # the descent step on the sampled logit: negative (NSR lowers it)
        assert np.all(step < 0)
        np.testing.assert_allclose(-step[:5], expect[:5], rtol=RTOL)
        if form != "prob":  # pi (1 - pi) is not monotone on [0.5, 1) from below 0.5; 1 - pi is
            assert np.all(np.diff(np.abs(step)) < 0)
        assert np.all(np.diff(np.abs(step[3:])) < 0) and abs(step[-1]) < 1e-11


@pytest.mark.parametrize("name,eps_low,eps_high", [("ppo", 0.2, 0.2), ("dapo", 0.2, 0.28), ("psr", 0.2, 0.2),
                                                    ("grpo_n", 0.1, 0.3)])
def test_clipping_keeps_direction_inside_and_zeroes_outside(name, eps_low, eps_high):
    v = 11
    ratios = np.array([0.5, 0.79, 0.85, 1.0, 1.15, 1.21, 1.27, 1.3, 2.0])
    rng = np.random.default_rng(5)
    z = jnp.asarray(rng.normal(size=(2, ratios.size, v)))
    y = jnp.asarray(rng.integers(0, v, size=(2, ratios.size)))
    adv = jnp.asarray(np.stack([np.full(ratios.size, 0.7), np.full(ratios.size, -0.7)]))
    old = logp_of(z, y) - jnp.log(jnp.asarray(ratios))[None, :]
    hp = ObjectiveHParams(clip_eps_low=eps_low, clip_eps_high=eps_high)
    got = np.asarray(grad_wrt_logits(name, hp, z, y, adv, old_logp=old))
    want = np.asarray(closed_form.clipped_surrogate_logit_grad(z, y, adv, old, eps_low, eps_high))
    keep = {"psr": np.asarray(adv) > 0, "grpo_n": np.asarray(adv) < 0}.get(name, np.ones(adv.shape, bool))
    want = np.where(keep[..., None], want, 0.0)
    assert_rel_close(got, want)
    unclipped_dir = -np.asarray(closed_form.logprob_objective_logit_grad(z, y, adv))
    for i in range(2):
        for j, r in enumerate(ratios):
            a = float(adv[i, j])
            outside = (a > 0 and r > 1 + eps_high) or (a < 0 and r < 1 - eps_low)
            if not keep[i, j] or outside:
                assert np.all(got[i, j] == 0.0), (name, a, r)
            else:  # same direction as the on-policy gradient, scaled by the ratio r
                np.testing.assert_allclose(got[i, j], r * unclipped_dir[i, j], rtol=1e-12, atol=1e-15)


def test_gspo_token_form_equals_sequence_level_gspo():
    """With A_{i,t} = A_i and seq-mean-token-mean, GSPO-token = -(1/G) sum_i min(s_i A_i, clip(s_i) A_i)."""
    rng = np.random.default_rng(11)
    b, t = 6, 9
    mask = (np.arange(t)[None, :] < rng.integers(1, t + 1, size=b)[:, None]).astype(np.float64)
    logp = jnp.asarray(-rng.random((b, t)) * 3)
    old = logp + jnp.asarray(rng.normal(size=(b, t)) * 0.05)
    seq_adv = rng.normal(size=b)
    adv = jnp.asarray(seq_adv[:, None] * mask)
    eps_l, eps_h = 0.01, 0.02
    hp = ObjectiveHParams(clip_eps_low=eps_l, clip_eps_high=eps_h, agg_mode="seq-mean-token-mean")

    def token_form(lp):
        out = get_objective("gspo")(dict(logp=lp, old_logp=old, mask=mask, advantages=adv), hp)
        return out.loss_sum / out.denom

    def sequence_form(lp):
        m = jnp.asarray(mask)
        s = jnp.exp(jnp.sum(m * (lp - old), 1) / jnp.sum(m, 1))
        a = jnp.asarray(seq_adv)
        return -jnp.mean(jnp.minimum(s * a, jnp.clip(s, 1 - eps_l, 1 + eps_h) * a))

    (l_tok, g_tok), (l_seq, g_seq) = jax.jit(
        lambda lp: (jax.value_and_grad(token_form)(lp), jax.value_and_grad(sequence_form)(lp)))(logp)
    np.testing.assert_allclose(l_tok, l_seq, rtol=1e-13)
    np.testing.assert_allclose(g_tok, g_seq, rtol=1e-12, atol=1e-16)
    assert np.any(np.asarray(g_seq) == 0) and np.any(np.asarray(g_seq) != 0)  # some sequences clipped, some not


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimator_gradients(estimator):
    rng = np.random.default_rng(3)
    b, t, v = 4, 6, 9
    z = jnp.asarray(rng.normal(size=(b, t, v)))
    y = jnp.asarray(rng.integers(0, v, size=(b, t)))
    ref = logp_of(z, y) + jnp.asarray(rng.normal(size=(b, t)) * 0.3)
    beta = 0.05
    hp = ObjectiveHParams(kl_coef=beta, kl_estimator=estimator)
    got = grad_wrt_logits("grpo", hp, z, y, jnp.zeros((b, t)), ref_logp=ref)
    dlogp = closed_form.kl_estimator_logp_grad(logp_of(z, y), ref, estimator)
    want = closed_form.logprob_objective_logit_grad(z, y, beta * dlogp)
    assert_rel_close(got, want)


@pytest.mark.parametrize("v", VOCABS)
def test_truncated_importance_weight_scales_the_policy_gradient_only(v):
    """Identity 6 (token_tis): with w_t = min(pi_old / pi_rollout, C) the gradient of every objective is w_t times
    its unweighted closed form (clipped ratio off 1, log-prob and Eq. 6 forms); the KL term is not weighted."""
    from rlvr_jax.trainer.rollout_correction import token_tis_weights
    z, y, adv, sign = make_case(41 * v, v, b=6, t=10)
    rng = np.random.default_rng(v)
    cur = logp_of(z, y)
    old = cur - jnp.asarray(rng.normal(size=cur.shape) * 0.1)  # ratio r != 1, some tokens clipped
    rollout = old - jnp.asarray(rng.normal(size=cur.shape) * 0.8)  # rho = pi_old / pi_rollout, some above C
    cap = 2.0
    w = closed_form.tis_weight(old, rollout, cap)  # float64 here; the trainer's host weights are float32:
    host = token_tis_weights(np.asarray(old), np.asarray(rollout), np.ones(cur.shape), cap)
    assert host.dtype == np.float32
    np.testing.assert_allclose(host, np.asarray(w), rtol=1e-6)
    assert np.any(np.asarray(w) == cap) and np.any(np.asarray(w) < 1.0)
    ref = cur + jnp.asarray(rng.normal(size=cur.shape) * 0.3)
    mask = jnp.ones(y.shape)

    def grad(name, hp, a, weights, with_ref=False):
        def loss(zz):
            batch = dict(logp=logp_of(zz, y), old_logp=old, mask=mask, advantages=a)
            if weights is not None:
                batch["rollout_is_weights"] = weights
            if with_ref:
                batch["ref_logp"] = ref
            return get_objective(name)(batch, hp).loss_sum
        return jax.jit(jax.grad(loss))(z)

    eps = 0.2
    assert_rel_close(grad("grpo", ObjectiveHParams(), adv, w),
                     closed_form.tis_clipped_surrogate_logit_grad(z, y, adv, old, rollout, cap, eps, eps))
    assert_rel_close(grad("reinforce", ObjectiveHParams(form="logprob"), adv, w),
                     -w[..., None] * closed_form.logprob_objective_logit_grad(z, y, adv))
    assert_rel_close(grad("nsr", ObjectiveHParams(form="prob"), sign, w),
                     w[..., None] * closed_form.prob_loss_logit_grad(z, y, jnp.where(sign < 0, sign, 0.0)))
    # KL penalty only (A = 0): the weight leaves it alone.
    beta = 0.05
    hp = ObjectiveHParams(kl_coef=beta, kl_estimator="k3")
    want = closed_form.logprob_objective_logit_grad(z, y, beta * closed_form.kl_estimator_logp_grad(cur, ref, "k3"))
    assert_rel_close(grad("grpo", hp, jnp.zeros(y.shape), w, with_ref=True), want)
