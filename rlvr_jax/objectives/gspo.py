"""GSPO (Group Sequence Policy Optimization) and GSPO-N.

Sequence-level, length-normalised importance ratio (GSPO; two-stage paper Sec. 2):

  s_i(theta) = (pi_theta(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp( (1/|y_i|) sum_t log(pi_theta(y_{i,t}) / pi_old(y_{i,t})) )

Token-level form (GSPO-token, which allows per-token advantages):

  s_{i,t}(theta) = sg[s_i(theta)] * pi_theta(y_{i,t}) / sg[pi_theta(y_{i,t})]

so s_{i,t} has the value s_i and the gradient s_i grad log pi_theta(y_{i,t}). Loss

  L = -(1/G) sum_i (1/|y_i|) sum_t min(s_{i,t} A_{i,t}, clip(s_{i,t}, 1-eps_low, 1+eps_high) A_{i,t})  (+ beta KL_t)

which equals the sequence-level GSPO loss -(1/G) sum_i min(s_i A_i, clip(s_i) A_i) when A_{i,t} = A_i and the
aggregation is seq-mean-token-mean. GSPO-N multiplies the surrogate by 1[A_{i,t} < 0] (relative negatives only).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rlvr_jax.objectives import terms
from rlvr_jax.objectives.selection import select_tokens
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams


def sequence_log_ratio(logp, old_logp, mask, log_ratio_clamp: float | None = None):
    """log s_i = clip((1/|y_i|) sum_t m_t (log pi_theta - log pi_old), -c, c), shape [B] (0 for empty
    sequences); c = log_ratio_clamp, None for no clamp."""
    mask = jnp.asarray(mask) != 0
    lr = terms.token_log_ratio(terms.clean(logp, mask), terms.clean(old_logp, mask), mask)
    n = jnp.sum(mask, axis=-1).astype(lr.dtype)
    return terms.clamp(jnp.sum(lr, axis=-1) / jnp.maximum(n, 1), log_ratio_clamp)


def token_sequence_ratio(logp, old_logp, mask, log_ratio_clamp: float | None = None):
    """s_{i,t} = sg[s_i] * exp(log pi_theta - sg[log pi_theta]), shape [B, T] (GSPO-token)."""
    sg = jax.lax.stop_gradient
    s = jnp.exp(sg(sequence_log_ratio(logp, old_logp, mask, log_ratio_clamp)))
    return s[:, None] * jnp.exp(logp - sg(logp))


def _gspo(batch, hp: ObjectiveHParams, *, who: str) -> LossOutput:
    mask = terms.response_mask(batch)
    logp = terms.clean(batch["logp"], mask)
    old = terms.get(batch, "old_logp", mask, who)
    adv = terms.get(batch, "advantages", mask, who)
    ratio = token_sequence_ratio(logp, old, mask, hp.log_ratio_clamp)
    pg, clip_active, lower = terms.clipped_surrogate(ratio, adv, hp.clip_eps_low, hp.eps_high, hp.use_clip,
                                                     hp.clip_ratio_c)
    keep = mask & select_tokens(who, adv, jnp)
    return terms.finish(batch, mask, pg, keep, clip_active, hp, kl_in_loss=True, who=who, clip_lower=lower)


def gspo(batch, hp: ObjectiveHParams) -> LossOutput:
    """GSPO: l_t = -min(s_{i,t} A, clip(s_{i,t}, 1-eps_low, 1+eps_high) A) + beta KL_t with the
    length-normalised sequence ratio s_i = exp(mean_t log(pi/pi_old)) and s_{i,t} = sg[s_i] pi / sg[pi]."""
    return _gspo(batch, hp, who="gspo")


def gspo_n(batch, hp: ObjectiveHParams) -> LossOutput:
    """GSPO-N: GSPO with the relative-negative indicator, l_t = -1[A_t < 0] min(s_{i,t} A, clip(s_{i,t}) A)
    + beta KL_t; positive-advantage tokens are masked out exactly."""
    return _gspo(batch, hp, who="gspo_n")
