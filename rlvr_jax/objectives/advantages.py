"""Advantage estimators (pure functions).

* correctness_advantages:     A_{i,t} = +1 if sample i is correct else -1, whatever the reward format
                               (PSR / NSR / W-REINFORCE / REINFORCE: the objectives select and weight by sign)
* raw_reward_advantages:      A_{i,t} = r_i                       (the reward as it is)
* group_normalized_advantages: A_i = (r_i - mean_g(r)) / (std_g(r) + eps)   (GRPO; scale_by_std=False gives
                               the mean-only baseline of Dr.GRPO and of the toy, A_i = r_i - mean_g(r))
* gae:                         generalised advantage estimation from per-token rewards and values (PPO)
* masked_whiten:               (A - mean) * rsqrt(var + 1e-8) over the batch's valid tokens, var unbiased
                               (verl's PPO whitening of the GAE advantages)
* kl_shaped_rewards:           per-token rewards with the outcome reward on the last response token minus
                               beta * KL_t(pi_old || pi_ref) on every token (PPO's KL-in-reward)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rlvr_jax.objectives.terms import kl_estimate


def broadcast_to_tokens(seq_values, mask):
    """[B] per-sequence values -> [B, T] per-token values (0 where masked)."""
    mask = jnp.asarray(mask) != 0
    v = jnp.asarray(seq_values)
    return jnp.where(mask, v[:, None], jnp.zeros((), v.dtype))


def raw_reward_advantages(rewards, mask):
    """A_{i,t} = r_i on the response tokens (the NSR paper's advantage: no baseline, no normalisation)."""
    return broadcast_to_tokens(rewards, mask)


def correctness_advantages(correct, mask):
    """A_{i,t} = +1 on the response tokens of a correct sample, -1 on those of an incorrect one.

    The NSR paper's advantages follow from it whatever the reward's format ({-1,+1} or {0,1}): PSR keeps the
    A > 0 samples (A = +1), NSR the A < 0 ones (A = -1), W-REINFORCE weights A > 0 by lambda (lambda / -1),
    REINFORCE keeps both (+1 / -1) (sample_reinforcement.py).
    """
    c = jnp.asarray(correct).astype(bool)
    return broadcast_to_tokens(jnp.where(c, 1.0, -1.0).astype(jnp.float32), mask)


def masked_whiten(values, mask, eps: float = 1e-8):
    """verl's whitening: W = (A - mu) / sqrt(s^2 + eps) on the valid tokens (0 elsewhere), with the masked mean
    mu = sum m A / sum m and the unbiased masked variance s^2 = sum m (A - mu)^2 / (sum m - 1).

    Needs at least two valid tokens (ValueError otherwise, as verl).
    """
    m = jnp.asarray(mask) != 0
    n = int(jnp.sum(m))
    if n < 2:
        raise ValueError(f"masked_whiten needs at least 2 valid tokens, got {n}")
    v = jnp.where(m, jnp.asarray(values), 0)
    mu = jnp.sum(v) / n
    var = jnp.sum(jnp.where(m, (v - mu) ** 2, 0)) / (n - 1)
    return jnp.where(m, (v - mu) * jax.lax.rsqrt(var + eps), 0)


def group_normalized_advantages(rewards, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-6,
                                ddof: int = 1):
    """GRPO advantages for rewards [N] laid out as N/group_size consecutive groups.

    A_i = (r_i - mean_g) / (std_g + eps) with std_g the group standard deviation (ddof=1 by default, as
    torch.std in verl/TRL); scale_by_std=False returns r_i - mean_g. A group of one sample gets A = 0.
    Groups with equal rewards get A = 0 exactly.
    """
    r = jnp.asarray(rewards)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {r.shape}")
    if group_size < 1 or r.shape[0] % group_size != 0:
        raise ValueError(f"group_size={group_size} must be >= 1 and divide the number of rewards {r.shape[0]}")
    g = r.reshape(-1, group_size)
    centred = g - jnp.mean(g, axis=1, keepdims=True)
    centred = jnp.where(jnp.max(g, 1, keepdims=True) == jnp.min(g, 1, keepdims=True), 0, centred)
    if scale_by_std:
        if group_size - ddof <= 0:
            std = jnp.ones((g.shape[0], 1), g.dtype)
        else:
            std = jnp.sqrt(jnp.sum(centred * centred, axis=1, keepdims=True) / (group_size - ddof))
        centred = centred / (std + eps)
    return centred.reshape(-1)


def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 1.0):
    """Generalised advantage estimation over the valid tokens of each row ([B, T] inputs).

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1},   returns_t = A_t + V_t,
    where "t+1" is the next *valid* token of the row (masked positions are skipped) and V after the last
    valid token is 0. Masked positions get A = returns = 0.
    """
    mask = jnp.asarray(mask) != 0
    r = jnp.where(mask, jnp.asarray(rewards), 0)
    v = jnp.where(mask, jnp.asarray(values), 0).astype(r.dtype)

    def step(carry, xs):
        next_v, next_a = carry
        r_t, v_t, m_t = xs
        delta = r_t + gamma * next_v - v_t
        a_t = delta + gamma * lam * next_a
        new_v = jnp.where(m_t, v_t, next_v)
        new_a = jnp.where(m_t, a_t, next_a)
        return (new_v, new_a), jnp.where(m_t, a_t, 0)

    zeros = jnp.zeros(r.shape[0], r.dtype)
    _, adv = jax.lax.scan(step, (zeros, zeros), (r.T, v.T, mask.T), reverse=True)
    adv = adv.T
    return adv, jnp.where(mask, adv + v, 0)


def kl_shaped_rewards(seq_rewards, old_logp, ref_logp, mask, kl_coef: float, estimator: str = "k1", **clamps):
    """Per-token rewards r_t = 1[t = last valid token] r_i - beta * KL_t(old, ref) (PPO's KL in the reward);
    ``clamps``: log_ratio_clamp / value_clamp of terms.kl_estimate."""
    mask = jnp.asarray(mask) != 0
    t_idx = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(mask, t_idx, -1), axis=1)
    r = jnp.where(t_idx[None, :] == last[:, None], jnp.asarray(seq_rewards)[:, None], 0).astype(
        jnp.asarray(old_logp).dtype)
    kl = kl_estimate(jnp.asarray(old_logp), jnp.asarray(ref_logp), mask, estimator, **clamps)
    return jnp.where(mask, r - kl_coef * kl, 0)
