"""The parent's handle on one grading worker process (used by rlvr_jax.rewards.pool.GraderPool)."""
from __future__ import annotations

import contextlib
import os
import sys
import time


@contextlib.contextmanager
def no_main_file():
    """Hides ``__main__.__file__`` while a worker starts when it names no file (``python -`` gives
    ``'<stdin>'``): spawn/forkserver children would otherwise try to run that path and die with
    FileNotFoundError. The workers need nothing from the main module (their target is worker.worker_main)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


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
        with no_main_file():
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
