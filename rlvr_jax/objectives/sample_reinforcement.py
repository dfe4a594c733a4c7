"""PSR, NSR, W-REINFORCE and REINFORCE ("The Surprising Effectiveness of Negative Reinforcement in LLM
Reasoning"). The advantage is defined from correctness, A = +1 for a correct sample and -1 for an incorrect
one, whatever the reward's format (advantages.correctness_advantages; no group normalisation, it would zero
the signal, paper D.3; no KL penalty, paper D.1). With the sign selection below this is the released code's
advantage: PSR correct -> +1 (incorrect unused), NSR incorrect -> -1 (correct unused), W-REINFORCE
correct -> lambda, incorrect -> -1.

Sequence-level objectives (Eq. 2-4, 11), with pi(y|x) the sequence probability:

  L_RLVR = -E_x[ sum_y r(x,y) pi(y|x) ] = L_PSR + L_NSR                                        (Eq. 2)
  L_PSR  = -E_x[ sum_{y: r=+1}  pi(y|x) ]                                                       (Eq. 3)
  L_NSR  = -E_x[ sum_{y: r=-1} -pi(y|x) ]                                                       (Eq. 4)
  L_W-REINFORCE = lambda * L_PSR + L_NSR     (lambda = 0.1 in the paper; lambda = 1 is REINFORCE)  (Eq. 11)

Per-token forms (``hp.form``), with A_t the advantage, a_t = lambda*A_t for W-REINFORCE positives else A_t,
r_t = pi_theta(y_t)/pi_old(y_t), and the token set selected by sign (selection.py; PSR: A > 0, NSR: A < 0,
others: all):

  'clipped' : l_t = -min(r_t a_t, clip(r_t, 1-eps_low, 1+eps_high) a_t)   (paper D.1, the practical form)
  'logprob' : l_t = -a_t log pi_theta(y_t)                                (plain on-policy REINFORCE)
  'prob'    : l_t = -a_t pi_theta(y_t)                                    (Eq. 6, the loss on the probability)

The token-level logit gradient of 'prob' is Eq. 7 / Eq. 8 (closed_form.prob_loss_logit_grad); 'clipped' and
'logprob' agree at r = 1 with Lemma 1 of the two-stage paper (closed_form.logprob_objective_logit_grad).
Aggregated by hp.agg_mode over the valid tokens of the batch it is given: with algo.sample_selection="mask"
that includes the unselected samples (Eq. 3/4 literally), with "drop" the trainer has removed them first (the
released code); selection.py states the factor f between the two.
"""
from __future__ import annotations

import jax.numpy as jnp

from rlvr_jax.objectives import terms
from rlvr_jax.objectives.selection import select_tokens
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams


def _sample_reinforcement(batch, hp: ObjectiveHParams, *, who: str, pos_weight: float, neg_weight: float
                          ) -> LossOutput:
    mask = terms.response_mask(batch)
    logp = terms.clean(batch["logp"], mask)
    adv = terms.get(batch, "advantages", mask, who)
    zero = jnp.zeros((), adv.dtype)
    keep = mask & select_tokens(who, adv, jnp)
    a = jnp.where(adv > 0, pos_weight * adv, jnp.where(adv < 0, neg_weight * adv, zero))
    clip_active = lower = jnp.zeros(mask.shape, bool)
    if hp.form == "clipped":
        old = terms.get(batch, "old_logp", mask, who)
        ratio = jnp.exp(terms.token_log_ratio(logp, old, mask, hp.log_ratio_clamp))
        pg, clip_active, lower = terms.clipped_surrogate(ratio, a, hp.clip_eps_low, hp.eps_high, hp.use_clip,
                                                         hp.clip_ratio_c)
    elif hp.form == "logprob":
        pg = -a * logp
    elif hp.form == "prob":
        pg = -a * jnp.exp(logp)
    else:
        raise ValueError(f"objective {who!r}: unknown form {hp.form!r}; expected clipped, logprob or prob")
    return terms.finish(batch, mask, pg, keep, clip_active, hp, kl_in_loss=False, who=who, clip_lower=lower)


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
