"""The trusted side of calls mode: the model's program serves calls from a fresh sandbox, and each call's
return value comes back as genuine built-in data.

``with CallSession(program, cfg, func_name=...) as s: value = s.call(args, spawn=True)`` starts the sandbox
(:mod:`rlvr_jax.rewards.sandbox`) with the harness in calls mode (:mod:`rlvr_jax.rewards.sandbox_harness`).
``call(args, spawn=..., end=...)`` sends the arguments (plain data, :mod:`rlvr_jax.rewards.sandbox_wire`) to
the program's entry point in the current test process (``spawn``: a fresh one first, which runs the program's
top level; ``end``: end it after the reply) and returns the decoded return value; :meth:`end` ends the test
process. Any failure (the program raised, exited or died before replying, timed out, returned something that
is not plain data, wrote garbage on its pipe, or the sandbox broke) raises :class:`CallFailed` with a code
status and is remembered: every later call raises it again, so test code that swallows the exception cannot
turn a failed call into a pass (:attr:`failure`).

Nothing the program writes reaches this side except as the payload of a harness frame, which is decoded by
:func:`~rlvr_jax.rewards.sandbox_wire.decode_value` only.
"""
from __future__ import annotations

import os
import selectors
import subprocess
import time

from rlvr_jax.rewards import sandbox as sb
from rlvr_jax.rewards.sandbox_wire import FrameReader, NotPlainData, WireError, decode_value, encode_value, frame

# Reply kinds of sandbox_server -> code statuses.
_KIND_STATUS = {"exception": "runtime_error", "load": "runtime_error", "memory": "memory", "exit": "early_exit",
                "bad_value": "bad_value"}
# Harness statuses -> code statuses.
_RUN_STATUS = {"output_limit": "runtime_error"}


class CallFailed(BaseException):
    """A call that did not return a value (a BaseException, so that test code catching ``Exception`` does not
    swallow it; :attr:`CallSession.failure` keeps it anyway)."""

    def __init__(self, status: str, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class CallSession:
    def __init__(self, program: str, cfg: sb.SandboxConfig, *, func_name: str, lookup: str = "function",
                 header: str | None = None, num_tests: int = 1, _checked: bool = False):
        if not _checked:
            sb.check_isolation(cfg)
        self.program, self.cfg, self.func_name, self.lookup = program, cfg, func_name, lookup
        self.header, self.num_tests = header, num_tests
        self.failure: CallFailed | None = None
        self.calls = 0
        self._seq = 0
        self._proc = None
        self._ctx = None

    # ------------------------------------------------------------------------------------------ life
    def __enter__(self) -> "CallSession":
        try:
            self._ctx = sb.prepared_run(self.program, "calls", self.cfg, func_name=self.func_name,
                                        lookup=self.lookup, header=self.header)
            argv, self._run_dir = self._ctx.__enter__()
        except sb.SandboxUnavailable as e:
            self._ctx = None
            self.failure = CallFailed("sandbox_error", str(e))
            return self
        self._deadline = time.monotonic() + self.cfg.run_budget_s(self.num_tests)
        self._reader = FrameReader(int(self.cfg.output_mb * (1 << 20)) + (1 << 16),
                                   max_header=sb.HARNESS_HEADER_MAX)
        try:
            self._proc = sb.start_sandbox(argv, self._run_dir, stdin=subprocess.PIPE)
        except OSError as e:
            self.failure = CallFailed("sandbox_error", f"cannot start the sandbox: {e}")
            return self
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)
        try:
            event, _ = self._event()
            if event.get("event") != "ready":
                self._fail("sandbox_error", f"unexpected first event {event.get('event')!r}")
        except CallFailed:
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._sel.close()
            sb.kill_sandbox(self._proc)
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)

    # ----------------------------------------------------------------------------------------- calls
    def call(self, args, *, spawn: bool = False, end: bool = False):
        """The entry point's return value on ``args`` (see the module docstring); raises :class:`CallFailed`."""
        if self.failure is not None:
            raise self.failure
        try:
            payload = encode_value(list(args))
        except NotPlainData as e:
            self._fail("sandbox_error", f"the test's arguments are not plain data ({e})")
        self._seq += 1
        self._send(frame({"op": "call", "seq": self._seq, "spawn": bool(spawn), "end": bool(end)}, payload))
        event, data = self._event()
        if event.get("event") != "reply" or event.get("seq") != self._seq:
            self._fail("sandbox_error", f"unexpected event {event.get('event')!r}")
        if not event.get("ok"):
            kind = event.get("kind", "")
            self._fail(_KIND_STATUS.get(kind, "runtime_error"), data.decode("utf-8", "replace").strip()[-1000:])
        try:
            value = decode_value(data)
        except NotPlainData as e:
            self._fail("bad_value", f"return value: {e}")
        except WireError as e:
            self._fail("protocol_error", f"return value: {e}")
        if end:
            ended = event.get("end") or {}
            if ended.get("status") != "ok":
                self._fail(_RUN_STATUS.get(ended.get("status"), ended.get("status", "sandbox_error")),
                           str(ended.get("detail", "")))
        self.calls += 1
        return value

    def end(self) -> None:
        """Ends the current test process; raises :class:`CallFailed` unless it was still alive and clean."""
        if self.failure is not None:
            raise self.failure
        self._send(frame({"op": "end"}))
        event, _ = self._event()
        if event.get("event") != "ended" or event.get("status") != "ok":
            self._fail("sandbox_error", f"unexpected event {event.get('event')!r}")

    # -------------------------------------------------------------------------------------- plumbing
    def _fail(self, status: str, detail: str):
        self.failure = CallFailed(status, detail)
        raise self.failure

    def _send(self, data: bytes) -> None:
        try:
            fd = self._proc.stdin.fileno()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except (OSError, ValueError) as e:
            self._fail("sandbox_error", f"the sandbox stopped reading ({e}) {sb.sandbox_stderr(self._run_dir)}")

    def _event(self):
        while True:
            try:
                got = self._reader.next()
            except WireError as e:
                self._fail("sandbox_error", f"the harness's output: {e}")
            if got is not None:
                header, data = got
                if header.get("event") == "failed":
                    self._fail(_RUN_STATUS.get(header.get("status"), str(header.get("status"))),
                               str(header.get("detail", "")))
                return header, data
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._fail("timeout", f"whole run over {self.cfg.run_budget_s(self.num_tests):.3g}s")
            if not self._sel.select(timeout=left):
                continue
            chunk = os.read(self._proc.stdout.fileno(), 1 << 20)
            if not chunk:
                self._proc.poll()
                self._fail("sandbox_error", f"sandbox ended early (exit {self._proc.returncode}) "
                                            f"{sb.sandbox_stderr(self._run_dir)}")
            self._reader.feed(chunk)
