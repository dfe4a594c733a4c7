"""The program runner that executes *inside* the sandbox (standard library only; never imports rlvr_jax).

``python -I -S sandbox_harness.py SPEC.json`` reads the spec written by :mod:`rlvr_jax.rewards.sandbox`:
``{"mode": "stdin" | "calls", "program": path, "inputs": [path, ...] (stdin), "func_name", "lookup" (calls),
"work_dir", "uid": int|null, "kill_all": bool, "cpu_s", "wall_s", "memory_bytes", "output_bytes", "nproc",
"header": str}``. It compiles the program once (a ``SyntaxError`` is reported as ``syntax_error``).

Every test runs in a **fresh forked process** (the *test process*): its own process group, stdout and stderr
to capture files in a directory only the harness can open (created with ``O_EXCL``, so nothing the program
left in the shared work dir is followed), a different uid when ``uid`` is given (so the program cannot signal,
trace or read the harness), ``no_new_privs``, and rlimits on CPU time, address space, file size (which caps the
captured output), process count and core dumps. The harness enforces the test's wall clock, then kills
everything the test left behind (every process of the sandbox when ``kill_all``, else the test's group).

**stdin mode**: test *i* gets input *i* on stdin; the harness reports, per test, one frame
``{"i", "status", "seconds", "detail"}`` + the captured stdout, and a final ``{"done": true}``; the grader
outside compares the output (the exit code alone never passes a test).

**calls mode** (functional problems, HumanEval): the test process runs the program as a server of calls
(:mod:`sandbox_server`); the harness relays, over its stdin and stdout, between the trusted grader outside and
that process, which it reaches through two pipes of its own. Requests from outside (frames): ``{"op": "call",
"seq", "spawn": bool, "end": bool}`` + arguments (``spawn`` starts a fresh test process first; ``end`` ends it
after the reply) and ``{"op": "end"}``. Per call the harness adds a fresh random nonce; a reply counts only
if it is exactly one well-formed frame carrying that ``seq`` and nonce, written after the request, with
nothing else on the pipe, while the test process is still alive. Events out: ``{"event": "ready"}`` (after
compiling), ``{"event": "reply", "seq", "ok", "kind", "end"?}`` + the reply's payload (relayed as data: the
grader decodes it), ``{"event": "failed", "status", "detail"}`` (the test process is gone) and ``{"event":
"ended", "status", "detail"}``. A test process that exits for any reason, with any status, before the grader
ends it (``sys.exit``, ``os._exit``, a signal, a fork whose parent exits, ``exec``) is ``early_exit``; bytes
that are not a valid reply are ``protocol_error``.

Statuses: ``ok``, ``timeout``, ``memory``, ``output_limit``, ``runtime_error`` (stdin: an exception, a
non-zero exit, a signal), ``early_exit``, ``protocol_error``, ``syntax_error``. Expected outputs never enter
the sandbox: comparing, and running the dataset's test code, is the grader's job, outside.
"""
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_server  # noqa: E402  (warm in every forked test process)
import sandbox_wire as wire  # noqa: E402

EXIT_MEMORY, EXIT_ERROR = 87, 1
_PR_SET_NO_NEW_PRIVS, _PR_SET_DUMPABLE = 38, 4
_MAX_REQUEST = 1 << 28
NO_TEST = {"event": "failed", "status": "early_exit", "detail": "no test process (it ended before)"}


def _emit(header, payload=b""):
    wire.write_all(1, wire.frame(header, payload))


def _prctl(option, value):
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort: not every platform has prctl
        pass


def _limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass


