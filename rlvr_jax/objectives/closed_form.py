"""Closed-form logit gradients of the objectives for a softmax policy pi = softmax(z) over V tokens.

These are the identities the objectives are tested against (tests/test_closed_form.py); all functions take
logits z [..., V] (or probabilities) and return arrays of the same shape. delta_{vy} = 1[v = y].

1. NSR paper Eq. 6 / Appendix B. L = -R pi_y:
     dL/dz_v = -R pi_v (1 - pi_v)  if v = y,     R pi_v pi_y  otherwise,   i.e.  -R pi_y (delta_{vy} - pi_v).
   The descent direction -dL/dz is Eq. 7 for R = +1 (PSR) and Eq. 8 for R = -1 (NSR).
2. Two-stage paper Lemma 1. J = A log pi_y:
     dJ/dz_v = A (1 - pi_y)  if v = y,    -A pi_v  otherwise,   i.e.  A (delta_{vy} - pi_v).
   Every clipped-ratio loss -min(rA, clip(r)A) has gradient -A (delta - pi) at r = 1.
3. Two-stage paper Theorem 1. For u ~ pi and a per-action advantage A(u):
     E_u[A(u) d log pi_u / dz_v] = pi_v [ (1 - pi_v) A(v) - sum_{u != v} pi_u A(u) ].
4. NSR paper Appendix B. H = -sum_u pi_u log pi_u:
     dH/dz_v = -pi_v (log pi_v - sum_u pi_u log pi_u).
5. Clipped surrogate l = -min(r A, clip(r, 1-eps_low, 1+eps_high) A), r = pi_y / pi_old,y:
     dl/dz_v = -A r (delta_{vy} - pi_v)  inside the trust region (or on the pessimistic side), 0 when clipped.
6. Truncated importance sampling (rlvr_jax.trainer.rollout_correction, token_tis): l_t = w_t * pg_t with the constant
   w_t = min(exp(log pi_old,y - log pi_rollout,y), C), so dl/dz_v = w_t * dpg_t/dz_v (any of 1., 2., 5.);
   the KL and entropy terms are not weighted.
7. SimKO (objectives/simko.py), w = 1[high-entropy token], 1_topK the indicator of the K most probable tokens,
   r = pi_y / pi_old,y inside the trust region:
     A > 0:  dl/dz = -A r [ (1 - alpha w) e_y + (alpha w / K) 1_topK - pi ]
     A < 0:  dl/dz = -a r (e_y - pi),   a = lambda A if w and y = argmax pi else A;     0 when clipped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _onehot(y, v: int, dtype):
    return jax.nn.one_hot(y, v, dtype=dtype)


def prob_loss_logit_grad(z, y, reward):
    """d/dz of L = -R pi_y (Eq. 6): -R pi_y (delta_{vy} - pi_v). z [..., V], y and reward [...]."""
    pi = jax.nn.softmax(z, axis=-1)
    pi_y = jnp.take_along_axis(pi, y[..., None], axis=-1)
    return -jnp.asarray(reward)[..., None] * pi_y * (_onehot(y, z.shape[-1], pi.dtype) - pi)


def logprob_objective_logit_grad(z, y, advantage):
    """d/dz of J = A log pi_y (Lemma 1): A (delta_{vy} - pi_v)."""
    pi = jax.nn.softmax(z, axis=-1)
    return jnp.asarray(advantage)[..., None] * (_onehot(y, z.shape[-1], pi.dtype) - pi)


def expected_logit_update(pi, adv):
    """Theorem 1: E_{u~pi}[A(u) grad_z log pi_u]_v = pi_v [(1 - pi_v) A(v) - sum_{u != v} pi_u A(u)].

    pi, adv [..., V] (adv[v] = A(v), the advantage a sample of action v receives, or its expectation).
    """
    pa = pi * adv
    others = jnp.sum(pa, axis=-1, keepdims=True) - pa
    return pi * ((1.0 - pi) * adv - others)


def entropy_logit_grad(z):
    """dH/dz_v = -pi_v (log pi_v - sum_u pi_u log pi_u) for H = -sum_u pi_u log pi_u."""
    logpi = jax.nn.log_softmax(z, axis=-1)
    pi = jnp.exp(logpi)
    return -pi * (logpi - jnp.sum(pi * logpi, axis=-1, keepdims=True))


def clipped_surrogate_logit_grad(z, y, advantage, old_logp, eps_low: float, eps_high: float):
    """d/dz of l = -min(r A, clip(r, 1-eps_low, 1+eps_high) A), r = pi_y / exp(old_logp):
    -A r (delta_{vy} - pi_v) unless the clip is active (A > 0, r > 1+eps_high or A < 0, r < 1-eps_low): 0."""
    logpi = jax.nn.log_softmax(z, axis=-1)
    pi = jnp.exp(logpi)
    a = jnp.asarray(advantage)
    r = jnp.exp(jnp.take_along_axis(logpi, y[..., None], axis=-1)[..., 0] - old_logp)
    clipped = ((a > 0) & (r > 1 + eps_high)) | ((a < 0) & (r < 1 - eps_low))
    g = -(a * r)[..., None] * (_onehot(y, z.shape[-1], pi.dtype) - pi)
    return jnp.where(clipped[..., None], 0.0, g)


def kl_estimator_logp_grad(logp, ref_logp, estimator: str):
    """d/d log pi_theta of the per-token KL estimators (d = log pi_ref - log pi_theta):
    k1 = -d -> 1;   k2 = d^2/2 -> -d;   k3 = e^d - d - 1 -> 1 - e^d."""
    d = ref_logp - logp
    if estimator == "k1":
        return jnp.ones_like(d)
    if estimator == "k2":
        return -d
    if estimator == "k3":
        return -jnp.expm1(d)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected k1, k2 or k3")


def tis_weight(old_logp, rollout_logp, cap: float):
    """w = min(pi_old,y / pi_rollout,y, C) (identity 6), from the two log-probs."""
    return jnp.minimum(jnp.exp(jnp.asarray(old_logp) - jnp.asarray(rollout_logp)), cap)


def tis_clipped_surrogate_logit_grad(z, y, advantage, old_logp, rollout_logp, cap: float, eps_low: float,
                                     eps_high: float):
    """Identity 6 applied to 5.: d/dz of w * (-min(r A, clip(r) A)) = w * clipped_surrogate_logit_grad."""
    w = tis_weight(old_logp, rollout_logp, cap)
    return w[..., None] * clipped_surrogate_logit_grad(z, y, advantage, old_logp, eps_low, eps_high)


def simko_logit_grad(z, y, advantage, old_logp, w, k: int, alpha: float, lam: float, eps_low: float,
                     eps_high: float):
    """Identity 7: d/dz of SimKO's per-token loss (objectives/simko.py) for logits z [..., V], sampled y, advantage
    A, old log-prob and high-entropy flag w [...] (the clip acts on r, the value of SimKO's mixed ratio)."""
    logpi = jax.nn.log_softmax(z, axis=-1)
    pi = jnp.exp(logpi)
    v = z.shape[-1]
    a = jnp.asarray(advantage)
    w = jnp.asarray(w).astype(pi.dtype)
    r = jnp.exp(jnp.take_along_axis(logpi, y[..., None], axis=-1)[..., 0] - old_logp)
    onehot = _onehot(y, v, pi.dtype)
    _, idx = jax.lax.top_k(z, k)
    top = jnp.sum(jax.nn.one_hot(idx, v, dtype=pi.dtype), axis=-2)
    top1 = jnp.argmax(z, axis=-1) == y
    aw = (alpha * w)[..., None]
    pos = (1.0 - aw) * onehot + aw / k * top - pi
    a_neg = jnp.where((w > 0) & top1, lam * a, a)
    g = jnp.where((a > 0)[..., None], -(a * r)[..., None] * pos, -(a_neg * r)[..., None] * (onehot - pi))
    clipped = ((a > 0) & (r > 1 + eps_high)) | ((a < 0) & (r < 1 - eps_low))
    return jnp.where(clipped[..., None], 0.0, g)
