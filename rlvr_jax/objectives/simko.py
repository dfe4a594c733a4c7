"""SimKO (Peng, Ren, Yu, Liu, Wen 2025, "SimKO: Simple Pass@K Policy Optimization"): GRPO with an asymmetric
token-level reweighting at high-entropy tokens.

Per token t of response i, with r_t = pi_theta(y_t) / pi_old(y_t), A_t the group-relative advantage, top_K(t)
the K most probable tokens of pi_theta at t (the selection is a constant), H_t the token entropy and

    w_t = 1[H_t > q_tau(H_i)]     q_tau(H_i): the tau-quantile (linear interpolation) of the entropies of the
                                  valid tokens of response i (tau = 0.8: its top 20%, the "forking" tokens)

* correct responses (A_t > 0): part alpha of the token's gradient moves from the sampled token to the mean of
  the top-K candidates,
      rho_t = (1 - alpha w_t) r_t + alpha w_t sg[r_t] exp((S_t - sg[S_t]) / K),   S_t = sum_{v in top_K(t)} log pi_theta(v),
  whose value is r_t (so the clip acts as GRPO's) and whose gradient is
      r_t [ (1 - alpha w_t) grad log pi(y_t) + (alpha w_t / K) sum_{v in top_K} grad log pi(v) ];
* incorrect responses (A_t < 0): the advantage of a sampled top-1 token at a high-entropy position is scaled,
      a_t = lambda A_t   if w_t and y_t = argmax pi_theta(. | t),   a_t = A_t otherwise;

then GRPO's loss  l_t = -min(rho_t a_t, clip(rho_t, 1-eps_low, 1+eps_high) a_t) + beta KL_t  (a_t = A_t on
correct tokens). On-policy (r = 1, unclipped) the logit gradient is (closed_form.simko_logit_grad)

    dl/dz = -A [ (1 - alpha w) e_y + (alpha w / K) 1_{top_K} - pi ]     (A > 0)
    dl/dz = -a (e_y - pi)                                              (A < 0).

Constants: K = 3, alpha = 0.01, tau = 0.8, lambda = 1.1 (the authors' released training scripts: top_k=3,
mix_topk_coef=0.01, tau=0.8, and the 1.1 scale in their loss). The released loss writes the top-K term as
sum_k sg[r_t / r_k] r_k / K with r_k = pi(v_k) / pi_old(v_k); value and gradient are those above, and the old
policy's top-K log-probs cancel, so they are not needed.

Batch keys beyond GRPO's: ``entropy`` (the current policy's, used only through w_t, stop-gradient),
``topk_logp_sum`` (S_t, differentiable) and ``is_top1`` (constant), from
``rlvr_jax.models.logprobs.token_logprobs(..., top_k=K)`` (the learner adds them when the objective is simko).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rlvr_jax.objectives import terms
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams

TOPK_KEYS = ("topk_logp_sum", "is_top1")


def masked_row_quantile(x, mask, q: float):
    """[B] the q-quantile of each row's valid entries of ``x`` [B, T] (linear interpolation between order
    statistics, as ``torch.quantile``); +inf for a row without a valid entry."""
    m = jnp.asarray(mask) != 0
    xs = jnp.sort(jnp.where(m, x, jnp.inf), axis=-1)
    n = jnp.sum(m, axis=-1)
    pos = q * jnp.maximum(n - 1, 0).astype(x.dtype)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
    x_lo = jnp.take_along_axis(xs, lo[:, None], axis=-1)[:, 0]
    x_hi = jnp.take_along_axis(xs, hi[:, None], axis=-1)[:, 0]
    frac = pos - lo.astype(x.dtype)
    return jnp.where(n > 0, x_lo + frac * jnp.where(hi > lo, x_hi - x_lo, 0.0), jnp.inf)


def high_entropy_tokens(entropy, mask, tau: float):
    """w [B, T] bool: H_t above the tau-quantile of its row's valid entropies (module docstring)."""
    ent = jax.lax.stop_gradient(terms.clean(entropy, mask))
    return mask & (ent > masked_row_quantile(ent, mask, tau)[:, None])


def simko(batch, hp: ObjectiveHParams) -> LossOutput:
    """SimKO (module docstring): GRPO's clipped loss with rho_t = (1 - alpha w) r_t + alpha w sg[r_t]
    exp((S_t - sg[S_t]) / K) on A > 0 tokens and a_t = lambda A_t on A < 0 top-1 high-entropy tokens; + beta KL."""
    who = "simko"
    mask = terms.response_mask(batch)
    logp = terms.clean(batch["logp"], mask)
    old = terms.get(batch, "old_logp", mask, who)
    adv = terms.get(batch, "advantages", mask, who)
    ent = terms.get(batch, "entropy", mask, who)
    s_k = terms.get(batch, "topk_logp_sum", mask, who)
    top1 = terms.get(batch, "is_top1", mask, who) > 0.5
    w = high_entropy_tokens(ent, mask, hp.simko_tau)
    sg = jax.lax.stop_gradient
    r = jnp.exp(terms.token_log_ratio(logp, old, mask, hp.log_ratio_clamp))
    aw = hp.simko_alpha * w.astype(logp.dtype)
    rho = (1.0 - aw) * r + aw * sg(r) * jnp.exp((s_k - sg(s_k)) / hp.simko_top_k)
    rho = jnp.where(adv > 0, rho, r)
    a = jnp.where((adv < 0) & w & top1, hp.simko_lambda * adv, adv)
    pg, clip_active, lower = terms.clipped_surrogate(rho, a, hp.clip_eps_low, hp.eps_high, hp.use_clip,
                                                     hp.clip_ratio_c)
    return terms.finish(batch, mask, pg, mask, clip_active, hp, kl_in_loss=True, who=who, clip_lower=lower)