def _enter_child_limits(spec):
    """In the forked test process: new process group, other uid, no new privileges, rlimits."""
    os.setpgid(0, 0)
    if spec.get("uid") is not None:
        uid = int(spec["uid"])
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    cpu = max(1, int(-(-float(spec["cpu_s"]) // 1)))
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ValueError, OSError):
        pass
    _limit(resource.RLIMIT_AS, int(spec["memory_bytes"]))
    _limit(resource.RLIMIT_FSIZE, int(spec["output_bytes"]))
    _limit(resource.RLIMIT_CORE, 0)
    if spec.get("nproc"):
        _limit(resource.RLIMIT_NPROC, int(spec["nproc"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # CPython ignores it; a capped write must end the program
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_stdin_program(spec, code):
    """In the test process (stdin mode): never returns."""
    status = EXIT_ERROR
    try:
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        if spec.get("header"):
            exec(spec["header"], namespace)
        exec(code, namespace)
        status = 0
    except SystemExit as e:
        status = 0 if e.code in (None, 0) else EXIT_ERROR
        if status:
            sys.stderr.write(f"SystemExit({e.code!r})\n")
    except MemoryError:
        status = EXIT_MEMORY
    except BaseException:  # noqa: BLE001 - every failure of the program is a status
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a flush can hit the file-size cap
        if status == 0:
            status = EXIT_ERROR
    os._exit(status)


def _reap_all(limit_s=2.0):
    """Reaps every child left (under bwrap the harness is the namespace's pid 1, so the test's orphans are
    its children too): each was just sent SIGKILL, and a zombie left would count against the next test's
    process limit. Bounded, in case one cannot die."""
    end = time.monotonic() + limit_s
    while True:
        try:
            pid = os.waitpid(-1, os.WNOHANG)[0]
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > end:
                return
            time.sleep(0.0005)


class _Test:
    """One forked test process, its capture files and (calls mode) its two pipes."""

    def __init__(self, spec, code, private, i, stdin_path=None):
        self.spec, self.i = spec, i
        tag = os.urandom(8).hex()  # unpredictable, so that no earlier test (same uid without root) can plant it
        self.out_path = os.path.join(private, f"stdout{i}-{tag}")
        self.err_path = os.path.join(private, f"stderr{i}-{tag}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        out_fd, err_fd = os.open(self.out_path, flags, 0o600), os.open(self.err_path, flags, 0o600)
        calls = stdin_path is None
        in_fd = os.open(stdin_path if not calls else os.devnull, os.O_RDONLY)
        req_r = self.req_w = self.rep_r = rep_w = -1
        if calls:
            req_r, self.req_w = os.pipe()
            self.rep_r, rep_w = os.pipe()
        self.t0 = time.monotonic()
        self.deadline = self.t0 + float(spec["wall_s"])
        pid = os.fork()
        if pid == 0:
            try:
                for fd, target in ((in_fd, 0), (out_fd, 1), (err_fd, 2)):
                    os.dup2(fd, target)
                if calls:  # via high numbers, so that no dup2 clobbers the other pipe end
                    os.dup2(req_r, 1000)
                    os.dup2(rep_w, 1001)
                    os.dup2(1000, sandbox_server.REQUEST_FD)
                    os.dup2(1001, sandbox_server.REPLY_FD)
                os.closerange(5 if calls else 3, 4096)
                os.chdir(spec["work_dir"])
                _enter_child_limits(spec)
                os.environ.clear()  # also drops what bwrap / the interpreter set (PWD, LC_CTYPE)
            except BaseException:  # noqa: BLE001
                os._exit(EXIT_ERROR)
            if calls:
                try:
                    sandbox_server.serve(spec, code)
                finally:
                    os._exit(0)
            _run_stdin_program(spec, code)
        for fd in (in_fd, out_fd, err_fd, req_r, rep_w):
            if fd >= 0:
                os.close(fd)
        self.pid = pid
        self.pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                self.pidfd = None
        self.wait_status, self.cpu_s = None, 0.0
        self.reader = wire.FrameReader(int(spec["output_bytes"]))
        self.closed = False

    # ------------------------------------------------------------------------------------- process state
    def reap(self, block=False):
        """True once the test process has ended (its wait status and CPU time recorded)."""
        if self.wait_status is None:
            try:
                pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == self.pid:
                self.wait_status = status
                self.cpu_s = usage.ru_utime + usage.ru_stime
        return self.wait_status is not None

    def wait_exit(self):
        """Waits for the end of the test process until its wall clock; False on timeout."""
        while not self.reap():
            left = self.deadline - time.monotonic()
            if left <= 0:
                return False
            if self.pidfd is not None:
                select.select([self.pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.002))
        return True

    def ended_status(self, calls):
        """Status of a test process that ended by itself (calls mode: before the grader ended it)."""
        ws, spec = self.wait_status, self.spec
        if os.WIFSIGNALED(ws):
            sig = os.WTERMSIG(ws)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and self.cpu_s >= float(spec["cpu_s"]) - 0.05):
                return "timeout", f"CPU-time limit of {spec['cpu_s']:g}s (signal {sig})"
            if sig == signal.SIGXFSZ:
                return "output_limit", f"output or file over {spec['output_bytes']} bytes"
            return ("early_exit" if calls else "runtime_error"), f"killed by signal {sig}"
        code = os.WEXITSTATUS(ws)
        if calls:
            return "early_exit", f"the program's process exited (status {code}) before the tests finished"
        if code == 0:
            return "ok", ""
        if code == EXIT_MEMORY:
            return "memory", f"MemoryError under the {int(spec['memory_bytes']) >> 20} MiB address-space limit"
        return "runtime_error", f"exit code {code}"

    def close(self):
        """Kills whatever the test left behind, reaps, closes the pipes."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.spec.get("kill_all"):
                os.kill(-1, signal.SIGKILL)  # every process of this sandbox but the harness (pid 1)
            else:
                os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.wait_status is None:  # not reaped, so the pid is still its own
            try:
                os.kill(self.pid, signal.SIGKILL)  # also when it left its process group
            except (ProcessLookupError, PermissionError):
                pass
        self.reap(block=True)
        _reap_all()
        for fd in (self.req_w, self.rep_r, self.pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)

    def take(self, path, limit):
        try:
            with open(path, "rb") as f:
                return f.read(limit)
        except OSError:
            return b""
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def stderr_tail(self):
        return self.take(self.err_path, 1 << 16)[-1500:].decode("utf-8", "replace").strip()

    # ---------------------------------------------------------------------------------------- calls mode
    def _fail(self, status, detail):
        self.close()
        err = self.stderr_tail()
        self.take(self.out_path, 0)
        return {"event": "failed", "status": status, "detail": detail + (": " + err if err else "")}, b""

    def _exited(self):
        return self._fail(*self.ended_status(calls=True))

    def _pending_bytes(self):
        if self.reader.buf:
            return True
        if select.select([self.rep_r], [], [], 0)[0]:
            chunk = os.read(self.rep_r, 1 << 16)
            self.reader.feed(chunk)
            return bool(chunk)
        return False

    def _send(self, data):
        """Writes a request without blocking past the wall clock: None, or what stopped it."""
        os.set_blocking(self.req_w, False)
        view = memoryview(data)
        waits = [self.pidfd] if self.pidfd is not None else []
        while view:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            select.select(waits, [self.req_w], [], left if waits else min(left, 0.01))
            if self.reap():
                return "exited"
            try:
                view = view[os.write(self.req_w, view):]
            except BlockingIOError:
                continue
            except BrokenPipeError:  # SIGPIPE is ignored in the harness
                return "exited" if self.wait_exit() else "closed"
        return None

    def call(self, seq, payload):
        if self.closed:
            return dict(NO_TEST), b""
        if self.reap():
            return self._exited()
        if self._pending_bytes():
            return self._fail("protocol_error", "bytes on the reply pipe before the request")
        nonce = os.urandom(12).hex()
        problem = self._send(wire.frame({"seq": seq, "nonce": nonce}, payload))
        if problem == "exited":
            return self._exited()
        if problem == "timeout":
            return self._fail("timeout", f"wall-clock limit of {self.spec['wall_s']:g}s")
        if problem is not None:
            return self._fail("protocol_error", "the program closed its request pipe")
        waits = [self.rep_r] + ([self.pidfd] if self.pidfd is not None else [])
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return self._fail("timeout", f"wall-clock limit of {self.spec['wall_s']:g}s")
            ready = select.select(waits, [], [], left if self.pidfd is not None else min(left, 0.01))[0]
            if self.rep_r in ready:
                chunk = os.read(self.rep_r, 1 << 20)
                if not chunk:  # every writer closed the reply pipe
                    return self._exited() if self.wait_exit() else self._fail("protocol_error",
                                                                              "the reply pipe was closed")
                self.reader.feed(chunk)
                try:
                    got = self.reader.next()
                except wire.WireError as e:
                    return self._fail("protocol_error", f"garbage on the reply pipe ({e})")
                if got is None:
                    continue
                header, data = got
                if header.get("seq") != seq or header.get("nonce") != nonce or type(header.get("ok")) is not bool:
                    return self._fail("protocol_error", "a reply that does not answer the request (seq, nonce)")
                if self.reader.buf:
                    return self._fail("protocol_error", "bytes after the reply")
                if self.reap():
                    return self._exited()
                kind = header.get("kind") if type(header.get("kind")) is str else ""
                return {"event": "reply", "seq": seq, "ok": header["ok"], "kind": kind[:32]}, data
            if self.reap():
                return self._exited()

    def end(self):
        """Ends the test process: ``ok`` only if it is still alive, left nothing on the pipe, and its output
        stayed under the cap."""
        if self.closed:
            return dict(NO_TEST)
        if self.reap():
            return self._exited()[0]
        if self._pending_bytes():
            return self._fail("protocol_error", "bytes on the reply pipe after the last reply")[0]
        seconds = time.monotonic() - self.t0
        self.close()
        out = self.take(self.out_path, int(self.spec["output_bytes"]) + 1)
        self.take(self.err_path, 0)
        if len(out) >= int(self.spec["output_bytes"]):
            return {"event": "failed", "status": "output_limit",
                    "detail": f"output over {self.spec['output_bytes']} bytes"}
        return {"event": "ended", "status": "ok", "detail": "", "seconds": round(seconds, 4)}


def run_stdin_test(spec, code, private, i):
    test = _Test(spec, code, private, i, stdin_path=spec["inputs"][i])
    finished = test.wait_exit()
    seconds = time.monotonic() - test.t0
    test.close()
    limit = int(spec["output_bytes"])
    out = test.take(test.out_path, limit + 1)
    err = test.take(test.err_path, 4096)
    if not finished:
        status, detail = "timeout", f"wall-clock limit of {spec['wall_s']:g}s"
    else:
        status, detail = test.ended_status(calls=False)
        if status == "ok" and len(out) >= limit:
            status, detail = "output_limit", f"output over {limit} bytes"
    if status != "ok" and err.strip():
        detail = (detail + ": " if detail else "") + err.decode("utf-8", "replace").strip()[-1500:]
    payload = out[:limit] if status == "ok" else b""
    return {"i": i, "status": status, "seconds": round(seconds, 4), "detail": detail}, payload


def serve_calls(spec, code, private):
    """The op loop of calls mode (see the module docstring); returns when the grader closes the pipe."""
    reader = wire.FrameReader(_MAX_REQUEST)  # frames from the trusted grader
    test, spawned = None, 0
    try:
        while True:
            got = reader.next()
            if got is None:
                chunk = os.read(0, 1 << 20)
                if not chunk:
                    return
                reader.feed(chunk)
                continue
            header, payload = got
            if header.get("op") == "end":
                _emit(test.end() if test is not None else NO_TEST)
                continue
            if header.get("spawn"):
                if test is not None:
                    test.close()
                test = _Test(spec, code, private, spawned)
                spawned += 1
            if test is None:
                _emit(NO_TEST)
                continue
            event, data = test.call(header.get("seq"), payload)
            if event["event"] == "reply" and header.get("end"):
                ended = test.end()
                event["end"] = {"status": ended["status"], "detail": ended["detail"]}
            _emit(event, data)
    finally:
        if test is not None:
            test.close()


def _private_dir(work):
    """A directory in the work dir that only the harness can open (the test processes run as another uid)."""
    for _ in range(100):
        path = os.path.join(work, ".harness-" + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError("cannot create the harness's private directory")


def _exit(code=None):
    raise SystemExit(code)


def main(spec_path):
    import builtins

    builtins.exit = builtins.quit = _exit  # normally added by the site module, which -S skips
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prctl(_PR_SET_DUMPABLE, 0)  # /proc/<harness>/fd stays closed to the test processes
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    with open(spec["program"], encoding="utf-8", errors="replace") as f:
        source = f.read()
    calls = spec["mode"] == "calls"
    try:
        code = compile(source, "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        detail = f"{type(e).__name__}: {e}"[:1500]
        _emit({"event": "failed", "status": "syntax_error", "detail": detail} if calls else
              {"i": 0, "status": "syntax_error", "seconds": 0.0, "detail": detail})
        if not calls:
            _emit({"done": True})
        return
    if spec.get("header"):
        exec(spec["header"], {})  # trusted standard-library imports, warm in every forked test process
    private = _private_dir(spec["work_dir"])
    if calls:
        _emit({"event": "ready"})
        serve_calls(spec, code, private)
        return
    for i in range(len(spec["inputs"])):
        header, payload = run_stdin_test(spec, code, private, i)
        _emit(header, payload)
        if header["status"] != "ok":
            break
    _emit({"done": True})


if __name__ == "__main__":
    main(sys.argv[1])
