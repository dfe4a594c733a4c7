"""Verifiable rewards: answer extraction, math equivalence (math_verify), Reasoning Gym scoring, and a
process pool with hard per-item timeouts. Entry points: :func:`grade_math` and :class:`GraderPool`."""
from rlvr_jax.rewards.extract import extract_answer, last_boxed, normalize_answer
from rlvr_jax.rewards.math_grader import check_math
from rlvr_jax.rewards.pool import GraderPool, get_default_pool, grade_math
from rlvr_jax.rewards.result import REWARD_FORMATS, STATUSES, GradeResult, reward_value

__all__ = ["GradeResult", "GraderPool", "REWARD_FORMATS", "STATUSES", "check_math", "extract_answer",
           "get_default_pool", "grade_math", "last_boxed", "normalize_answer", "reward_value"]
