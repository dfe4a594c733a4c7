"""Objective properties: the PSR/NSR decomposition, W-REINFORCE(1) = REINFORCE, exact -N masking, the aggregation
weights against hand computations, exact masking, exact micro-batch accumulation, finiteness on degenerate
batches, the advantage estimators and the registry (float64 for this module only)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import (AGG_MODES, OBJECTIVES, ObjectiveHParams, advantages, aggregate_sum,
                                 get_objective, hparams_from_config, loss_denominator, loss_value,
                                 summarize_metrics, token_weights)
from rlvr_jax.config.presets import preset_hparams


def default_hparams(name, **overrides):
    """The preset's hyper-parameters of ``name`` (rlvr_jax.config.presets, the only source) with overrides."""
    return preset_hparams(name).replace(**overrides)


pytestmark = pytest.mark.usefixtures("float64_module")


def make_batch(seed, b=6, t=7, *, pm_one=False, ratio_noise=0.1):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
    logp = -rng.random((b, t)) * 4
    adv = np.where(rng.random(b) < 0.5, -1.0, 1.0) if pm_one else rng.normal(size=b)
    return dict(
        logp=jnp.asarray(logp),
        old_logp=jnp.asarray(logp + rng.normal(size=(b, t)) * ratio_noise),
        ref_logp=jnp.asarray(logp + rng.normal(size=(b, t)) * 0.2),
        entropy=jnp.asarray(rng.random((b, t)) * 2),
        mask=jnp.asarray(mask),
        advantages=jnp.asarray(adv[:, None] * mask),
        # SimKO's inputs (objectives/simko.py): the top-3 log-prob sum and the top-1 flag
        topk_logp_sum=jnp.asarray(-rng.random((b, t)) * 6), is_top1=jnp.asarray(rng.random((b, t)) < 0.5) * 1.0,
    )


@functools.partial(jax.jit, static_argnames=("configs",))
def _evaluate(batch, *, configs):
    def one(name, hp):
        def f(logp, ent):
            out = get_objective(name)({**batch, "logp": logp, "entropy": ent}, hp)
            return out.loss_sum, out

        (_, out), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(batch["logp"], batch["entropy"])
        return out, grads

    return tuple(one(name, hp) for name, hp in configs)


def evaluate(batch, configs):
    """[(LossOutput, (d loss_sum/d logp, d loss_sum/d entropy))] for each (name, hp), one compile per shape."""
    return _evaluate(batch, configs=tuple(configs))


def value_and_grads(batch, *, name, hp):
    return evaluate(batch, [(name, hp)])[0]


FORMS = ("clipped", "logprob", "prob")


