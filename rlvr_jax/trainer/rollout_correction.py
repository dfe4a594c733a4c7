"""Rollout-learner mismatch: the metrics and the correction (``algo.rollout_correction``).

The rollout engine samples token y_t from pi_rollout (vLLM: its own kernels and precision, bf16 on GPUs); the
learner's old policy pi_old is the same weights evaluated by the learner (float32 here). Per response token, with
``old_logp`` and ``rollout_logp`` the raw (temperature-1) log-probs of the sampled token (rollout/base.py), let

    log rho_t = log pi_old(y_t) - log pi_rollout(y_t),      rho_t = exp(log rho_t).

Metrics (verl's ``rollout_corr/`` names; means over the valid tokens of the step's batch, tokens ~ pi_rollout):

    rollout_corr/kl           mean_t(-log rho_t)            k1 estimate of KL(pi_rollout || pi_old)
    rollout_corr/k3_kl        mean_t(rho_t - 1 - log rho_t)  k3 estimate of the same KL (>= 0)
    rollout_corr/chi2_token   mean_t(rho_t^2) - 1
    rollout_corr/training_ppl, rollout_corr/rollout_ppl     mean over sequences of exp(-mean_t logp)
    rollout_corr/log_ppl_abs_diff   mean over sequences of |mean_t log rho_t|
    rollout_corr/rollout_is_mean|std|min|max   statistics of rho_t (before the cap)
    rollout_corr/rollout_is_ratio_fraction_high|low   fraction of tokens with rho_t > C | rho_t < 1/C
    rollout_corr/probs_diff_mean|max   mean / max of |pi_old(y_t) - pi_rollout(y_t)| (verl's
                                       training/rollout_probs_diff_*)

Corrections, C = ``algo.rollout_correction_cap`` (default 2):

    none       nothing changes (the metrics are still logged; the update is bit-identical to not having them).
    token_tis  truncated importance sampling (verl rollout_is="token", truncate): each token's policy-gradient
               term is multiplied by the constant
                   w_t = sg[min(rho_t, C)],        l_t = w_t * pg_t + (KL and entropy terms, unweighted),
               so d l_t / d theta = w_t * d pg_t / d theta (objectives.terms.finish, key ``rollout_is_weights``).
    seq_mask   geometric sequence rejection (verl rollout_rs="geometric"): sequence i is dropped (its response
               mask set to 0: no loss, no gradient, not in the denominator) when its geometric-mean ratio
                   g_i = exp((1/|y_i|) sum_t log rho_{i,t})
               leaves [1/C, C]. ``rollout_corr/rollout_rs_masked_fraction`` is the fraction of sequences dropped.
"""
from __future__ import annotations

import numpy as np

from rlvr_jax.batch import TrainBatch

CORRECTIONS = ("none", "token_tis", "seq_mask")


def rollout_logp_array(completions, shape) -> np.ndarray:
    """The engines' per-token log-probs packed like ``response_ids`` ([N, R] float32, 0 at padding)."""
    out = np.zeros(shape, np.float32)
    for r, c in enumerate(completions):
        out[r, :len(c.logprobs)] = c.logprobs
    return out


def _log_ratio(old_logp, rollout_logp, mask):
    m = np.asarray(mask) != 0
    return np.where(m, np.asarray(old_logp, np.float64) - np.asarray(rollout_logp, np.float64), 0.0), m


