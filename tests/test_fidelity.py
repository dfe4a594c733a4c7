"""verl's options against hand computations (float64): PPO's whitened GAE advantages, the dual clip, the
log-ratio clamp, the KL-value clamp, and the seq-mean-token-sum-norm factor."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.config.presets import experiment, preset_hparams
from rlvr_jax.objectives import ObjectiveHParams, advantages, get_objective, kl_estimate, loss_value, terms
from rlvr_jax.batch import TrainBatch
from rlvr_jax.trainer.update_plan import compute_advantages

pytestmark = pytest.mark.usefixtures("float64_module")


def test_masked_whiten_matches_hand_computation():
    a = np.array([[1.0, 2.0, 3.0, 9.0], [-1.0, 0.5, 7.0, 7.0]])
    m = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    vals = [1.0, 2.0, 3.0, -1.0, 0.5]
    mu = sum(vals) / 5  # 1.1
    var = sum((v - mu) ** 2 for v in vals) / 4  # unbiased: 9.2 / 4
    expected = np.zeros_like(a)
    expected[m != 0] = [(v - mu) / np.sqrt(var + 1e-8) for v in vals]
    np.testing.assert_allclose(advantages.masked_whiten(a, m), expected, rtol=1e-14)
    assert mu == pytest.approx(1.1) and var == pytest.approx(2.3)
    with pytest.raises(ValueError, match="at least 2"):
        advantages.masked_whiten(a, np.eye(1, 4))


def test_ppo_preset_whitens_gae_over_the_batch_and_keeps_raw_returns():
    """compute_advantages for the PPO preset: GAE (gamma = lambda = 1) of the KL-shaped rewards, whitened over all
    valid tokens of the batch; returns = raw GAE + values, as verl's compute_gae_advantage_return."""
    cfg = experiment("ppo", "tiny")
    assert cfg.algo.whiten_advantages
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
    values = np.array([[0.1, 0.2, 0.3, 0], [0.5, -0.5, 0, 0], [0.0, 0.1, 0.2, 0.3]], np.float32)
    old = np.log(np.full((3, 4), 0.5)) * mask
    ref = old + 0.2 * mask

    class Critic:
        def compute_values(self, batch):
            return values

    batch = TrainBatch(prompt_ids=None, prompt_mask=None, response_ids=None, response_mask=mask, old_logp=old,
                       ref_logp=ref)
    rewards = np.array([1.0, -1.0, 1.0])
    batch, metrics = compute_advantages(cfg, rewards, rewards > 0, batch, Critic())
    adv = batch.advantages
    np.testing.assert_array_equal(batch.old_values, values)
    beta = cfg.algo.kl_coef  # k1 of (old, ref): log pi_old - log pi_ref = -0.2 on every token
    raw = np.zeros((3, 4))
    for i in range(3):
        n = int(mask[i].sum())
        tok_r = [0.2 * beta] * n
        tok_r[-1] += rewards[i]
        for t in range(n):  # gamma = lambda = 1: A_t = sum_{s >= t} r_s - V_t
            raw[i, t] = sum(tok_r[t:]) - values[i, t]
    vals = raw[mask != 0]
    expected = np.where(mask != 0, (raw - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8), 0)
    np.testing.assert_allclose(adv, expected, rtol=2e-6, atol=1e-6)  # advantages are stored as float32
    np.testing.assert_allclose(batch.returns, np.where(mask != 0, raw + values, 0), rtol=1e-5, atol=1e-6)
    assert abs(float(adv[mask != 0].mean())) < 1e-6
    assert metrics["critic/advantages_before_whiten/mean"] == pytest.approx(vals.mean(), rel=1e-5)


@pytest.mark.parametrize("name", ["ppo", "grpo", "nsr"])
def test_dual_clip_against_hand_computation(name):
    """For A < 0 the per-token loss is min(max(-r A, -clip(r) A), -c A): capped at -c A (zero gradient) once
    r > c; A > 0 tokens and r < c are unchanged."""
    c, eps = 3.0, 0.2
    r = np.array([0.5, 1.1, 2.0, 4.0, 10.0, 0.5, 4.0])
    a = np.array([-1.0, -1.0, -2.0, -1.0, -0.5, 1.0, 1.0])
    if name == "nsr":  # NSR keeps the negative tokens only
        a = -np.abs(a)
    old = np.zeros_like(r)[None]
    logp = jnp.asarray(np.log(r)[None])
    batch = dict(old_logp=jnp.asarray(old), mask=jnp.ones((1, r.size)), advantages=jnp.asarray(a[None]),
                 ref_logp=jnp.asarray(old))
    hp = ObjectiveHParams(clip_eps_low=eps, clip_ratio_c=c, agg_mode="token-mean")

    def hand(x):
        rr = np.exp(x)
        ppo = np.maximum(-rr * a, -np.clip(rr, 1 - eps, 1 + eps) * a)
        return np.where(a < 0, np.minimum(ppo, -c * a), ppo)

    f = lambda lp: loss_value(get_objective(name)({**batch, "logp": lp}, hp))  # noqa: E731
    np.testing.assert_allclose(f(logp), hand(np.log(r)).mean(), rtol=1e-14)
    g = np.asarray(jax.grad(f)(logp))[0]
    h = 1e-6
    fd = [(hand(np.log(r) + h * np.eye(r.size)[k]) - hand(np.log(r) - h * np.eye(r.size)[k])).mean() / (2 * h)
          for k in range(r.size)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-12)
    capped = (a < 0) & (r > c)
    assert capped.any() and np.all(g[capped] == 0)
    out = get_objective(name)({**batch, "logp": logp}, hp)
    assert float(out.metrics["pg_clipfrac_lower"]) == capped.sum()
    # without the option nothing is capped
    hp0 = hp.replace(clip_ratio_c=None)
    assert float(loss_value(get_objective(name)({**batch, "logp": logp}, hp0))) > float(f(logp))