@pytest.mark.parametrize("form", FORMS)
def test_psr_plus_nsr_is_reinforce_and_w_reinforce_lambda_one(form):
    batch = make_batch(1, pm_one=True)
    hp = ObjectiveHParams(form=form)
    configs = [(n, hp) for n in ("psr", "nsr", "reinforce")]
    configs += [("w_reinforce", hp.replace(lam=1.0)), ("w_reinforce", hp.replace(lam=0.1))]
    (psr, g_psr), (nsr, g_nsr), (rf, g_rf), (w1, g_w1), (w, g_w) = evaluate(batch, configs)
    np.testing.assert_allclose(psr.loss_sum + nsr.loss_sum, rf.loss_sum, rtol=1e-14)
    np.testing.assert_allclose(g_psr[0] + g_nsr[0], g_rf[0], rtol=1e-14, atol=0)
    assert psr.denom == nsr.denom == rf.denom
    assert float(psr.metrics["n_kept"] + nsr.metrics["n_kept"]) == float(rf.metrics["n_tokens"])
    assert float(w1.loss_sum) == float(rf.loss_sum) and np.array_equal(g_w1[0], g_rf[0])
    # lambda = 0.1 scales exactly the positive part: L_W = 0.1 L_PSR + L_NSR.
    np.testing.assert_allclose(w.loss_sum, 0.1 * psr.loss_sum + nsr.loss_sum, rtol=1e-13)
    np.testing.assert_allclose(g_w[0], 0.1 * g_psr[0] + g_nsr[0], rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("neg_name,full_name", [("grpo_n", "grpo"), ("gspo_n", "gspo")])
def test_negative_only_variants_zero_positive_tokens_exactly(neg_name, full_name):
    batch = make_batch(2, ratio_noise=0.05)
    hp = ObjectiveHParams(clip_eps_low=0.2, clip_eps_high=0.28)
    (neg, (g_neg, _)), (full, (g_full, _)) = evaluate(batch, [(neg_name, hp), (full_name, hp)])
    adv = np.asarray(batch["advantages"])
    pos = adv > 0
    assert pos.any() and (adv < 0).any()
    assert np.all(np.asarray(g_neg)[pos] == 0.0)  # exactly zero from positive-advantage tokens
    if neg_name == "grpo_n":  # token ratio: negative tokens identical to GRPO's
        assert np.array_equal(np.asarray(g_neg)[adv < 0], np.asarray(g_full)[adv < 0])
    # Removing the positive sequences' advantages changes nothing for the -N loss.
    zeroed, (g_zeroed, _) = value_and_grads({**batch, "advantages": jnp.asarray(np.minimum(adv, 0))},
                                            name=full_name, hp=hp)
    np.testing.assert_allclose(neg.loss_sum, zeroed.loss_sum, rtol=1e-14)
    np.testing.assert_allclose(g_neg, g_zeroed, rtol=1e-14, atol=0)
    assert float(neg.metrics["n_kept"]) == float(np.sum(adv < 0))


# Hand computation for mask rows of lengths 3, 1, 0 (batch padding) and 4; L = 10 for Dr.GRPO.
HAND_MASK = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
HAND_WEIGHTS = {
    "token-mean": np.where(HAND_MASK, 1 / 8, 0),
    "seq-mean-token-mean": np.array([[1 / 9] * 3 + [0], [1 / 3, 0, 0, 0], [0] * 4, [1 / 12] * 4]),
    "seq-mean-token-sum": np.where(HAND_MASK, 1 / 3, 0),
    "seq-mean-token-sum-norm": np.where(HAND_MASK, 1 / 30, 0),
}
HAND_DENOMS = {"token-mean": 8, "seq-mean-token-mean": 3, "seq-mean-token-sum": 3, "seq-mean-token-sum-norm": 30}


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregation_weights_match_hand_computation(mode):
    rng = np.random.default_rng(4)
    per_token = rng.normal(size=HAND_MASK.shape)
    num = float(aggregate_sum(jnp.asarray(per_token), HAND_MASK, mode))
    den = float(loss_denominator(HAND_MASK, mode, max_len=10))
    assert den == HAND_DENOMS[mode]
    np.testing.assert_allclose(token_weights(HAND_MASK, mode, max_len=10, dtype=jnp.float64), HAND_WEIGHTS[mode],
                               rtol=1e-15)
    np.testing.assert_allclose(num / den, np.sum(HAND_WEIGHTS[mode] * per_token), rtol=1e-14)
    # Through an objective: d loss / d logp_{i,t} = -A w_{i,t} for REINFORCE's log-prob form with A = 1.
    b = dict(logp=jnp.asarray(-rng.random(HAND_MASK.shape)), mask=jnp.asarray(HAND_MASK),
             advantages=jnp.asarray(HAND_MASK * 1.0))
    hp = ObjectiveHParams(form="logprob", agg_mode=mode, agg_max_len=10)
    g = jax.grad(lambda lp: loss_value(get_objective("reinforce")({**b, "logp": lp}, hp)))(b["logp"])
    np.testing.assert_allclose(g, -HAND_WEIGHTS[mode], rtol=1e-14, atol=0)


def test_masked_tokens_contribute_exactly_zero():
    """Garbage (inf / nan) in masked positions changes neither loss, metrics nor gradients; their gradient is 0."""
    batch = make_batch(5)
    mask = np.asarray(batch["mask"])
    assert (mask == 0).any()
    configs = [(n, default_hparams(n, kl_coef=0.01, entropy_coef=0.01, agg_mode="seq-mean-token-mean"))
               for n in OBJECTIVES]
    garbage = {k: jnp.where(batch["mask"] != 0, batch[k], v) for k, v in
               (("logp", -jnp.inf), ("old_logp", jnp.nan), ("ref_logp", jnp.inf), ("entropy", jnp.nan),
                ("advantages", jnp.nan))}
    clean, dirty = evaluate(batch, configs), evaluate({**batch, **garbage}, configs)
    for (name, _), (out, grads), (out2, grads2) in zip(configs, clean, dirty):
        assert float(out.loss_sum) == float(out2.loss_sum) and float(out.denom) == float(out2.denom), name
        for g, g2 in zip(grads, grads2):
            assert np.all(np.asarray(g2)[mask == 0] == 0.0) and np.array_equal(g, g2), name
        for k in out.metrics:
            assert float(out.metrics[k]) == float(out2.metrics[k]), (name, k)


def test_microbatch_accumulation_is_exact():
    """sum_k loss_sum_k / sum_k denom_k equals the full-batch loss, and so do the gradients and metric sums, for
    every objective and aggregation mode (micro-batches of 2 sequences, one of them fully masked)."""
    batch = make_batch(6, b=8, t=5)
    batch["mask"] = batch["mask"].at[5].set(0)
    splits = [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    configs = [(n, default_hparams(n, kl_coef=0.01, entropy_coef=0.001, agg_mode=mode, agg_max_len=6))
               for n in OBJECTIVES for mode in AGG_MODES]
    full = evaluate(batch, configs)
    parts = [evaluate({k: v[s] for k, v in batch.items()}, configs) for s in splits]
    for c, (name, hp) in enumerate(configs):
        out, (g_full, _) = full[c]
        den = float(loss_denominator(batch["mask"], hp.agg_mode, max_len=6))
        assert float(out.denom) == den
        micro = [p[c] for p in parts]
        num = sum(float(o.loss_sum) for o, _ in micro)
        np.testing.assert_allclose(num / den, float(out.loss_sum) / den, rtol=1e-13, err_msg=f"{name} {hp.agg_mode}")
        assert sum(float(o.denom) for o, _ in micro) == den
        np.testing.assert_allclose(np.concatenate([g for _, (g, _) in micro]), g_full, rtol=1e-13, atol=1e-300)
        for k in out.metrics:
            np.testing.assert_allclose(sum(float(o.metrics[k]) for o, _ in micro), float(out.metrics[k]),
                                       rtol=1e-12, atol=1e-15, err_msg=f"{name}:{k}")


DEGENERATE = {
    "all_masked": (np.zeros((3, 4), np.int32),),
    "single_token": (np.array([[0, 0, 1, 0]], np.int32),),
    "length_one": (np.ones((4, 1), np.int32),),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_every_objective_finite_on_degenerate_batches(case):
    (mask,) = DEGENERATE[case]
    rng = np.random.default_rng(8)
    b = dict(logp=jnp.asarray(-rng.random(mask.shape) * 3), old_logp=jnp.asarray(-rng.random(mask.shape) * 3),
             ref_logp=jnp.asarray(-rng.random(mask.shape)), entropy=jnp.asarray(rng.random(mask.shape)),
             mask=jnp.asarray(mask), advantages=jnp.asarray(rng.normal(size=mask.shape)),
             topk_logp_sum=jnp.asarray(-rng.random(mask.shape) * 5), is_top1=jnp.ones(mask.shape))
    configs = [(n, default_hparams(n, kl_coef=0.01, entropy_coef=0.01, agg_mode=mode))
               for n in OBJECTIVES for mode in AGG_MODES]
    for out, (g, g_ent) in evaluate(b, configs):
        assert np.isfinite(float(loss_value(out))) and np.all(np.isfinite(g)) and np.all(np.isfinite(g_ent))
        if case == "all_masked":
            assert float(out.loss_sum) == 0.0 and float(out.denom) == 0.0 and not np.any(g)
        else:
            assert float(out.denom) > 0
        m = summarize_metrics(out.metrics)
        assert all(np.isfinite(v) for v in m.values()) and m["n_tokens"] == mask.sum()


def test_kl_estimators_values_and_kl_only_in_kl_objectives():
    batch = make_batch(9)
    d = np.asarray(batch["ref_logp"] - batch["logp"])
    m = np.asarray(batch["mask"]) != 0
    want = {"k1": -d, "k2": 0.5 * d * d, "k3": np.exp(d) - d - 1}
    for est, w in want.items():
        hp = ObjectiveHParams(kl_coef=0.5, kl_estimator=est)
        out = get_objective("grpo")({**batch, "advantages": jnp.zeros_like(batch["logp"])}, hp)
        np.testing.assert_allclose(float(out.metrics["kl"]), np.sum(w[m]), rtol=1e-13)
        np.testing.assert_allclose(float(out.loss_sum), 0.5 * np.sum(w[m]), rtol=1e-13)  # token-mean numerator
    assert np.all(want["k3"] >= 0)
    hp = ObjectiveHParams(kl_coef=0.5)
    for name in ("ppo", "dapo", "psr", "nsr", "w_reinforce", "reinforce"):  # KL never in these losses
        a = get_objective(name)(batch, hp)
        b = get_objective(name)(batch, hp.replace(kl_coef=0.0))
        assert float(a.loss_sum) == float(b.loss_sum), name
    with pytest.raises(KeyError, match="ref_logp"):
        get_objective("grpo")({k: v for k, v in batch.items() if k != "ref_logp"}, hp)


def test_metrics_clipfrac_and_ppo_kl():
    logp = jnp.log(jnp.asarray([[0.5, 0.5, 0.5, 0.5]]))
    ratios = np.array([[0.5, 1.0, 1.3, 2.0]])
    batch = dict(logp=logp, old_logp=logp - jnp.log(jnp.asarray(ratios)), mask=jnp.ones((1, 4)),
                 advantages=jnp.asarray([[-1.0, 1.0, 1.0, 1.0]]))
    out = get_objective("ppo")(batch, ObjectiveHParams(clip_eps_low=0.2))
    s = summarize_metrics(out.metrics)
    assert s["pg_clipfrac"] == 0.75  # r=0.5 with A<0, r=1.3 and r=2 with A>0
    np.testing.assert_allclose(s["ppo_kl"], np.mean(-np.log(ratios)), rtol=1e-14)
    np.testing.assert_allclose(s["pg_loss"], np.mean([0.8, -1.0, -1.2, -1.2]), rtol=1e-14)


def test_group_normalized_advantages():
    rng = np.random.default_rng(10)
    r = rng.integers(0, 2, size=(5, 8)).astype(float)
    r[0] = 1.0  # all-correct group
    got = np.asarray(advantages.group_normalized_advantages(jnp.asarray(r.reshape(-1)), 8, eps=1e-6))
    mean, std = r.mean(1, keepdims=True), r.std(1, ddof=1, keepdims=True)
    want = (r - mean) / (std + 1e-6)
    want[0] = 0.0
    np.testing.assert_allclose(got.reshape(5, 8), want, rtol=1e-13, atol=0)
    assert np.all(got[:8] == 0.0)
    np.testing.assert_allclose(advantages.group_normalized_advantages(jnp.asarray(r.reshape(-1)), 8,
                                                                      scale_by_std=False).reshape(5, 8),
                               r - mean, rtol=1e-14)
    with pytest.raises(ValueError, match="group_size=3"):
        advantages.group_normalized_advantages(jnp.ones(8), 3)


def test_gae_matches_reference_loop():
    rng = np.random.default_rng(12)
    b, t, gamma, lam = 3, 6, 0.9, 0.8
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]])
    rewards, values = rng.normal(size=(b, t)), rng.normal(size=(b, t))
    adv, ret = advantages.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma, lam)
    want = np.zeros((b, t))
    for i in range(b):
        idx = np.flatnonzero(mask[i])
        next_v = next_a = 0.0
        for j in idx[::-1]:
            delta = rewards[i, j] + gamma * next_v - values[i, j]
            next_a = delta + gamma * lam * next_a
            next_v = values[i, j]
            want[i, j] = next_a
    np.testing.assert_allclose(adv, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ret, np.where(mask, want + values, 0), rtol=1e-13, atol=1e-15)
    # gamma = lam = 1 with the reward on the last token and zero values: A_t = outcome reward everywhere.
    shaped = advantages.kl_shaped_rewards(jnp.asarray([2.0, -1.0, 0.5]), jnp.zeros((b, t)), jnp.zeros((b, t)),
                                          jnp.asarray(mask), kl_coef=0.1)
    a1, _ = advantages.gae(shaped, jnp.zeros((b, t)), jnp.asarray(mask), 1.0, 1.0)
    np.testing.assert_allclose(a1, mask * np.array([2.0, -1.0, 0.5])[:, None], rtol=1e-14)
    raw = advantages.raw_reward_advantages(jnp.asarray([1.0, -1.0, 1.0]), jnp.asarray(mask))
    np.testing.assert_array_equal(raw, mask * np.array([1.0, -1.0, 1.0])[:, None])


