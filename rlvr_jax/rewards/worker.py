"""What runs inside a grading worker process: one grading task in, one raw outcome out.

A task is a tuple: ``("math", response, gold, fallbacks)``, ``("rg", response, task_name, entry)`` or
``("code", response, spec)`` (see code_grader.py).
The outcome is ``(status, extracted, score, error)``.

Importing this module imports math_verify/sympy, so forkserver workers that preload it start warm.
The worker arms a soft ``SIGALRM`` timer per item (it interrupts pure-Python sympy loops and keeps the worker
alive); work stuck where a signal cannot reach it is left to the parent's hard kill (see pool.py).
"""
from __future__ import annotations

import os
import signal
import traceback

import math_verify  # noqa: F401  (warm import for forkserver preloading)

from rlvr_jax.rewards.math_grader import grade_math_response, quiet_math_verify


class SoftTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so library code catching Exception cannot swallow it."""


def run_task(task: tuple) -> tuple[str, str | None, float, str | None]:
    """Grades one task in this process (no time limit)."""
    kind = task[0]
    if kind == "math":
        _, response, gold, fallbacks = task
        if not str(gold).strip():
            return "error", None, 0.0, "blank gold answer"
        status, extracted = grade_math_response(response, gold, fallbacks=fallbacks)
        return status, extracted, float(status == "correct"), None
    if kind == "rg":
        from rlvr_jax.rewards.reasoning_gym import grade_rg_response

        _, response, task_name, entry = task
        status, extracted, score = grade_rg_response(response, task_name, entry)
        return status, extracted, score, None
    if kind == "code":
        from rlvr_jax.rewards.code_grader import run_code_task

        return run_code_task(task[1], task[2])
    raise ValueError(f"unknown grading task kind {kind!r}; expected 'math', 'rg' or 'code'")


def _on_alarm(signum, frame):
    raise SoftTimeout()


def run_task_with_soft_timeout(task: tuple, soft_timeout_s: float | None):
    """``run_task`` under a SIGALRM timer (main thread only); exceptions become ``error`` outcomes."""
    use_alarm = bool(soft_timeout_s) and hasattr(signal, "setitimer")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(soft_timeout_s))
    out = None
    try:
        out = run_task(task)
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeout:
        if out is None:
            out = ("timeout", None, 0.0, f"soft timeout after {soft_timeout_s:.3g}s")
    except Exception as e:  # noqa: BLE001 - every failure becomes a status, the batch goes on
        out = ("error", None, 0.0, f"{type(e).__name__}: {e}"[:500])
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return out


def _limit_memory(memory_limit_mb: int | None) -> None:
    if not memory_limit_mb:
        return
    try:
        import resource

        limit = int(memory_limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not enforceable on this platform; the hard timeout still bounds the item


def resident_mb() -> float:
    """Resident memory of this process in MiB (from /proc; 0.0 where that is not available)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


def warm(kind: str) -> None:
    """Imports what tasks of ``kind`` need, so that import time never counts against an item's timeout."""
    if kind == "math":
        run_task(("math", "\\boxed{\\frac{1}{2}}", "0.5", True))  # also fills the parser caches
    elif kind == "rg":
        import reasoning_gym  # noqa: F401  (several seconds on first import)
    elif kind == "code":
        import rlvr_jax.rewards.code_grader  # noqa: F401
    else:
        raise ValueError(f"unknown grading task kind {kind!r}")


def worker_main(conn, soft_timeout_s: float | None, memory_limit_mb: int | None,
                warm_kinds: tuple[str, ...] = ("math",)) -> None:
    """Worker loop. Messages in: ``(item_id, task, soft_timeout_s)``, ``("__warm__", kind)``, ``None`` (stop).
    Messages out: ``("ready", pid)`` after start-up and after each warm-up, ``(item_id, outcome, rss_mb)`` per
    task (``rss_mb``: this process's resident memory after the item, which the pool uses to retire workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _limit_memory(memory_limit_mb)
    quiet_math_verify()
    for kind in warm_kinds:
        try:
            warm(kind)
        except Exception:  # noqa: BLE001 - a broken import shows up as per-item errors later
            traceback.print_exc()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if msg[0] == "__warm__":
            try:
                warm(msg[1])
            except Exception:  # noqa: BLE001
                traceback.print_exc()
            conn.send(("ready", os.getpid()))
            continue
        item_id, task, soft = msg
        outcome = run_task_with_soft_timeout(task, soft if soft is not None else soft_timeout_s)
        conn.send((item_id, outcome, resident_mb()))
