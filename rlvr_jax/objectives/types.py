"""Shared types of the objectives: the hyper-parameter dataclass and the loss output.

Every objective is a pure function ``fn(batch, hp) -> LossOutput`` over per-token arrays of shape [B, T]:

* ``logp``       log pi_theta(y_t | x, y_<t) under the current policy (the differentiable input),
* ``old_logp``   the same under the behaviour (old) policy, a constant,
* ``mask``       1 for response tokens that count, 0 for padding / prompt,
* ``advantages`` the per-token advantage A_t (for PSR/NSR/W-REINFORCE/REINFORCE: the raw reward in {-1,+1}),
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

    @property
    def eps_high(self) -> float:
        return self.clip_eps_low if self.clip_eps_high is None else self.clip_eps_high

    def replace(self, **changes) -> "ObjectiveHParams":
        return dataclasses.replace(self, **changes)


# The papers' settings per objective (NSR paper D.1; two-stage paper C.2; DAPO; GSPO).
_DEFAULTS: dict[str, dict] = {
    "psr": dict(entropy_coef=1e-4),
    "nsr": dict(entropy_coef=1e-4),
    "w_reinforce": dict(entropy_coef=1e-4, lam=0.1),
    "reinforce": dict(entropy_coef=1e-4),
    "ppo": dict(entropy_coef=1e-4),
    "grpo": dict(kl_coef=1e-3, kl_estimator="k3", entropy_coef=1e-4, agg_mode="seq-mean-token-mean"),
    "grpo_n": dict(kl_coef=1e-3, kl_estimator="k3", entropy_coef=1e-4, agg_mode="seq-mean-token-mean"),
    "dapo": dict(clip_eps_low=0.2, clip_eps_high=0.28, agg_mode="token-mean"),
    "gspo": dict(clip_eps_low=3e-4, clip_eps_high=4e-4, agg_mode="seq-mean-token-mean"),
    "gspo_n": dict(clip_eps_low=3e-4, clip_eps_high=4e-4, agg_mode="seq-mean-token-mean"),
}


def default_hparams(name: str, **overrides) -> ObjectiveHParams:
    """The published setting of objective ``name`` (values above), with ``overrides`` applied."""
    if name not in _DEFAULTS:
        raise ValueError(f"no default hyper-parameters for objective {name!r}; known: {sorted(_DEFAULTS)}")
    return ObjectiveHParams(**{**_DEFAULTS[name], **overrides})


_FORM_ALIASES = {"ppo": "clipped", "clipped": "clipped", "reinforce": "logprob", "logprob": "logprob",
                 "prob": "prob"}


def hparams_from_config(algo) -> ObjectiveHParams:
    """ObjectiveHParams from an ``algo`` config section (attribute access, e.g. an ml_collections ConfigDict)
    with fields lam, use_clip, clip_eps_low, clip_eps_high, kl_coef, kl_in_reward, kl_estimator, entropy_coef,
    loss_agg_mode, form ('ppo' = 'clipped', 'reinforce' = 'logprob', or 'prob') and optional agg_max_len.
    With kl_in_reward the in-loss KL coefficient is 0 (the penalty is applied to the rewards instead)."""
    form = getattr(algo, "form", "clipped")
    if form not in _FORM_ALIASES:
        raise ValueError(f"algo.form must be one of {sorted(_FORM_ALIASES)}, got {form!r}")
    kl_in_reward = bool(getattr(algo, "kl_in_reward", False))
    return ObjectiveHParams(
        form=_FORM_ALIASES[form],
        use_clip=bool(getattr(algo, "use_clip", True)),
        clip_eps_low=float(getattr(algo, "clip_eps_low", 0.2)),
        clip_eps_high=getattr(algo, "clip_eps_high", None),
        kl_coef=0.0 if kl_in_reward else float(getattr(algo, "kl_coef", 0.0)),
        kl_estimator=getattr(algo, "kl_estimator", "k3"),
        entropy_coef=float(getattr(algo, "entropy_coef", 0.0)),
        agg_mode=getattr(algo, "loss_agg_mode", "token-mean"),
        agg_max_len=getattr(algo, "agg_max_len", None),
        lam=float(getattr(algo, "lam", 0.1)),
    )
