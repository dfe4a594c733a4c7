r"""Grading Reasoning Gym responses (the out-of-domain track): each task scores its own answers.

The problems come from :func:`rlvr_jax.data.reasoning_gym.load_reasoning_gym` (``Problem(task="rg:<task>")``
with the generator entry in ``metadata["entry"]``, which the task's ``score_answer(answer, entry)`` needs because
many tasks accept several answers, e.g. countdown accepts any expression reaching the target). Grading
imports nothing from ``rlvr_jax.data`` (data -> rewards is the only direction, tests/test_layout.py).

Grading: the answer is the last ``\boxed{}`` (the prompt templates ask for one), else the last
``<answer>...</answer>`` (Reasoning Gym's native format), else the math fallbacks; the task scores it in
[0, 1] and the response is ``correct`` iff the score is 1 (partial-credit scores count as incorrect for the
binary reward; the raw score is kept in ``GradeResult.score``).
"""
from __future__ import annotations

import functools

from rlvr_jax.rewards.extract import extract_answer, last_boxed


def _answer_tags(response: str) -> list[str]:
    """Contents of the ``<answer>..</answer>`` pairs, left to right, non-overlapping (as the non-greedy regex
    ``<answer>(.*?)</answer>`` finds them) in linear time: that regex took 5.5 s on 10,000 unclosed tags."""
    tags, pos = [], 0
    while True:
        start = response.find("<answer>", pos)
        if start < 0:
            return tags
        end = response.find("</answer>", start + 8)
        if end < 0:
            return tags  # no closing tag after this opening one, so none after any later one either
        tags.append(response[start + 8:end])
        pos = end + 9


@functools.lru_cache(maxsize=None)
def _score_fn(task: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def extract_rg_answer(response: str) -> str | None:
    """Last ``\\boxed{}``, else last ``<answer>..</answer>``, else the math fallbacks."""
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    tags = [t.strip() for t in _answer_tags(response) if t.strip()]
    if tags:
        return tags[-1]
    return extract_answer(response, fallbacks=True)


def grade_rg_response(response: str, task: str, entry: dict) -> tuple[str, str | None, float]:
    """``(status, extracted, score)`` for a response to the Reasoning Gym ``entry`` of ``task``."""
    extracted = extract_rg_answer(response)
    if extracted is None:
        return "no_answer", None, 0.0
    score = float(_score_fn(task)(extracted, entry))
    return ("correct" if score >= 1.0 else "incorrect"), extracted, score
