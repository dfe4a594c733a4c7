"""Calls-mode grading, on the trusted side: the dataset's tests run here, the model's function in the sandbox.

* **functional** (LiveCodeBench, :func:`grade_functional`): per test, a fresh test process runs the program
  and answers one call (``Solution().<func_name>`` or a top-level ``<func_name>``) on the test's arguments;
  the returned plain data is turned into JSON here (a tuple becomes a list, dict keys strings) and compared
  with the expected JSON by :func:`~rlvr_jax.rewards.code_scoring.functional_output_matches`.
* **check** (HumanEval, :func:`grade_check`): the problem's prompt (its helpers, e.g. ``poly``) and its
  ``check`` function are compiled and run *here*, with ``optimize=0`` so that ``assert`` statements stay even
  under ``python -O``; ``check`` receives a ``candidate`` that forwards each call to the model's entry point in
  one test process and returns the decoded value. The program never sees the test code or the expected values,
  and its own ``poly`` or ``math`` or ``abs`` are not the ones ``check`` uses.

A pass needs every call answered with plain data, the test code run to its end without an exception, and the
test process still alive and clean at the end (:class:`~rlvr_jax.rewards.sandbox_session.CallSession`). Both
return ``(code status, error)`` with ``error`` None on ``passed``.
"""
from __future__ import annotations

import functools
import json
import sys
import traceback

from rlvr_jax.rewards.code_scoring import functional_args, functional_output_matches
from rlvr_jax.rewards.sandbox import SandboxConfig
from rlvr_jax.rewards.sandbox_session import CallFailed, CallSession

_CHECK_FILE = "<check>"


def grade_functional(program: str, tests, func_name: str, cfg: SandboxConfig, *, header: str | None = None,
                     first_test: int = 0) -> tuple[str, str | None]:
    with CallSession(program, cfg, func_name=func_name, lookup="leetcode", header=header, num_tests=len(tests),
                     _checked=True) as session:
        for i, test in enumerate(tests):
            where = f"test {first_test + i}: "
            try:
                value = session.call(functional_args(test["input"]), spawn=True, end=True)
            except CallFailed as e:
                return e.status, where + e.detail
            try:
                got = json.dumps(value)
            except (TypeError, ValueError) as e:
                return "failed", where + f"returned a {type(value).__name__} that JSON cannot hold ({e})"
            ok, reason = functional_output_matches(got, test["output"])
            if not ok:
                return "failed", where + reason
    return "passed", None


@functools.lru_cache(maxsize=256)
def _check_code(prompt: str, check: str):
    return compile(f"{prompt}\n\n{check}\n", _CHECK_FILE, "exec", dont_inherit=True, optimize=0)


def _failing_line(tb, prompt: str, check: str) -> str:
    """`` at check line N: <source>`` for the innermost frame of the test code in traceback ``tb``."""
    offset = prompt.count("\n") + 2  # _check_code puts the check code after the prompt and a blank line
    lines = check.split("\n")
    for frame, lineno in reversed(list(traceback.walk_tb(tb))):
        if frame.f_code.co_filename == _CHECK_FILE and 0 < lineno - offset <= len(lines):
            return f" at check line {lineno - offset}: {lines[lineno - offset - 1].strip()[:200]}"
    return ""


def grade_check(program: str, prompt: str, check: str, entry: str, cfg: SandboxConfig) -> tuple[str, str | None]:
    namespace = {"__name__": "__check__"}
    exec(_check_code(prompt, check), namespace)  # trusted: the dataset's prompt and test code
    with CallSession(program, cfg, func_name=entry, lookup="function", header="", num_tests=1,
                     _checked=True) as session:

        def candidate(*args):
            return session.call(args, spawn=session.calls == 0 and session.failure is None)

        namespace[entry] = candidate  # some checks call the entry point by name (HumanEval/33: sort_third)
        try:
            namespace["check"](candidate)
        except CallFailed as e:
            return e.status, e.detail
        except AssertionError:
            tb = sys.exc_info()[2]
            return "failed", "AssertionError" + _failing_line(tb, prompt, check)
        except Exception as e:  # noqa: BLE001 - e.g. a TypeError comparing a wrong type: a wrong answer
            tb = sys.exc_info()[2]
            return "failed", f"check raised {type(e).__name__}: {str(e)[:300]}" + _failing_line(tb, prompt, check)
        if session.failure is not None:  # check swallowed a failed call
            return session.failure.status, session.failure.detail
        if session.calls == 0:
            return "failed", "check called the entry point no time"
        try:
            session.end()
        except CallFailed as e:
            return e.status, e.detail
    return "passed", None
