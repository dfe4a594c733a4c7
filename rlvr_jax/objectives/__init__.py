"""RL objectives for LLMs as pure functions over per-token arrays, registered by name.

``get_objective(name)(batch, hp) -> LossOutput(loss_sum, denom, metrics)``; see types.py for the batch keys,
docs/objectives.md for the table of equations, closed_form.py for the logit-gradient identities.
"""
from __future__ import annotations

from rlvr_jax.objectives import advantages, aggregation, closed_form, group_shaping, selection
from rlvr_jax.objectives.aggregation import aggregate_sum, loss_denominator, token_weights
from rlvr_jax.objectives.clipped_ratio import dapo, grpo, grpo_n, ppo
from rlvr_jax.objectives.gspo import gspo, gspo_n
from rlvr_jax.objectives.remedies import grpo_gated, grpo_unlikely, nsr_gated
from rlvr_jax.objectives.simko import simko
from rlvr_jax.objectives.sample_reinforcement import nsr, psr, reinforce, w_reinforce
from rlvr_jax.objectives.terms import METRIC_KEYS, kl_estimate, loss_value, summarize_metrics
from rlvr_jax.objectives.selection import SELECTION_MODES, kept_rows, select_tokens
from rlvr_jax.objectives.types import AGG_MODES, FORMS, KL_ESTIMATORS, LossOutput, ObjectiveHParams, hparams_from_config

OBJECTIVES = {
    "psr": psr,
    "nsr": nsr,
    "w_reinforce": w_reinforce,
    "reinforce": reinforce,
    "ppo": ppo,
    "grpo": grpo,
    "dapo": dapo,
    "gspo": gspo,
    "grpo_n": grpo_n,
    "gspo_n": gspo_n,
    # remedies for lost diversity (docs/objectives.md "Remedies")
    "grpo_unlikely": grpo_unlikely,
    "grpo_gated": grpo_gated,
    "nsr_gated": nsr_gated,
    "simko": simko,
}


def get_objective(name: str):
    """The objective function registered as ``name``."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid names: {', '.join(OBJECTIVES)}") from None


def list_objectives() -> list[str]:
    return list(OBJECTIVES)


__all__ = [
    "AGG_MODES", "FORMS", "KL_ESTIMATORS", "METRIC_KEYS", "OBJECTIVES", "SELECTION_MODES", "LossOutput",
    "ObjectiveHParams", "advantages", "aggregate_sum", "aggregation", "closed_form", "dapo", "get_objective",
    "grpo", "grpo_gated", "grpo_n", "grpo_unlikely", "group_shaping", "gspo", "gspo_n", "nsr_gated", "simko", "hparams_from_config", "kept_rows", "kl_estimate", "list_objectives",
    "loss_denominator", "loss_value", "nsr", "ppo", "psr", "reinforce", "select_tokens", "selection",
    "summarize_metrics", "token_weights", "w_reinforce",
]
