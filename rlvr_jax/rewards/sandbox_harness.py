"""The program runner that executes *inside* the sandbox (standard library only; never imports rlvr_jax).

``python -I -S sandbox_harness.py SPEC.json`` reads the spec written by :mod:`rlvr_jax.rewards.sandbox`:
``{"mode": "stdin" | "functional" | "script", "program": path, "inputs": [path, ...], "func_name": str|null,
"work_dir": path, "uid": int|null, "kill_all": bool, "cpu_s", "wall_s", "memory_bytes", "output_bytes",
"nproc", "header": str}``.

It compiles the program once (a ``SyntaxError`` ends the run with status ``syntax_error``), then runs each test
in a **fresh forked child**: its own process group, the test input as fd 0 (stdin mode), stdout and stderr
redirected to files, a different uid when ``uid`` is given (the harness itself keeps its own, so the program
cannot signal it), ``no_new_privs``, and rlimits on CPU time, address space, file size (which caps the
captured output), process count and core dumps. The harness enforces the per-test wall clock, then kills
whatever the test left behind (every process of the sandbox when ``kill_all``, else the child's group).

Results go to the harness's stdout, which the children cannot reach (their fds 0-2 are replaced, all others
closed): per test one JSON header line ``{"i", "status", "seconds", "detail", "nbytes"}`` followed by
``nbytes`` bytes of payload (the captured stdout; the JSON-encoded return value in functional mode), and a
final ``{"done": true}``. Statuses: ``ok``, ``assertion`` (script mode: an ``AssertionError``), ``timeout``,
``memory``, ``output_limit``, ``runtime_error``; the run stops at the first test that is not ``ok``.
Expected outputs never enter the sandbox: comparing is the grader's job, outside.
"""
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

EXIT_MEMORY, EXIT_ASSERTION, EXIT_ERROR = 87, 86, 1
_PR_SET_NO_NEW_PRIVS, _PR_SET_DUMPABLE = 38, 4


def _emit(header, payload=b""):
    header = dict(header, nbytes=len(payload))
    data = json.dumps(header).encode() + b"\n" + payload
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


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
    """In the forked child: new process group, other uid, no new privileges, rlimits."""
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


def _call_functional(spec, code, text, res_path):
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    exec(spec.get("header") or "", namespace)
    exec(code, namespace)
    name = spec["func_name"]
    target = None
    if isinstance(namespace.get("Solution"), type) and hasattr(namespace["Solution"], name):
        target = getattr(namespace["Solution"](), name)
    elif callable(namespace.get(name)):
        target = namespace[name]
    if target is None:
        raise NameError(f"no function {name!r} (nor a Solution method of that name) in the program")
    args = [json.loads(line) for line in text.split("\n") if line.strip()]
    result = target(*args)
    if isinstance(result, tuple):
        result = list(result)
    try:
        encoded = json.dumps(result)
    except (TypeError, ValueError) as e:
        raise TypeError(f"return value of type {type(result).__name__} is not JSON-serialisable ({e})")
    with open(res_path, "w", encoding="utf-8") as f:
        f.write(encoded)


def _child(spec, code, i, out_fd, err_fd):
    """Never returns: runs test ``i`` and exits with a status code."""
    status = EXIT_ERROR
    try:
        functional = spec["mode"] == "functional"
        in_fd = os.open(spec["inputs"][i], os.O_RDONLY)
        text = None
        if functional:  # read now: the input is not readable by the other uid
            with os.fdopen(in_fd, "rb") as f:
                text = f.read().decode("utf-8")
            in_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(in_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, 4096)
        os.chdir(spec["work_dir"])
        _enter_child_limits(spec)
        os.environ.clear()  # also drops what bwrap / the interpreter set (PWD, LC_CTYPE)
        if functional:
            _call_functional(spec, code, text, os.path.join(spec["work_dir"], f".result{i}"))
        else:
            namespace = {"__name__": "__main__", "__builtins__": __builtins__}
            if spec.get("header"):
                exec(spec["header"], namespace)
            exec(code, namespace)
        status = 0
    except SystemExit as e:
        ok_exit = spec["mode"] != "functional" and e.code in (None, 0)
        status = 0 if ok_exit else EXIT_ERROR
        if not ok_exit:
            sys.stderr.write(f"SystemExit({e.code!r})\n")
    except MemoryError:
        status = EXIT_MEMORY
    except AssertionError:
        traceback.print_exc()
        status = EXIT_ASSERTION if spec["mode"] == "script" else EXIT_ERROR
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


