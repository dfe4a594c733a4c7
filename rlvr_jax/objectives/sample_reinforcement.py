"""PSR, NSR, W-REINFORCE and REINFORCE ("The Surprising Effectiveness of Negative Reinforcement in LLM
Reasoning"). The advantage is the raw verifiable reward R in {-1, +1} broadcast to the tokens (no group
normalisation, it would zero the signal, paper D.3; no KL penalty, paper D.1).

Sequence-level objectives (Eq. 2-4, 11), with pi(y|x) the sequence probability:

  L_RLVR = -E_x[ sum_y r(x,y) pi(y|x) ] = L_PSR + L_NSR                                        (Eq. 2)
  L_PSR  = -E_x[ sum_{y: r=+1}  pi(y|x) ]                                                       (Eq. 3)
  L_NSR  = -E_x[ sum_{y: r=-1} -pi(y|x) ]                                                       (Eq. 4)
  L_W-REINFORCE = lambda * L_PSR + L_NSR     (lambda = 0.1 in the paper; lambda = 1 is REINFORCE)  (Eq. 11)

Per-token forms (``hp.form``), with A_t the advantage, a_t = lambda*A_t for W-REINFORCE positives else A_t,
r_t = pi_theta(y_t)/pi_old(y_t), and the token set selected by sign (PSR: A > 0, NSR: A < 0, others: all):

  'clipped' : l_t = -min(r_t a_t, clip(r_t, 1-eps_low, 1+eps_high) a_t)   (paper D.1, the practical form)
  'logprob' : l_t = -a_t log pi_theta(y_t)                                (plain on-policy REINFORCE)
  'prob'    : l_t = -a_t pi_theta(y_t)                                    (Eq. 6, the loss on the probability)

The token-level logit gradient of 'prob' is Eq. 7 / Eq. 8 (closed_form.prob_loss_logit_grad); 'clipped' and
'logprob' agree at r = 1 with Lemma 1 of the two-stage paper (closed_form.logprob_objective_logit_grad).
Aggregated by hp.agg_mode; the denominator counts all valid tokens, not only the selected ones.
"""
from __future__ import annotations

import jax.numpy as jnp

from rlvr_jax.objectives import terms
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams


def _sample_reinforcement(batch, hp: ObjectiveHParams, *, who: str, pos_weight: float, neg_weight: float
                          ) -> LossOutput:
    mask = terms.response_mask(batch)
    logp = terms.clean(batch["logp"], mask)
    adv = terms.get(batch, "advantages", mask, who)
    zero = jnp.zeros((), adv.dtype)
    keep = mask
    if pos_weight == 0.0:
        keep = keep & (adv < 0)
    if neg_weight == 0.0:
        keep = keep & (adv > 0)
    a = jnp.where(adv > 0, pos_weight * adv, jnp.where(adv < 0, neg_weight * adv, zero))
    clip_active = jnp.zeros(mask.shape, bool)
    if hp.form == "clipped":
        old = terms.get(batch, "old_logp", mask, who)
        ratio = jnp.exp(terms.token_log_ratio(logp, old, mask))
        pg, clip_active = terms.clipped_surrogate(ratio, a, hp.clip_eps_low, hp.eps_high, hp.use_clip)
    elif hp.form == "logprob":
        pg = -a * logp
    elif hp.form == "prob":
        pg = -a * jnp.exp(logp)
    else:
        raise ValueError(f"objective {who!r}: unknown form {hp.form!r}; expected clipped, logprob or prob")
    return terms.finish(batch, mask, pg, keep, clip_active, hp, kl_in_loss=False, who=who)


def psr(batch, hp: ObjectiveHParams) -> LossOutput:
    """Positive Sample Reinforcement (Eq. 3): only tokens with A_t > 0 (reward +1) contribute;
    l_t = -min(r_t A_t, clip(r_t) A_t) | -A_t log pi | -A_t pi by hp.form. No KL."""
    return _sample_reinforcement(batch, hp, who="psr", pos_weight=1.0, neg_weight=0.0)


def nsr(batch, hp: ObjectiveHParams) -> LossOutput:
    """Negative Sample Reinforcement (Eq. 4): only tokens with A_t < 0 (reward -1) contribute;
    l_t = -min(r_t A_t, clip(r_t) A_t) | -A_t log pi | -A_t pi by hp.form. No KL."""
    return _sample_reinforcement(batch, hp, who="nsr", pos_weight=0.0, neg_weight=1.0)


def w_reinforce(batch, hp: ObjectiveHParams) -> LossOutput:
    """Weighted-REINFORCE (Eq. 11): lambda * L_PSR + L_NSR, i.e. positive advantages scaled by hp.lam
    (paper: 0.1), negative ones kept as they are. No KL."""
    return _sample_reinforcement(batch, hp, who="w_reinforce", pos_weight=float(hp.lam), neg_weight=1.0)


def reinforce(batch, hp: ObjectiveHParams) -> LossOutput:
    """REINFORCE / full RLVR (Eq. 2): L_PSR + L_NSR, every token with its advantage. No KL."""
    return _sample_reinforcement(batch, hp, who="reinforce", pos_weight=1.0, neg_weight=1.0)