def test_registry_and_hparam_validation():
    assert set(OBJECTIVES) == {"psr", "nsr", "w_reinforce", "reinforce", "ppo", "grpo", "dapo", "gspo", "grpo_n",
                               "gspo_n", "grpo_unlikely", "grpo_gated", "nsr_gated", "simko"}
    with pytest.raises(ValueError, match="'grpo_p'"):
        get_objective("grpo_p")
    assert preset_hparams("w_reinforce").lam == 0.1
    assert preset_hparams("dapo").eps_high == 0.28 and preset_hparams("dapo").kl_coef == 0.0
    for bad, match in ((dict(form="ratio"), "'ratio'"), (dict(agg_mode="mean"), "'mean'"),
                       (dict(kl_estimator="k4"), "'k4'"), (dict(clip_eps_low=-0.1), "-0.1"),
                       (dict(lam=-1.0), "-1.0"), (dict(agg_max_len=0), "agg_max_len")):
        with pytest.raises(ValueError, match=match):
            ObjectiveHParams(**bad)
    with pytest.raises(ValueError, match="'token-sum'"):
        loss_denominator(np.ones((2, 2)), "token-sum")
    with pytest.raises(KeyError, match="entropy"):
        b = make_batch(0)
        get_objective("psr")({k: v for k, v in b.items() if k != "entropy"}, ObjectiveHParams(entropy_coef=0.1))


