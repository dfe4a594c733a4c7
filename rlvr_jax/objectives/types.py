"""Shared types of the objectives: the hyper-parameter dataclass and the loss output.

Every objective is a pure function ``fn(batch, hp) -> LossOutput`` over per-token arrays of shape [B, T]:

* ``logp``       log pi_theta(y_t | x, y_<t) under the current policy (the differentiable input),
* ``old_logp``   the same under the behaviour (old) policy, a constant,
* ``mask``       1 for response tokens that count, 0 for padding / prompt,
* ``advantages`` the per-token advantage A_t (for PSR/NSR/W-REINFORCE/REINFORCE: +1 correct, -1 incorrect),
* ``ref_logp``   (optional) log-probs under the frozen reference policy, for the KL penalty,
* ``entropy``    (optional, differentiable) per-token entropy H_t of pi_theta(. | x, y_<t), for the bonus.

The global loss is ``sum(loss_sum over micro-batches) / sum(denom over micro-batches)``; the denominator depends
only on (mask, aggregation mode) (see ``aggregation.loss_denominator``), so a trainer can compute it before the
first micro-batch and gradient accumulation is exact.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

FORMS = ("clipped", "logprob", "prob")
KL_ESTIMATORS = ("k1", "k2", "k3")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


class LossOutput(NamedTuple):
    """``loss = loss_sum / denom``; ``metrics`` holds token sums and counts (see ``terms.METRIC_KEYS``)."""

    loss_sum: Any
    denom: Any
    metrics: dict


@dataclasses.dataclass(frozen=True)
class ObjectiveHParams:
    """Hyper-parameters shared by all objectives (each objective documents which fields it reads).

    form:          'clipped' (PPO-style clipped ratio, the papers' practical form), 'logprob' (plain on-policy
                   REINFORCE, loss -A log pi) or 'prob' (NSR paper Eq. 6, loss -A pi). Only read by
                   psr / nsr / w_reinforce / reinforce; the other objectives are always clipped-ratio losses.
    use_clip:      False replaces min(r A, clip(r) A) by r A (the unclipped-ratio ablation).
    clip_eps_low:  ratio lower bound is 1 - clip_eps_low.
    clip_eps_high: ratio upper bound is 1 + clip_eps_high (None: same as clip_eps_low; DAPO's clip-higher: 0.28).
    kl_coef:       beta of the in-loss KL penalty beta * KL(pi_theta || pi_ref) (grpo, grpo_n, gspo, gspo_n only).
    kl_estimator:  'k1' (log ratio), 'k2' (half squared log ratio) or 'k3' (low-variance, Schulman's estimator).
    entropy_coef:  coefficient c of the entropy bonus, loss_t -= c * H_t (needs batch['entropy'] when != 0).
    agg_mode:      one of AGG_MODES (see aggregation.py).
    agg_max_len:   the Dr.GRPO constant L of 'seq-mean-token-sum-norm' (None: the batch's padded length T).
    lam:           W-REINFORCE weight on positive samples (Eq. 11); lam = 1 is REINFORCE.
    clip_ratio_c:  dual-clip PPO (Ye et al. 2020; verl's ``clip_ratio_c``, verl default 3): for A < 0 the per-token
                   loss is capped, l = min(-min(r A, clip(r) A), -c A); None disables it (the papers' code).
    log_ratio_clamp: log r = clip(log pi - log pi_old, -c, c) before exp (verl: 20), also applied to
                   d = log pi_ref - log pi inside the KL estimators; identical below |log r| = c; None disables.
    kl_value_clamp: the per-token KL estimate is clipped to [-c, c] (verl: 10, on k3); None disables.
    simko_top_k, simko_alpha, simko_tau, simko_lambda: SimKO's K, alpha, tau and lambda (objectives/simko.py;
                   read only by simko).

    The dataclass defaults are neutral (no KL, no entropy, token-mean, clip 0.2); an algorithm's settings come
    from its preset through :func:`hparams_from_config`.
    """

    form: str = "clipped"
    use_clip: bool = True
    clip_eps_low: float = 0.2
    clip_eps_high: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    agg_mode: str = "token-mean"
    agg_max_len: int | None = None
    lam: float = 0.1
    clip_ratio_c: float | None = None
    log_ratio_clamp: float | None = None
    kl_value_clamp: float | None = None
    simko_top_k: int = 3
    simko_alpha: float = 0.01
    simko_tau: float = 0.8
    simko_lambda: float = 1.1

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"ObjectiveHParams.form must be one of {FORMS}, got {self.form!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"ObjectiveHParams.kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.agg_mode not in AGG_MODES:
            raise ValueError(f"ObjectiveHParams.agg_mode must be one of {AGG_MODES}, got {self.agg_mode!r}")
        if not 0.0 <= self.clip_eps_low < 1.0:
            raise ValueError(f"ObjectiveHParams.clip_eps_low must be in [0, 1), got {self.clip_eps_low}")
        if self.clip_eps_high is not None and self.clip_eps_high < 0:
            raise ValueError(f"ObjectiveHParams.clip_eps_high must be >= 0, got {self.clip_eps_high}")
        if self.kl_coef < 0:
            raise ValueError(f"ObjectiveHParams.kl_coef must be >= 0, got {self.kl_coef}")
        if self.lam < 0:
            raise ValueError(f"ObjectiveHParams.lam must be >= 0, got {self.lam}")
        if self.agg_max_len is not None and self.agg_max_len < 1:
            raise ValueError(f"ObjectiveHParams.agg_max_len must be >= 1 or None, got {self.agg_max_len}")
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1.0:
            raise ValueError(f"ObjectiveHParams.clip_ratio_c must be > 1 or None, got {self.clip_ratio_c}")
        if self.simko_top_k < 1 or not 0 <= self.simko_alpha <= 1 or not 0 <= self.simko_tau <= 1 \
                or self.simko_lambda < 0:
            raise ValueError(f"ObjectiveHParams simko fields out of range: K={self.simko_top_k} (>= 1), alpha="
                             f"{self.simko_alpha}, tau={self.simko_tau} (in [0, 1]), lambda={self.simko_lambda} (>= 0)")
        for name in ("log_ratio_clamp", "kl_value_clamp"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"ObjectiveHParams.{name} must be > 0 or None, got {v}")

    @property
    def eps_high(self) -> float:
        return self.clip_eps_low if self.clip_eps_high is None else self.clip_eps_high

    def replace(self, **changes) -> "ObjectiveHParams":
        return dataclasses.replace(self, **changes)


def hparams_from_config(cfg) -> ObjectiveHParams:
    """The one place an objective's hyper-parameters are built from an experiment config (attribute access,
    e.g. an ml_collections ConfigDict with the sections of ``rlvr_jax/config/base.py``).

    Reads ``cfg.algo`` (form, use_clip, clip_eps_low/high, kl_coef, kl_in_reward, kl_estimator, entropy_coef,
    loss_agg_mode, lam, clip_ratio_c, log_ratio_clamp, kl_value_clamp, simko_*) and ``cfg.rollout.max_new_tokens``
    (the constant L of seq-mean-token-sum-norm). With ``kl_in_reward`` the in-loss KL coefficient is 0 (PPO: the
    penalty goes into the rewards). An algorithm's values come from its preset (``rlvr_jax.config.presets``);
    there are no per-objective defaults anywhere else.
    """
    a = cfg.algo
    off = lambda v: None if v is None or float(v) <= 0 else float(v)  # noqa: E731  (0 / None = disabled)
    return ObjectiveHParams(
        form=a.form, use_clip=bool(a.use_clip), clip_eps_low=float(a.clip_eps_low),
        clip_eps_high=None if a.clip_eps_high is None else float(a.clip_eps_high),
        kl_coef=0.0 if a.kl_in_reward else float(a.kl_coef), kl_estimator=a.kl_estimator,
        entropy_coef=float(a.entropy_coef), agg_mode=a.loss_agg_mode, agg_max_len=int(cfg.rollout.max_new_tokens),
        lam=float(a.lam), clip_ratio_c=off(a.clip_ratio_c), log_ratio_clamp=off(a.log_ratio_clamp),
        kl_value_clamp=off(a.kl_value_clamp), simko_top_k=int(a.simko_top_k), simko_alpha=float(a.simko_alpha),
        simko_tau=float(a.simko_tau), simko_lambda=float(a.simko_lambda))