def test_log_ratio_clamp_changes_nothing_below_20_and_caps_above():
    lp = jnp.asarray([[-1.0, -30.0, 0.0, -2.0]])
    old = jnp.asarray([[-1.5, -1.0, -25.0, -2.0]])
    m = jnp.ones((1, 4), bool)
    lr = terms.token_log_ratio(lp, old, m, 20.0)
    np.testing.assert_array_equal(lr, [[0.5, -20.0, 20.0, 0.0]])
    np.testing.assert_array_equal(terms.token_log_ratio(lp[:, ::3], old[:, ::3], m[:, ::3], 20.0),
                                  terms.token_log_ratio(lp[:, ::3], old[:, ::3], m[:, ::3], None))
    g = jax.grad(lambda x: jnp.sum(jnp.exp(terms.token_log_ratio(x, old, m, 20.0))))(lp)
    np.testing.assert_allclose(g, [[np.exp(0.5), 0.0, 0.0, 1.0]], rtol=1e-14)
    # through the preset (log_ratio_clamp = 20): the same loss as no clamp when |log r| < 20
    rng = np.random.default_rng(0)
    b = dict(logp=jnp.asarray(-rng.random((3, 5))), old_logp=jnp.asarray(-rng.random((3, 5))),
             mask=jnp.ones((3, 5)), advantages=jnp.asarray(rng.normal(size=(3, 1)) * np.ones((3, 5))),
             entropy=jnp.ones((3, 5)))
    hp = preset_hparams("grpo").replace(kl_coef=0.0)
    assert hp.log_ratio_clamp == 20.0
    assert float(loss_value(get_objective("grpo")(b, hp))) == float(
        loss_value(get_objective("grpo")(b, hp.replace(log_ratio_clamp=None))))


def test_kl_value_clamp_and_k3_log_ratio_clamp():
    logp = jnp.asarray([[0.0, 0.0, 0.0, -25.0]])
    ref = jnp.asarray([[-0.5, 3.0, -30.0, 0.0]])
    m = jnp.ones((1, 4), bool)
    d = np.array([-0.5, 3.0, -30.0, 25.0])
    k3 = np.expm1(d) - d
    np.testing.assert_allclose(kl_estimate(logp, ref, m, "k3"), [k3], rtol=1e-14)
    dc = np.clip(d, -20, 20)
    k3c = np.clip(np.expm1(dc) - dc, -10, 10)
    np.testing.assert_allclose(kl_estimate(logp, ref, m, "k3", log_ratio_clamp=20.0, value_clamp=10.0), [k3c],
                               rtol=1e-14)
    assert k3c[0] == pytest.approx(np.expm1(-0.5) + 0.5) and k3c[1] == k3c[2] == k3c[3] == 10.0
    g = jax.grad(lambda x: jnp.sum(kl_estimate(x, ref, m, "k3", value_clamp=10.0)))(logp)
    np.testing.assert_allclose(g[0, 0], -np.expm1(-0.5), rtol=1e-14)  # d k3 / d logp = 1 - e^d, unclamped
    assert float(g[0, 1]) == 0.0  # clamped value: zero gradient


def test_seq_mean_token_sum_norm_is_verl_divided_by_the_number_of_sequences():
    """Ours: sum_i sum_t l / (S L) (Dr. GRPO); verl's agg_loss: sum_i sum_t l / L. Same direction, factor S."""
    rng = np.random.default_rng(1)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    b = dict(logp=jnp.asarray(-rng.random((3, 4))), mask=jnp.asarray(mask),
             advantages=jnp.asarray(mask * rng.normal(size=(3, 1))))
    hp = ObjectiveHParams(form="logprob", agg_mode="seq-mean-token-sum-norm", agg_max_len=4)
    ours = float(loss_value(get_objective("reinforce")(b, hp)))
    verl = float(np.sum(-np.asarray(b["advantages"]) * np.asarray(b["logp"]) * mask) / 4)
    assert ours == pytest.approx(verl / 3, rel=1e-14)