def mismatch_metrics(old_logp, rollout_logp, mask, cap: float = 2.0) -> dict[str, float]:
    """The ``rollout_corr/*`` metrics of the module docstring (host numpy, float64 arithmetic)."""
    lr, m = _log_ratio(old_logp, rollout_logp, mask)
    n_tok = max(int(m.sum()), 1)
    rho = np.exp(lr)
    rows = m.any(axis=1)
    lens = np.maximum(m.sum(axis=1), 1)
    old = np.where(m, np.asarray(old_logp, np.float64), 0.0)
    roll = np.where(m, np.asarray(rollout_logp, np.float64), 0.0)
    seq_lr = lr.sum(axis=1) / lens
    mean = lambda x: float(x[m].sum() / n_tok)  # noqa: E731
    rho_v = rho[m] if m.any() else np.ones(1)
    pdiff = np.abs(np.exp(old) - np.exp(roll))[m] if m.any() else np.zeros(1)
    return {
        "rollout_corr/kl": mean(-lr),
        "rollout_corr/k3_kl": mean(np.expm1(lr) - lr),
        "rollout_corr/chi2_token": mean(rho * rho) - 1.0,
        "rollout_corr/training_ppl": float(np.mean(np.exp(-old.sum(1) / lens)[rows])) if rows.any() else 1.0,
        "rollout_corr/rollout_ppl": float(np.mean(np.exp(-roll.sum(1) / lens)[rows])) if rows.any() else 1.0,
        "rollout_corr/log_ppl_abs_diff": float(np.mean(np.abs(seq_lr[rows]))) if rows.any() else 0.0,
        "rollout_corr/rollout_is_mean": float(rho_v.mean()), "rollout_corr/rollout_is_std": float(rho_v.std()),
        "rollout_corr/rollout_is_min": float(rho_v.min()), "rollout_corr/rollout_is_max": float(rho_v.max()),
        "rollout_corr/rollout_is_ratio_fraction_high": float(np.mean(rho_v > cap)),
        "rollout_corr/rollout_is_ratio_fraction_low": float(np.mean(rho_v < 1.0 / cap)),
        "rollout_corr/probs_diff_mean": float(pdiff.mean()), "rollout_corr/probs_diff_max": float(pdiff.max()),
    }


def token_tis_weights(old_logp, rollout_logp, mask, cap: float) -> np.ndarray:
    """w_t = min(exp(old_logp - rollout_logp), C) at valid tokens, 0 at padding ([N, R] float32)."""
    lr, m = _log_ratio(old_logp, rollout_logp, mask)
    return np.where(m, np.minimum(np.exp(lr), cap), 0.0).astype(np.float32)


def seq_mask_keep(old_logp, rollout_logp, mask, cap: float) -> np.ndarray:
    """[N] bool: sequences whose geometric-mean ratio g_i lies in [1/C, C] (empty rows: kept, g = 1)."""
    lr, m = _log_ratio(old_logp, rollout_logp, mask)
    log_g = lr.sum(axis=1) / np.maximum(m.sum(axis=1), 1)
    return np.abs(log_g) <= np.log(cap)


def apply_correction(batch: TrainBatch, rollout_logp, mode: str, cap: float) -> tuple[TrainBatch, dict[str, float]]:
    """``mode`` applied to the host ``batch`` (needs ``old_logp`` and ``response_mask``), and the mismatch
    metrics: ``token_tis`` sets ``rollout_is_weights``, ``seq_mask`` zeroes the response mask of the rejected
    rows, ``none`` returns ``batch`` unchanged."""
    if mode not in CORRECTIONS:
        raise ValueError(f"rollout correction must be one of {CORRECTIONS}, got {mode!r}")
    mask = batch.response_mask
    metrics = mismatch_metrics(batch.old_logp, rollout_logp, mask, cap)
    if mode == "token_tis":
        batch = batch.replace(rollout_is_weights=token_tis_weights(batch.old_logp, rollout_logp, mask, cap))
    elif mode == "seq_mask":
        keep = seq_mask_keep(batch.old_logp, rollout_logp, mask, cap)
        rows = (np.asarray(mask) != 0).any(axis=1)
        metrics["rollout_corr/rollout_rs_masked_fraction"] = float(np.mean(~keep[rows])) if rows.any() else 0.0
        batch = batch.replace(response_mask=np.where(keep[:, None], mask, 0).astype(mask.dtype))
    return batch, metrics
