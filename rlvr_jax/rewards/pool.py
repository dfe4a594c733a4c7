"""A reusable process pool that grades responses with a hard per-item timeout.

Each worker is a separate process (start method ``forkserver`` on Linux, ``spawn`` elsewhere: never a plain
``fork`` of a process that holds JAX/XLA threads, which can deadlock). The parent hands one item at a time to
each idle worker and keeps a deadline per item:

* inside the worker a soft ``SIGALRM`` timer fires at ``soft_fraction * timeout_s`` and turns the item into
  ``timeout`` while the worker survives (this catches sympy's pure-Python loops, e.g. ``9^{9^{9^{9}}}``);
* at ``timeout_s`` after dispatch the parent **kills** the worker (SIGKILL), records ``timeout`` and starts a
  replacement, so no item can take longer than ``timeout_s`` however it hangs;
* a worker that dies (segfault, out of memory under ``memory_limit_mb``) yields ``error`` and is replaced;
* memory stays bounded: each worker runs under an address-space limit (``memory_limit_mb``, RLIMIT_AS) and is
  retired and replaced between items once it has graded ``max_items_per_worker`` items or its resident memory
  exceeds ``max_rss_mb`` (sympy and math_verify caches grow on adversarial input).

Everything the parent does per item outside a worker (the fallback extraction for items that timed out or
failed, see ``_finish``) is linear in the response length (rlvr_jax/rewards/extract.py), so no item costs the
calling process more than a few milliseconds per 100 KB of response.

So every item gets exactly one status: correct, incorrect, no_answer, timeout or error. The pool is meant to
live for a whole run (the trainer grades every step): create it once, call :meth:`GraderPool.grade_math` /
:meth:`GraderPool.grade_problems` as often as needed, and :meth:`close` it (or use ``with``).
``num_workers=0`` grades in the calling process (soft timeout only, main thread only): for debugging.

Workers start without re-importing the main module (``worker_handle.no_main_module``): spawn and forkserver
would otherwise re-run it in every worker, which kills them when the script was read from stdin
(``python -``: there is no file ``<stdin>``) or grades at import time without an ``if __name__ == "__main__":``
guard. Both work. Workers that still die before reporting ready raise an error naming what to check.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import multiprocessing
import multiprocessing.connection as mpc
import os
import sys
import threading
import time
from typing import Sequence

from rlvr_jax.rewards.extract import extract_answer
from rlvr_jax.rewards.result import GradeResult, reward_value
from rlvr_jax.rewards.worker_handle import WorkerHandle as _Worker
from rlvr_jax.rewards.worker_handle import startup_failure_message

_WORKER_MODULE = "rlvr_jax.rewards.worker"


def default_start_method() -> str:
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


def default_num_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclasses.dataclass
class PoolStats:
    items: int = 0
    seconds: float = 0.0  # wall time spent inside grade calls
    timeouts: int = 0
    hard_kills: int = 0
    worker_deaths: int = 0
    workers_started: int = 0
    recycles: int = 0  # workers retired for their item count or memory (not deaths)
    max_worker_rss_mb: float = 0.0  # largest resident memory a worker reported after an item


class GraderPool:
    """Process pool for grading (see the module docstring for the timeout contract)."""

    def __init__(self, num_workers: int | None = None, timeout_s: float = 10.0, *, reward_format: str = "pm1",
                 start_method: str | None = None, memory_limit_mb: int | None = 4096, soft_fraction: float = 0.8,
                 startup_timeout_s: float = 120.0, max_items_per_worker: int | None = 2000,
                 max_rss_mb: float | None = 1024.0):
        if timeout_s <= 0:
            raise ValueError(f"GraderPool: timeout_s must be > 0, got {timeout_s}")
        if not 0.0 <= soft_fraction <= 1.0:
            raise ValueError(f"GraderPool: soft_fraction must be in [0, 1] (0 disables the soft timer), "
                             f"got {soft_fraction}")
        reward_value(True, reward_format)  # validates the name
        if max_items_per_worker is not None and int(max_items_per_worker) < 1:
            raise ValueError(f"GraderPool: max_items_per_worker must be >= 1 or None, got {max_items_per_worker}")
        if max_rss_mb is not None and float(max_rss_mb) <= 0:
            raise ValueError(f"GraderPool: max_rss_mb must be > 0 or None, got {max_rss_mb}")
        self.max_items_per_worker = None if max_items_per_worker is None else int(max_items_per_worker)
        self.max_rss_mb = None if max_rss_mb is None else float(max_rss_mb)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"GraderPool: num_workers must be >= 0, got {num_workers}")
        self.timeout_s = float(timeout_s)
        self.reward_format = reward_format
        self.soft_fraction = float(soft_fraction)
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout_s = float(startup_timeout_s)
        self.start_method = start_method or default_start_method()
        self.stats = PoolStats()
        self._workers: list[_Worker] = []
        self._warm_kinds = {"math"}  # task kinds every (new) worker imports before reporting ready
        self._lock = threading.Lock()
        self._closed = False
        if self.num_workers > 0:
            self._ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                self._ctx.set_forkserver_preload([_WORKER_MODULE])
            for _ in range(self.num_workers):
                self._spawn()

    # ----------------------------------------------------------------------------------------- workers
    def _soft(self, timeout_s: float) -> float | None:
        return self.soft_fraction * timeout_s if self.soft_fraction > 0 else None

    def _spawn(self) -> _Worker:
        w = _Worker(self._ctx, self._soft(self.timeout_s), self.memory_limit_mb, self._warm_kinds)
        self._workers.append(w)
        self.stats.workers_started += 1
        return w

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers.remove(w)
        self._spawn()

    def _retire_if_worn(self, w: _Worker) -> None:
        """Replaces an idle worker that reached ``max_items_per_worker`` items or ``max_rss_mb``."""
        worn = ((self.max_items_per_worker is not None and w.items_done >= self.max_items_per_worker)
                or (self.max_rss_mb is not None and w.rss_mb > self.max_rss_mb))
        if worn:
            w.stop()
            self._workers.remove(w)
            self.stats.recycles += 1
            self._spawn()

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    # ------------------------------------------------------------------------------------------ grading
    def grade_tasks(self, tasks: Sequence[tuple], timeout_s: float | None = None) -> list[tuple]:
        """Raw outcomes ``(status, extracted, score, error, seconds)`` of worker tasks (see worker.py), in order."""
        if self._closed:
            raise RuntimeError("GraderPool is closed")
        timeout_s = self.timeout_s if timeout_s is None else float(timeout_s)
        t0 = time.monotonic()
        with self._lock:
            if self.num_workers == 0:
                out = self._grade_in_process(tasks, timeout_s)
            else:
                out = self._grade_with_workers(tasks, timeout_s)
        self.stats.items += len(tasks)
        self.stats.seconds += time.monotonic() - t0
        self.stats.timeouts += sum(o[0] == "timeout" for o in out)
        return out

    def _grade_in_process(self, tasks, timeout_s):
        from rlvr_jax.rewards.math_grader import quiet_math_verify
        from rlvr_jax.rewards.worker import run_task_with_soft_timeout

        quiet_math_verify()
        in_main = threading.current_thread() is threading.main_thread()
        out = []
        for task in tasks:
            t = time.monotonic()
            res = run_task_with_soft_timeout(task, timeout_s if in_main else None)
            out.append((*res, time.monotonic() - t))
        return out

    def _grade_with_workers(self, tasks, timeout_s):
        """Dispatches ``tasks`` one at a time to idle workers and collects one outcome per task.

        One event loop on purpose (about 100 lines): dispatch, hard deadlines, worker deaths, start-up failures and
        recycling all act on the same worker and item state between two ``multiprocessing.connection.wait``
        calls, and splitting it would pass that state through every helper."""
        soft = self._soft(timeout_s)
        results: list[tuple | None] = [None] * len(tasks)
        queue = collections.deque(range(len(tasks)))
        dispatched_at: dict[int, float] = {}
        remaining = len(tasks)
        failed_starts = 0
        self._warm_kinds |= {t[0] for t in tasks}
        while remaining:
            now = time.monotonic()
            # Warm idle workers up for new task kinds (imports never count against an item's timeout).
            for w in self._workers:
                missing = self._warm_kinds - w.warm_kinds
                if w.ready and w.item is None and missing:
                    kind = sorted(missing)[0]
                    w.conn.send(("__warm__", kind))
                    w.warm_kinds.add(kind)
                    w.ready, w.started = False, now
            # Hand items to idle, ready workers.
            for w in self._workers:
                if w.ready and w.item is None and queue:
                    idx = queue.popleft()
                    try:
                        w.conn.send((idx, tasks[idx], soft))
                    except (OSError, BrokenPipeError):
                        queue.appendleft(idx)
                        w.ready = False
                        continue
                    w.item, w.deadline = idx, now + timeout_s
                    dispatched_at[idx] = now
            # Wait for a result, a ready message, a dead worker or the nearest deadline.
            busy = [w for w in self._workers if w.item is not None]
            starting = [w for w in self._workers if not w.ready]
            wait_timeout = min([w.deadline for w in busy] + [now + 1.0]) - now
            waitables = {}
            for w in busy + starting:
                waitables[w.conn] = w
                waitables[w.process.sentinel] = w
            ready = mpc.wait(list(waitables), timeout=max(0.0, wait_timeout)) if waitables else []
            handled = set()
            for obj in ready:
                w = waitables[obj]
                if id(w) in handled or w not in self._workers:
                    continue
                handled.add(id(w))
                msg = None
                try:
                    if w.conn.poll():
                        msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:
                    if w.process.is_alive() and w.process.sentinel not in ready:
                        continue
                    # The worker died.
                    w.process.join(timeout=1)
                    code = w.process.exitcode
                    self.stats.worker_deaths += 1
                    if w.item is not None:
                        idx = w.item
                        results[idx] = ("error", None, 0.0, f"grader worker died (exit code {code})",
                                        time.monotonic() - dispatched_at[idx])
                        remaining -= 1
                    elif not w.ready:
                        failed_starts += 1
                        if failed_starts > 3 * max(1, self.num_workers):
                            raise RuntimeError(startup_failure_message(code))
                    self._replace(w)
                    continue
                if not w.ready:
                    if msg[0] == "ready":
                        w.ready = True
                    continue
                idx, outcome, rss_mb = msg
                if idx == w.item:
                    results[idx] = (*outcome, time.monotonic() - dispatched_at[idx])
                    remaining -= 1
                    w.item = None
                    w.items_done += 1
                    w.rss_mb = float(rss_mb)
                    self.stats.max_worker_rss_mb = max(self.stats.max_worker_rss_mb, w.rss_mb)
                    self._retire_if_worn(w)
            # Enforce the hard deadlines.
            now = time.monotonic()
            for w in list(self._workers):
                if w.item is not None and now >= w.deadline:
                    idx = w.item
                    results[idx] = ("timeout", None, 0.0, f"killed after {timeout_s:.3g}s",
                                    now - dispatched_at[idx])
                    remaining -= 1
                    self.stats.hard_kills += 1
                    self._replace(w)
                elif not w.ready and now - w.started > self.startup_timeout_s:
                    raise RuntimeError(f"a grader worker did not start within {self.startup_timeout_s:.0f}s")
        return results

    def _finish(self, outcomes, responses, extract_fn) -> list[GradeResult]:
        out = []
        for (status, extracted, score, error, seconds), response in zip(outcomes, responses):
            if extracted is None and status in ("timeout", "error"):
                try:
                    extracted = extract_fn(response)
                except Exception:  # noqa: BLE001
                    extracted = None
            correct = status == "correct"
            out.append(GradeResult(status=status, extracted=extracted, correct=correct,
                                   reward=reward_value(correct, self.reward_format), score=float(score),
                                   error=error, seconds=float(seconds)))
        return out

    def grade_math(self, responses: Sequence[str], answers: Sequence[str], *, fallbacks: bool = True,
                   timeout_s: float | None = None) -> list[GradeResult]:
        """Grades ``responses[i]`` against the gold ``answers[i]`` (see :mod:`rlvr_jax.rewards.math_grader`)."""
        if len(responses) != len(answers):
            raise ValueError(f"grade_math: {len(responses)} responses but {len(answers)} answers")
        tasks = [("math", str(r), str(a), bool(fallbacks)) for r, a in zip(responses, answers)]
        outcomes = self.grade_tasks(tasks, timeout_s)
        return self._finish(outcomes, responses, lambda r: extract_answer(r, fallbacks=fallbacks))

    def grade_problems(self, problems: Sequence, responses: Sequence[str], *, fallbacks: bool = True,
                       timeout_s: float | None = None) -> list[GradeResult]:
        """Grades responses to :class:`rlvr_jax.data.Problem` s: math problems by equivalence with ``answer``,
        ``rg:<task>`` problems by the Reasoning Gym task's own scorer, ``code:<name>`` problems by running the
        extracted program on their tests in a sandbox."""
        if len(problems) != len(responses):
            raise ValueError(f"grade_problems: {len(problems)} problems but {len(responses)} responses")
        if any(p.task.startswith("code:") for p in problems):  # sandboxed execution, see code_grader.py
            from rlvr_jax.rewards.code_grader import grade_code_problems

            return grade_code_problems(self, problems, responses, fallbacks=fallbacks, timeout_s=timeout_s)
        tasks = []
        for p, r in zip(problems, responses):
            if p.task == "math":
                tasks.append(("math", str(r), str(p.answer), bool(fallbacks)))
            elif p.task.startswith("rg:"):
                tasks.append(("rg", str(r), p.task[3:], (p.metadata or {}).get("entry")))
            else:
                raise ValueError(f"problem {p.id!r} has unknown task {p.task!r}; expected 'math' or 'rg:<name>'")
        outcomes = self.grade_tasks(tasks, timeout_s)
        from rlvr_jax.rewards.reasoning_gym import extract_rg_answer

        return self._finish(outcomes, responses, extract_rg_answer)

    def throughput(self) -> float:
        """Items graded per second of wall time, per worker (stats over this pool's life)."""
        if self.stats.seconds <= 0:
            return 0.0
        return self.stats.items / self.stats.seconds / max(1, self.num_workers)

    # ------------------------------------------------------------------------------------------- life
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            w.stop()
        self._workers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


_DEFAULT_POOL: GraderPool | None = None


def get_default_pool(num_workers: int | None = None) -> GraderPool:
    """A process-wide pool shared by :func:`grade_math` calls (re-created if ``num_workers`` changes)."""
    global _DEFAULT_POOL
    want = default_num_workers() if num_workers is None else int(num_workers)
    if _DEFAULT_POOL is None or _DEFAULT_POOL._closed or _DEFAULT_POOL.num_workers != want:
        if _DEFAULT_POOL is not None:
            _DEFAULT_POOL.close()
        _DEFAULT_POOL = GraderPool(want)
    return _DEFAULT_POOL


@atexit.register
def _close_default_pool() -> None:
    if _DEFAULT_POOL is not None:
        _DEFAULT_POOL.close()


def grade_math(responses: Sequence[str], answers: Sequence[str], timeout_s: float = 10.0, *,
               num_workers: int | None = None, reward_format: str = "pm1", fallbacks: bool = True,
               pool: GraderPool | None = None) -> list[GradeResult]:
    """Grades math responses against gold answers with a hard per-item timeout.

    Uses ``pool`` when given, else a process-wide default pool (kept alive across calls, closed at exit).
    ``reward_format``: ``pm1`` -> {-1, +1}, ``01`` -> {0, 1}.
    """
    p = pool if pool is not None else get_default_pool(num_workers)
    results = p.grade_math(responses, answers, fallbacks=fallbacks, timeout_s=timeout_s)
    if reward_format != p.reward_format:
        results = [dataclasses.replace(r, reward=reward_value(r.correct, reward_format)) for r in results]
    return results
