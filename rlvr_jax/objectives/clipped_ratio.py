"""Token-level clipped-ratio objectives: PPO, GRPO, DAPO and GRPO-N.

With r_{i,t} = pi_theta(y_{i,t}) / pi_old(y_{i,t}) and advantages A_{i,t}:

  PPO  (NSR paper Eq. 9):  L = -(1/T) sum_t min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t)
       A_t from GAE (advantages.gae); the KL penalty goes into the reward (advantages.kl_shaped_rewards),
       not into this loss.
  GRPO (NSR paper Eq. 10): L = -(1/G) sum_i (1/|y_i|) sum_t [ min(r A, clip(r, 1-eps, 1+eps) A) - beta KL_t ]
       A_{i,t} = (r_i - mean(r)) / (std(r) + eps) (advantages.group_normalized_advantages), KL_t by the
       k1 / k2 / k3 estimator (terms.kl_estimate).
  DAPO: the GRPO surrogate with no KL term, decoupled clip [1-eps_low, 1+eps_high] (0.2 / 0.28) and
       token-mean aggregation (its preset, rlvr_jax.config.presets).
  GRPO-N (two-stage paper, Sec. 4): GRPO with the relative-negative indicator 1[A_{i,t} < 0] on the surrogate,
       -(1/G) sum_i (1/|y_i|) sum_t 1[A_{i,t} < 0] min(r A, clip(r) A)  (+ the same KL term);
       tokens with A >= 0 are removed exactly (zero loss, zero gradient).

The aggregation written above (1/T, 1/G 1/|y_i|) is the paper's; the code uses hp.agg_mode. The entropy
bonus -c H_t is added to every objective when hp.entropy_coef != 0. Options (off unless set): the dual clip
hp.clip_ratio_c (for A < 0, l_t = min(l_t, -c A_t)), the log-ratio clamp hp.log_ratio_clamp
(r_t = exp(clip(log r_t, -c, c))) and the KL-value clamp hp.kl_value_clamp (terms.clipped_surrogate,
terms.kl_estimate). The selected tokens (GRPO-N: A < 0) are defined in selection.py.
"""
from __future__ import annotations

import jax.numpy as jnp

from rlvr_jax.objectives import terms
from rlvr_jax.objectives.selection import select_tokens
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams


def _clipped_ratio(batch, hp: ObjectiveHParams, *, who: str, kl_in_loss: bool) -> LossOutput:
    mask = terms.response_mask(batch)
    logp = terms.clean(batch["logp"], mask)
    old = terms.get(batch, "old_logp", mask, who)
    adv = terms.get(batch, "advantages", mask, who)
    ratio = jnp.exp(terms.token_log_ratio(logp, old, mask, hp.log_ratio_clamp))
    pg, clip_active, lower = terms.clipped_surrogate(ratio, adv, hp.clip_eps_low, hp.eps_high, hp.use_clip,
                                                     hp.clip_ratio_c)
    keep = mask & select_tokens(who, adv, jnp)
    return terms.finish(batch, mask, pg, keep, clip_active, hp, kl_in_loss=kl_in_loss, who=who, clip_lower=lower)


def ppo(batch, hp: ObjectiveHParams) -> LossOutput:
    """PPO clipped surrogate (NSR paper Eq. 9): l_t = -min(r_t A_t, clip(r_t, 1-eps_low, 1+eps_high) A_t)
    with given (e.g. GAE) advantages; no KL term in the loss (PPO puts it in the reward)."""
    return _clipped_ratio(batch, hp, who="ppo", kl_in_loss=False)


def grpo(batch, hp: ObjectiveHParams) -> LossOutput:
    """GRPO (NSR paper Eq. 10): l_t = -min(r A, clip(r, 1-eps_low, 1+eps_high) A) + beta KL_t(k1|k2|k3),
    A the group-normalised advantage (r_i - mean) / (std + eps)."""
    return _clipped_ratio(batch, hp, who="grpo", kl_in_loss=True)


def dapo(batch, hp: ObjectiveHParams) -> LossOutput:
    """DAPO: l_t = -min(r A, clip(r, 1-eps_low, 1+eps_high) A) with clip-higher (eps_high > eps_low,
    e.g. 0.2 / 0.28), never a KL term (hp.kl_coef is ignored), token-mean aggregation by default."""
    return _clipped_ratio(batch, hp, who="dapo", kl_in_loss=False)


def grpo_n(batch, hp: ObjectiveHParams) -> LossOutput:
    """GRPO-N (two-stage paper Sec. 4): l_t = -1[A_t < 0] min(r A, clip(r) A) + beta KL_t; only relative
    negative tokens drive the policy-gradient term, positive-advantage tokens are masked out exactly."""
    return _clipped_ratio(batch, hp, who="grpo_n", kl_in_loss=True)
