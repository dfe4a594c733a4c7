"""The parent's handle on one grading worker process (used by rlvr_jax.rewards.pool.GraderPool)."""
from __future__ import annotations

import contextlib
import sys
import time


@contextlib.contextmanager
def no_main_module():
    """Starts workers without re-importing the main module. spawn / forkserver children re-run the parent's
    ``__main__`` (a script by its ``__file__``, ``python -m`` by its ``__spec__`` name) before their target; the
    grading workers need nothing from it (their target is ``worker.worker_main``), and re-running it breaks in
    two common cases: a script read from stdin (``python -``: ``__file__`` is ``'<stdin>'``, no such file, every
    child dies with FileNotFoundError) and a script that grades at import time without an
    ``if __name__ == "__main__":`` guard (every child would start a pool of its own and die). So both
    attributes are hidden while a worker starts (and it skips importing the script's own imports)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    for k in saved:
        if k == "__file__":
            del main.__file__
        else:
            main.__spec__ = None
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def startup_failure_message(code) -> str:
    """The error for workers that die before reporting ready, with what to look at."""
    return (f"grader workers keep dying at start-up (last exit code {code}); each worker's own traceback is "
            f"printed on stderr above. A worker imports rlvr_jax.rewards.worker (math_verify, sympy) and nothing "
            f"from the main module, so the usual causes are a broken install of those packages, a memory limit "
            f"(GraderPool memory_limit_mb) too small to import them, or a process limit reached "
            f"(ulimit -u)")


class WorkerHandle:
    """The parent's side of one grading worker process: its pipe, process and per-item bookkeeping."""

    def __init__(self, ctx, soft_timeout_s, memory_limit_mb, warm_kinds):
        from rlvr_jax.rewards import worker as worker_mod

        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.conn = parent_conn
        self.warm_kinds = set(warm_kinds)
        self.process = ctx.Process(target=worker_mod.worker_main,
                                   args=(child_conn, soft_timeout_s, memory_limit_mb, tuple(sorted(warm_kinds))),
                                   daemon=True, name="rlvr-grader")
        with no_main_module():
            self.process.start()
        child_conn.close()
        self.ready = False
        self.item: int | None = None  # index of the item being graded
        self.deadline = 0.0
        self.started = time.monotonic()
        self.items_done = 0
        self.rss_mb = 0.0

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            if self.ready and self.item is None:
                self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=1)
        self.kill()
