"""Per-token building blocks shared by the objectives: input sanitising, importance ratio, the clipped
surrogate, KL estimators, the entropy bonus, and assembling (loss_sum, denom, metrics).

Masking is exact: every per-token input is replaced by 0 at masked positions *before* any arithmetic
(``jnp.where``), so masked tokens contribute exactly zero loss and exactly zero gradient even when their
log-probs are -inf/NaN garbage.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rlvr_jax.objectives.aggregation import aggregate_sum, loss_denominator
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams

# Metric entries: token sums over valid (mask=1) tokens, plus counts. Summing them over micro-batches and
# calling ``summarize_metrics`` once gives exact batch means.
# Optional per-token constant multiplying the policy-gradient term (rlvr_jax.trainer.rollout_correction, token_tis).
IS_WEIGHT_KEY = "rollout_is_weights"
METRIC_KEYS = ("pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "entropy", "kl", "n_kept", "n_tokens")


def response_mask(batch) -> jax.Array:
    """The boolean [B, T] mask; checks that every given per-token array has its shape."""
    if "mask" not in batch or "logp" not in batch:
        raise KeyError(f"objective batch needs 'logp' and 'mask'; got keys {sorted(batch)}")
    mask = jnp.asarray(batch["mask"]) != 0
    for key in ("logp", "old_logp", "advantages", "ref_logp", "entropy", IS_WEIGHT_KEY):
        if key in batch and batch[key] is not None and jnp.shape(batch[key]) != mask.shape:
            raise ValueError(f"batch[{key!r}] has shape {jnp.shape(batch[key])}, mask has shape {mask.shape}")
    return mask


def clean(x, mask):
    """x with masked entries set to exactly 0 (gradient-safe: masked entries get zero cotangent)."""
    x = jnp.asarray(x)
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


def get(batch, key: str, mask, who: str):
    if key not in batch or batch[key] is None:
        raise KeyError(f"objective {who!r} needs batch[{key!r}]; got keys {sorted(batch)}")
    return clean(batch[key], mask)


def clamp(x, c: float | None):
    """clip(x, -c, c), or x when c is None (outside [-c, c] the gradient is 0, as torch.clamp's)."""
    return x if c is None else jnp.clip(x, -c, c)


def token_log_ratio(logp, old_logp, mask, log_ratio_clamp: float | None = None):
    """log r_t = clip(log pi_theta(y_t) - log pi_old(y_t), -c, c) with c = log_ratio_clamp (None: no clamp;
    verl clamps at 20 before exp), 0 where masked."""
    lr = clamp(logp - jax.lax.stop_gradient(old_logp), log_ratio_clamp)
    return jnp.where(mask, lr, jnp.zeros((), logp.dtype))


def clipped_surrogate(ratio, adv, eps_low: float, eps_high: float, use_clip: bool = True,
                      clip_ratio_c: float | None = None):
    """Per-token PPO loss  -min(r A, clip(r, 1-eps_low, 1+eps_high) A), where the clip is active, and where the
    dual clip is active.

    The clipped branch is active (its gradient is 0) when A > 0 and r > 1+eps_high, or A < 0 and
    r < 1-eps_low; inside [1-eps_low, 1+eps_high] the gradient is -A dr, i.e. the direction of -A log pi.
    Dual clip (``clip_ratio_c = c > 1``, verl's ``clip_ratio_c``): for A < 0 the loss is capped,
        l = min(-min(r A, clip(r) A), -c A),
    i.e. constant -c A (gradient 0) once r > c; A >= 0 tokens are unchanged.
    """
    unclipped = -ratio * adv
    if use_clip:
        clipped = -jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
        loss, active = jnp.maximum(unclipped, clipped), clipped > unclipped
    else:
        loss, active = unclipped, jnp.zeros(ratio.shape, bool)
    if clip_ratio_c is None:
        return loss, active, jnp.zeros(ratio.shape, bool)
    cap = -clip_ratio_c * adv
    lower = (adv < 0) & (loss > cap)
    return jnp.where(adv < 0, jnp.minimum(loss, cap), loss), active, lower


def kl_estimate(logp, ref_logp, mask, estimator: str, *, log_ratio_clamp: float | None = None,
                value_clamp: float | None = None):
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta, with d = log pi_ref - log pi_theta:

    k1 = -d,   k2 = d^2 / 2,   k3 = exp(d) - d - 1  (low-variance, unbiased, >= 0).

    Optional clamps (verl's, for k3): d -> clip(d, -log_ratio_clamp, log_ratio_clamp) before the estimator,
    and the estimate -> clip(k, -value_clamp, value_clamp); the gradient is 0 where a clamp is active.
    """
    d = jnp.where(mask, clamp(jax.lax.stop_gradient(ref_logp) - logp, log_ratio_clamp), jnp.zeros((), logp.dtype))
    if estimator == "k1":
        k = -d
    elif estimator == "k2":
        k = 0.5 * d * d
    elif estimator == "k3":
        k = jnp.expm1(d) - d
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected k1, k2 or k3")
    return clamp(k, value_clamp)


def finish(batch, mask, pg_tok, keep, clip_active, hp: ObjectiveHParams, *, kl_in_loss: bool, who: str,
           clip_lower=None):
    """Adds the KL penalty (if ``kl_in_loss``) and entropy bonus to the policy-gradient loss, aggregates, and
    builds the metrics.

    loss_t = w_t * 1[keep_t] * pg_t + beta * KL_t - c * H_t   (beta = hp.kl_coef, c = hp.entropy_coef, KL/H on
    all valid tokens), aggregated by hp.agg_mode over the valid tokens. w_t = sg[batch["rollout_is_weights"]]
    (the truncated importance weight min(pi_old / pi_rollout, C), rlvr_jax.trainer.rollout_correction) when the batch
    has it; without the key there is no multiplication at all (bit-identical to before).
    """
    logp = clean(batch["logp"], mask)
    dtype = logp.dtype
    zero = jnp.zeros((), dtype)
    keep = keep & mask
    pg = jnp.where(keep, pg_tok, zero)
    if batch.get(IS_WEIGHT_KEY) is not None:
        pg = pg * clean(jax.lax.stop_gradient(batch[IS_WEIGHT_KEY]), mask).astype(dtype)
    total = pg
    has_ref = batch.get("ref_logp") is not None
    kl_tok = (kl_estimate(logp, clean(batch["ref_logp"], mask), mask, hp.kl_estimator,
                          log_ratio_clamp=hp.log_ratio_clamp, value_clamp=hp.kl_value_clamp) if has_ref else None)
    if kl_in_loss and hp.kl_coef > 0:
        if kl_tok is None:
            raise KeyError(f"objective {who!r} has kl_coef={hp.kl_coef} > 0 but batch has no 'ref_logp'")
        total = total + hp.kl_coef * kl_tok
    has_ent = batch.get("entropy") is not None
    ent_tok = clean(batch["entropy"], mask) if has_ent else None
    if hp.entropy_coef != 0:
        if ent_tok is None:
            raise KeyError(f"objective {who!r} has entropy_coef={hp.entropy_coef} != 0 but batch has no 'entropy'")
        total = total - hp.entropy_coef * ent_tok
    loss_sum = aggregate_sum(total, mask, hp.agg_mode)
    denom = loss_denominator(mask, hp.agg_mode, hp.agg_max_len, dtype=dtype)

    sg = jax.lax.stop_gradient
    old = batch.get("old_logp")
    ppo_kl = jnp.sum(clean(sg(old), mask) - sg(logp)) if old is not None else zero
    metrics = {
        "pg_loss": sg(jnp.sum(pg)),
        "pg_clipfrac": jnp.sum(clip_active & keep).astype(dtype),
        "pg_clipfrac_lower": (jnp.sum(clip_lower & keep).astype(dtype) if clip_lower is not None else zero),
        "ppo_kl": ppo_kl,
        "entropy": sg(jnp.sum(ent_tok)) if has_ent else zero,
        "kl": sg(jnp.sum(kl_tok)) if kl_tok is not None else zero,
        "n_kept": jnp.sum(keep).astype(dtype),
        "n_tokens": jnp.sum(mask).astype(dtype),
    }
    return LossOutput(loss_sum, denom, metrics)


def loss_value(out: LossOutput):
    """The scalar loss of one (full) batch: loss_sum / max(denom, 1)."""
    return out.loss_sum / jnp.maximum(out.denom, 1)


def summarize_metrics(metrics: dict) -> dict:
    """Batch means from (micro-batch-summed) metric sums: every sum / n_tokens, plus the two counts and
    kept_frac = n_kept / n_tokens. Returns Python floats."""
    n = max(float(metrics["n_tokens"]), 1.0)
    out = {k: float(metrics[k]) / n for k in ("pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "entropy",
                                              "kl")}
    out.update(n_tokens=float(metrics["n_tokens"]), n_kept=float(metrics["n_kept"]),
               kept_frac=float(metrics["n_kept"]) / n)
    return out
