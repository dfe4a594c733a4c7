"""The remedies whose per-token loss is an existing objective's: registered under their own names so that a
remedy has one name everywhere (preset, registry, ``configs/tiny_cpu.py:NAME``, docs). What makes each one a
remedy happens before the loss, on whole groups (objectives/group_shaping.py), driven by the config fields its
preset sets (rlvr_jax/config/presets.py): the trainer applies them to any objective whose config sets them.

  grpo_unlikely  GRPO on unlikeliness-shaped rewards (algo.unlikeliness_beta = 0.25):
                 r~_i = r_i (1 - beta rank_i / G) for correct i, A_i = (r~_i - mean_g r~) / (std_g r~ + eps),
                 l_t = -min(r_t A_i, clip(r_t) A_i) + beta_KL KL_t
  grpo_gated     GRPO on the prompts with s_g <= m correct rollouts only (algo.gate_max_correct = 1):
                 L = GRPO's loss over the rows i with 1[s_g(i) <= m] (the others leave the batch)
  nsr_gated      NSR on the prompts with no correct rollout (algo.gate_max_correct = 0):
                 L = NSR's loss (Eq. 4, -1 on incorrect samples) over the rows of prompts with s_g = 0

The NSR warm-up is a schedule, not an objective (rlvr_jax/config/schedule.py); SimKO changes the per-token
weights (objectives/simko.py).
"""
from __future__ import annotations

from rlvr_jax.objectives.clipped_ratio import _clipped_ratio
from rlvr_jax.objectives.sample_reinforcement import _sample_reinforcement
from rlvr_jax.objectives.types import LossOutput, ObjectiveHParams


def grpo_unlikely(batch, hp: ObjectiveHParams) -> LossOutput:
    """GRPO's loss (NSR paper Eq. 10) on advantages from unlikeliness-shaped rewards (He et al. 2025):
    r~_i = r_i (1 - beta rank_i / G) for correct samples (rank by length-normalised likelihood, least likely 0),
    A_i = (r~_i - mean_g r~) / (std_g r~ + eps); l_t = -min(r_t A_i, clip(r_t) A_i) + beta_KL KL_t."""
    return _clipped_ratio(batch, hp, who="grpo_unlikely", kl_in_loss=True)


def grpo_gated(batch, hp: ObjectiveHParams) -> LossOutput:
    """GRPO's loss over the rows of prompts with at most m correct rollouts (zero-success gating, m =
    algo.gate_max_correct; the trainer drops the other rows): l_t = -min(r_t A_t, clip(r_t) A_t) + beta KL_t."""
    return _clipped_ratio(batch, hp, who="grpo_gated", kl_in_loss=True)


def nsr_gated(batch, hp: ObjectiveHParams) -> LossOutput:
    """NSR (Eq. 4) over the rows of prompts with at most m correct rollouts (m = algo.gate_max_correct, 0 in
    its preset: unsolved prompts only); only A_t < 0 tokens, l_t = -min(r_t A_t, clip(r_t) A_t) | by hp.form."""
    return _sample_reinforcement(batch, hp, who="nsr_gated", pos_weight=0.0, neg_weight=1.0)
