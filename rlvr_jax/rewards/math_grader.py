r"""Math answer equivalence with math_verify, and the verdict semantics of this project.

``check_math(pred, gold)`` decides whether an extracted answer ``pred`` equals the reference ``gold``:

1. fast path: the canonical strings are equal (:func:`rlvr_jax.rewards.extract.normalize_answer`: spaces,
   ``\left``/``\right``, ``$``, ``\text{}`` wrappers, ``\dfrac`` vs ``\frac``, degree and percent signs,
   ``{,}`` separators and a trailing period are ignored);
2. otherwise both are parsed as LaTeX with math_verify (each wrapped as ``$...$``) and compared with
   ``math_verify.verify(gold, pred)`` (numeric equality to 6 decimals after rounding, symbolic
   simplification, sets / intervals / tuples / matrices element-wise, equations ``x=5`` vs ``5``).

Deliberate verdicts (tested in tests/test_rewards.py):

* units and decorations are ignored: ``336^\circ`` == ``336``, ``50\%`` == ``50``, ``10\text{ cm}`` == ``10``,
  ``\$18.90`` == ``18.90`` (the MATH / AIME answer keys are inconsistent about them);
* a percentage also equals its fraction (``50\%`` == ``0.5``: math_verify's rule);
* exact forms and decimals are equal only when they agree to the rounding: ``\frac{1}{2}`` == ``0.5``,
  ``\frac{1}{3}`` == ``0.333333`` but ``\pi`` != ``3.14`` and ``\sqrt{2}`` != ``1.41``;
* unordered lists of solutions are sets (``1,2`` == ``2,1``), but intervals keep their endpoints'
  openness (``[1,2)`` != ``(1,2)``) and tuples their order (``(1,2)`` != ``(2,1)``);
* text answers compare case-insensitively as text (``\text{Evelyn}`` == ``Evelyn``), choices with or
  without parentheses (``\text{(C)}`` == ``C``);
* a blank gold answer is an ``error``, never a match (the loaders already skip such rows).

No timeouts here: the caller (the grading pool) enforces them.
"""
from __future__ import annotations

import functools
import logging

from rlvr_jax.rewards.extract import extract_answer, normalize_answer


def quiet_math_verify() -> None:
    """math_verify logs a warning per timed-out/disabled-timeout call; the pool reports those as statuses."""
    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "math_verify.utils",
                 "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _wrap(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    return f"${s}$"


def _parse(s: str):
    from math_verify import parse

    return parse(_wrap(s), parsing_timeout=None)


@functools.lru_cache(maxsize=8192)
def _parse_gold(gold: str):
    # Gold answers repeat across the n samples of a problem: parse each once per process.
    return _parse(gold)


def check_math(pred: str, gold: str) -> bool:
    """True when ``pred`` is equivalent to ``gold`` under the rules of the module docstring."""
    if not gold or not gold.strip():
        raise ValueError("check_math: blank gold answer (such rows must be skipped, not graded)")
    if not pred or not pred.strip():
        return False
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    from math_verify import verify

    gold_parsed = _parse_gold(gold.strip())
    if not gold_parsed:
        return False
    pred_parsed = _parse(pred)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def grade_math_response(response: str, gold: str, fallbacks: bool = True) -> tuple[str, str | None]:
    """``(status, extracted)`` with status in correct | incorrect | no_answer (raises on a blank gold)."""
    extracted = extract_answer(response, fallbacks=fallbacks)
    if extracted is None:
        return "no_answer", None
    return ("correct" if check_math(extracted, gold) else "incorrect"), extracted
