"""Grading code problems (``Problem.task`` ``code:lcb`` / ``code:humaneval``): extraction, sandboxed runs, merge.

1. The answer is the **last fenced block** of the response (```` ```python ... ``` ````, any or no language
   tag; an empty or unclosed block does not count). No block -> ``no_answer``.
2. The program (HumanEval: the problem's prompt + the block) runs in a fresh sandbox
   (:mod:`rlvr_jax.rewards.sandbox`) on the problem's tests, stopping at the first failure. Nothing the
   program produces is trusted: ``stdin`` problems compare its captured stdout outside the sandbox
   (:mod:`rlvr_jax.rewards.code_scoring`); ``functional`` and ``check`` (HumanEval) problems run it as a
   server of calls and run the dataset's tests here, on the plain data it returns
   (:mod:`rlvr_jax.rewards.code_calls`).
3. Code statuses (:data:`CODE_STATUSES`): ``passed`` (every test), ``failed`` (the first failing test is named
   in ``error``), ``timeout``, ``memory``, ``runtime_error`` (an exception, a non-zero exit or a signal in
   stdin mode, or output over the cap), ``early_exit`` (calls mode: the program's process ended, or the
   program raised ``SystemExit``, before the tests finished), ``bad_value`` (a return value that is not plain
   data of exact built-in types, or NaN), ``protocol_error`` (bytes on the reply pipe that are not the reply
   to the pending call), ``syntax_error``, ``no_answer``, ``sandbox_error``. In a
   :class:`rlvr_jax.rewards.GradeResult` ``passed`` is reported as ``correct`` and ``failed`` as
   ``incorrect`` (the statuses every task shares); the others keep their names. Reward: +1 for ``passed``,
   else -1 (``pm1``) or 0 (``01``).

:func:`grade_code_problems` is what :meth:`GraderPool.grade_problems` calls for code problems: it splits each
response's tests into chunks (``pool.code_tests_per_task``; by default only when there are fewer responses
than workers, so that one problem's tests run in parallel), grades the chunks as pool tasks under a time
limit derived from the sandbox limits, and merges them in test order (the first failing chunk decides).
Sandbox limits: ``pool.code_sandbox`` (a :class:`SandboxConfig`) when set, else the defaults with
``$RLVR_CODE_ISOLATION``.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from rlvr_jax.rewards.code_calls import grade_check, grade_functional
from rlvr_jax.rewards.code_scoring import stdin_output_matches
from rlvr_jax.rewards.sandbox import SandboxConfig, check_isolation, run_stdin

CODE_PREFIX = "code:"
CODE_STATUSES = ("passed", "failed", "timeout", "memory", "runtime_error", "early_exit", "bad_value",
                 "protocol_error", "syntax_error", "no_answer", "sandbox_error")
CODE_MODES = ("stdin", "functional", "check")
_TO_GRADE_STATUS = {"passed": "correct", "failed": "incorrect"}
_FROM_RUN_STATUS = {"output_limit": "runtime_error"}
_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def is_code_task(task: str) -> bool:
    return task.startswith(CODE_PREFIX)


def extract_code(response: str) -> str | None:
    """The content of the last complete, non-empty fenced block, or None."""
    blocks = [b for b in _FENCE_RE.findall(response) if b.strip()]
    return blocks[-1] if blocks else None


def grade_status(code_status: str) -> str:
    """The :class:`GradeResult` status of a code status (``passed`` -> ``correct``, ``failed`` -> ``incorrect``)."""
    return _TO_GRADE_STATUS.get(code_status, code_status)


def assemble_program(code: str, spec: dict) -> str:
    """The program that runs in the sandbox: ``prefix + code`` (HumanEval: the prompt, then the completion;
    the test code never enters the sandbox)."""
    return "\n".join(p for p in (spec.get("prefix") or "", code) if p)


def run_code_task(response: str, spec: dict) -> tuple[str, str | None, float, str | None]:
    """Grades one response on ``spec`` (one chunk of a problem's tests) in this process; returns the worker
    outcome ``(grade status, extracted code, score, error)``."""
    code = extract_code(response)
    if code is None:
        return "no_answer", None, 0.0, None
    tests, mode = spec["tests"], spec["mode"]
    cfg = SandboxConfig(**spec["sandbox"])
    first = int(spec.get("first_test", 0))
    program = assemble_program(code, spec)
    if mode == "check":
        status, error = grade_check(program, spec.get("prefix") or "", spec["check"], spec["func_name"], cfg)
        return _outcome(status, code, error)
    if mode == "functional":
        status, error = grade_functional(program, tests, spec["func_name"], cfg, header=spec.get("header"),
                                         first_test=first)
        return _outcome(status, code, error)
    if mode != "stdin":
        raise ValueError(f"code problem mode {mode!r}; expected one of {CODE_MODES}")
    mismatch: dict = {}

    def check(i, run):
        ok, reason = stdin_output_matches(run.output.decode("utf-8", "replace"), tests[i]["output"])
        if not ok:
            mismatch[i] = reason
        return ok

    runs = run_stdin(program, [t["input"] for t in tests], cfg, header=spec.get("header"), on_result=check,
                     _checked=True)  # grade_code_problems checked the isolation in the parent
    for i, run in enumerate(runs):
        if run.status == "ok" and i not in mismatch:
            continue
        status = "failed" if i in mismatch else _FROM_RUN_STATUS.get(run.status, run.status)
        where = "" if status in ("syntax_error", "sandbox_error") else f"test {first + i}: "
        return _outcome(status, code, where + (mismatch.get(i) or run.detail))
    if len(runs) < len(tests):
        return "sandbox_error", code, 0.0, f"only {len(runs)} of {len(tests)} tests reported"
    return "correct", code, 1.0, None


def _outcome(status: str, code: str, error: str | None) -> tuple[str, str | None, float, str | None]:
    if status == "passed":
        return "correct", code, 1.0, None
    error = error or ""
    return grade_status(status), code, 0.0, error if len(error) <= 1000 else "..." + error[-1000:]


def code_status_counts(problems: Sequence, results: Sequence) -> dict[str, int]:
    """``{"reward/code_status/<status>": count}`` over the code problems of a graded batch, every status of
    :data:`CODE_STATUSES` included (zeros too, so each is a continuous series); {} when there is no code
    problem. A hack shows up in a run as a sudden jump of one status (early_exit, bad_value, ...)."""
    statuses = [r.status for p, r in zip(problems, results) if is_code_task(p.task)]
    if not statuses:
        return {}
    return {f"reward/code_status/{s}": sum(x == grade_status(s) for x in statuses) for s in CODE_STATUSES}


def _chunks(n_tests: int, per_task: int) -> list[tuple[int, int]]:
    per_task = max(1, per_task)
    return [(s, min(n_tests, s + per_task)) for s in range(0, n_tests, per_task)]


def _tests_per_task(pool, n_responses: int, n_tests: int) -> int:
    fixed = getattr(pool, "code_tests_per_task", None)
    if fixed:
        return int(fixed)
    workers = max(1, pool.num_workers)
    if n_responses >= workers:
        return n_tests
    return max(1, math.ceil(n_tests / math.ceil(workers / n_responses)))


def code_spec(problem, cfg: SandboxConfig) -> dict:
    """The worker-side description of a code problem (tests and how to run them)."""
    meta = problem.metadata or {}
    if not meta.get("tests"):
        raise ValueError(f"code problem {problem.id!r} has no tests in metadata['tests']")
    if meta.get("mode") not in CODE_MODES:
        raise ValueError(f"code problem {problem.id!r}: metadata['mode'] is {meta.get('mode')!r}, expected one of "
                         f"{CODE_MODES}")
    if meta["mode"] in ("functional", "check") and not meta.get("func_name"):
        raise ValueError(f"code problem {problem.id!r}: mode {meta['mode']!r} needs metadata['func_name']")
    if meta["mode"] == "check" and not meta.get("check"):
        raise ValueError(f"code problem {problem.id!r}: mode 'check' needs the test code in metadata['check']")
    return {"mode": meta["mode"], "tests": list(meta["tests"]), "func_name": meta.get("func_name"),
            "prefix": meta.get("prefix"), "check": meta.get("check"), "header": meta.get("header"),
            "sandbox": cfg.to_dict()}


def grade_code_problems(pool, problems: Sequence, responses: Sequence[str], *, fallbacks: bool = True,
                        timeout_s: float | None = None) -> list:
    """:meth:`GraderPool.grade_problems` for batches holding code problems (the others are graded as usual)."""
    from rlvr_jax.rewards.result import GradeResult, reward_value

    code_idx = [i for i, p in enumerate(problems) if is_code_task(p.task)]
    other_idx = [i for i in range(len(problems)) if i not in set(code_idx)]
    results: list = [None] * len(problems)
    if other_idx:
        graded = pool.grade_problems([problems[i] for i in other_idx], [responses[i] for i in other_idx],
                                     fallbacks=fallbacks, timeout_s=timeout_s)
        for i, g in zip(other_idx, graded):
            results[i] = g
    cfg = getattr(pool, "code_sandbox", None) or SandboxConfig.from_env()
    check_isolation(cfg)
    tasks, owners, budget = [], [], 0.0
    for i in code_idx:
        spec = code_spec(problems[i], cfg)
        n = len(spec["tests"])
        for start, stop in _chunks(n, _tests_per_task(pool, len(code_idx), n)):
            tasks.append(("code", str(responses[i]), dict(spec, tests=spec["tests"][start:stop], first_test=start)))
            owners.append(i)
            budget = max(budget, cfg.run_budget_s(stop - start))
    soft = getattr(pool, "soft_fraction", 0.0) or 1.0
    limit = max(float(timeout_s or pool.timeout_s), (budget + 2.0) / soft + 1.0)
    outcomes = pool.grade_tasks(tasks, timeout_s=limit) if tasks else []
    merged: dict[int, list] = {}
    for owner, outcome in zip(owners, outcomes):
        merged.setdefault(owner, []).append(outcome)
    for i, parts in merged.items():
        status, extracted, score, error, seconds = next((o for o in parts if o[0] != "correct"), parts[0])
        if extracted is None and status not in ("no_answer",):
            extracted = extract_code(str(responses[i]))
        correct = status == "correct" and all(o[0] == "correct" for o in parts)
        results[i] = GradeResult(status=status, extracted=extracted, correct=correct,
                                 reward=reward_value(correct, pool.reward_format), score=float(correct),
                                 error=error, seconds=float(sum(o[4] for o in parts)))
    return results
