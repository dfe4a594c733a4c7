"""Whether a program's output on one test is right, by LiveCodeBench's rules (reproduced, not imported).

**stdin tests** (:func:`stdin_output_matches`): the captured stdout and the expected output are stripped and
split into lines; the line counts must agree; each pair of lines (each stripped) must be equal as strings,
or else both must split on whitespace into the same number of tokens that all parse as decimals and are equal
as ``decimal.Decimal`` values, so ``1.0`` equals ``1.00`` and ``3`` equals ``3.0``, but ``0.333`` does not
equal ``0.3333`` and ``yes`` does not equal ``YES``.

**functional tests** (:func:`functional_output_matches`): the return value of ``func_name`` (a tuple counts as
a list) is compared with ``==`` to the JSON-decoded expected output. The harness hands the return value over
as JSON, so a dict with integer keys reaches the comparison with string keys.

The input of a functional test is one JSON value per line, the arguments in order (:func:`functional_args`).
"""
from __future__ import annotations

import decimal
import json


def _same_decimals(got: str, want: str) -> bool:
    """Both lines are the same number of decimal tokens, pairwise equal. Token counts are compared before
    anything is parsed (a line of millions of tokens costs no parsing), and a token that breaks the comparison
    (``sNaN`` raises on ``==``) is a mismatch."""
    got_toks, want_toks = got.split(), want.split()
    if len(got_toks) != len(want_toks):
        return False
    try:
        return all(decimal.Decimal(g) == decimal.Decimal(w) for g, w in zip(got_toks, want_toks))
    except (ArithmeticError, ValueError):  # decimal.InvalidOperation is an ArithmeticError
        return False


def stdin_output_matches(output: str, expected: str) -> tuple[bool, str]:
    """``(matches, reason)`` for a stdin test (see the module docstring)."""
    got_lines = output.strip().split("\n")
    want_lines = expected.strip().split("\n")
    if len(got_lines) != len(want_lines):
        return False, f"{len(got_lines)} output line(s), expected {len(want_lines)}"
    for k, (got, want) in enumerate(zip(got_lines, want_lines)):
        got, want = got.strip(), want.strip()
        if got == want:
            continue
        if not _same_decimals(got, want):
            return False, f"line {k + 1}: got {got[:80]!r}, expected {want[:80]!r}"
    return True, ""


def functional_output_matches(output_json: str, expected_json: str) -> tuple[bool, str]:
    """``(matches, reason)`` for a functional test: JSON of the return value against the expected JSON."""
    try:
        got = json.loads(output_json)
    except ValueError as e:
        return False, f"return value is not JSON ({e})"
    want = json.loads(expected_json)
    if isinstance(got, tuple):
        got = list(got)
    if got == want:
        return True, ""
    return False, f"returned {output_json[:80]}, expected {expected_json[:80]}"


def functional_args(test_input: str) -> list:
    """The arguments of a functional test: one JSON value per non-blank line."""
    return [json.loads(line) for line in test_input.split("\n") if line.strip()]
