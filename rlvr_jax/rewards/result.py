"""Grading outcome of one response and the reward mapping.

Statuses: ``correct`` | ``incorrect`` | ``no_answer`` (nothing extractable) | ``timeout`` (the item exceeded
its time limit and was abandoned) | ``error`` (the grader raised or its worker died); code problems add
``memory``, ``runtime_error``, ``early_exit``, ``bad_value``, ``protocol_error``, ``syntax_error`` and
``sandbox_error`` (see :mod:`rlvr_jax.rewards.code_grader`).
Only ``correct`` earns the positive reward; every other status earns the negative one:

  ``pm1``: correct -> +1, else -1 (the NSR paper's binary reward);   ``01``: correct -> 1, else 0.
"""
from __future__ import annotations

import dataclasses

STATUSES = ("correct", "incorrect", "no_answer", "timeout", "error",
            "memory", "runtime_error", "early_exit", "bad_value", "protocol_error", "syntax_error", "sandbox_error")
REWARD_FORMATS: dict[str, tuple[float, float]] = {"pm1": (-1.0, 1.0), "01": (0.0, 1.0)}


def reward_value(correct: bool, reward_format: str = "pm1") -> float:
    """The scalar reward of a graded response under ``reward_format`` (see module docstring)."""
    try:
        wrong, right = REWARD_FORMATS[reward_format]
    except KeyError:
        raise ValueError(f"unknown reward_format {reward_format!r}; expected one of {tuple(REWARD_FORMATS)}")
    return right if correct else wrong


@dataclasses.dataclass(frozen=True)
class GradeResult:
    """``score`` is the raw verifier score in [0, 1] (1/0 for math; Reasoning Gym's own score for rg tasks)."""

    status: str
    extracted: str | None
    correct: bool
    reward: float
    score: float = 0.0
    error: str | None = None
    seconds: float = 0.0

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"GradeResult.status must be one of {STATUSES}, got {self.status!r}")
        if self.correct != (self.status == "correct"):
            raise ValueError(f"GradeResult: correct={self.correct} contradicts status={self.status!r}")