def test_hparams_from_config():
    from rlvr_jax.config.base import get_base_config
    from rlvr_jax.config.presets import set_algorithm

    hp = hparams_from_config(set_algorithm(get_base_config(), "dapo"))
    assert (hp.form, hp.clip_eps_low, hp.eps_high, hp.kl_coef) == ("clipped", 0.2, 0.28, 0.0)
    hp = hparams_from_config(set_algorithm(get_base_config(), "ppo"))
    assert hp.kl_coef == 0.0  # PPO's KL goes into the reward
    c = set_algorithm(get_base_config(), "grpo")
    hp = hparams_from_config(c)
    assert (hp.kl_coef, hp.kl_estimator, hp.agg_mode, hp.agg_max_len) == (1e-3, "k3", "token-mean",
                                                                           c.rollout.max_new_tokens)
    assert (hp.log_ratio_clamp, hp.clip_ratio_c, hp.kl_value_clamp) == (20.0, None, 10.0)  # 0 = off
    from rlvr_jax.trainer.learner import LearnerOptions
    assert LearnerOptions.from_config(c, 1).hp == hp  # the learner builds them with the same one function
    c = set_algorithm(get_base_config(), "w_reinforce")
    c.algo.form, c.algo.clip_ratio_c = "logprob", 3.0
    hp = hparams_from_config(c)
    assert (hp.form, hp.lam, hp.clip_ratio_c) == ("logprob", 0.1, 3.0)
    c.algo.form = "bogus"
    with pytest.raises(ValueError, match="'bogus'"):
        hparams_from_config(c)