def _wait(pid, wall_s):
    """``(wait status or None on wall-clock timeout, seconds)``."""
    t0 = time.monotonic()
    deadline = t0 + wall_s
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None
    try:
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return status, time.monotonic() - t0
            left = deadline - time.monotonic()
            if left <= 0:
                return None, time.monotonic() - t0
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.002))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _classify(wait_status, spec, out_size):
    if wait_status is None:
        return "timeout", f"wall-clock limit of {spec['wall_s']:g}s"
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "timeout", f"CPU-time limit of {spec['cpu_s']:g}s (signal {sig})"
        if sig == signal.SIGXFSZ:
            return "output_limit", f"output or file over {spec['output_bytes']} bytes"
        return "runtime_error", f"killed by signal {sig}"
    code = os.WEXITSTATUS(wait_status)
    if code == 0:
        if out_size >= int(spec["output_bytes"]):
            return "output_limit", f"output over {spec['output_bytes']} bytes"
        return "ok", ""
    if code == EXIT_MEMORY:
        return "memory", f"MemoryError under the {int(spec['memory_bytes']) >> 20} MiB address-space limit"
    if code == EXIT_ASSERTION:
        return "assertion", ""
    return "runtime_error", f"exit code {code}"


def _cleanup(pid, spec):
    try:
        if spec.get("kill_all"):
            os.kill(-1, signal.SIGKILL)  # every process of this sandbox except the harness and pid 1
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _read(path, limit):
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


def run_test(spec, code, i):
    work = spec["work_dir"]
    out_path, err_path = os.path.join(work, f".stdout{i}"), os.path.join(work, f".stderr{i}")
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    pid = os.fork()
    if pid == 0:
        _child(spec, code, i, out_fd, err_fd)
    os.close(out_fd)
    os.close(err_fd)
    wait_status, seconds = _wait(pid, float(spec["wall_s"]))
    _cleanup(pid, spec)
    if wait_status is None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    limit = int(spec["output_bytes"])
    out = _read(out_path, limit + 1)
    err = _read(err_path, 4096)
    status, detail = _classify(wait_status, spec, len(out))
    if status == "ok" and spec["mode"] == "functional":
        out = _read(os.path.join(work, f".result{i}"), limit + 1)
    if status not in ("ok",) and err.strip():
        detail = (detail + ": " if detail else "") + err.decode("utf-8", "replace").strip()[-1500:]
    payload = out[:limit] if status == "ok" else b""
    return {"i": i, "status": status, "seconds": round(seconds, 4), "detail": detail}, payload


def _exit(code=None):
    raise SystemExit(code)


def main(spec_path):
    import builtins

    builtins.exit = builtins.quit = _exit  # normally added by the site module, which -S skips
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prctl(_PR_SET_DUMPABLE, 0)  # /proc/<harness>/fd stays closed to the children
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    with open(spec["program"], encoding="utf-8", errors="replace") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        _emit({"i": 0, "status": "syntax_error", "seconds": 0.0, "detail": f"{type(e).__name__}: {e}"[:1500]})
        _emit({"done": True})
        return
    if spec.get("header"):
        exec(spec["header"], {})  # trusted standard-library imports, warm in every forked child
    for i in range(len(spec["inputs"])):
        header, payload = run_test(spec, code, i)
        _emit(header, payload)
        if header["status"] != "ok":
            break
    _emit({"done": True})


if __name__ == "__main__":
    main(sys.argv[1])
