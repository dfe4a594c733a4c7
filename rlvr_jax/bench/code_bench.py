"""The code sandbox's hostile-program table and grading throughput (``python -m rlvr_jax.bench.code_bench``).

``--hostile`` grades each program of :func:`hostile_programs` through a :class:`GraderPool` (one worker),
grading a normal job after each, and prints a Markdown table (program, status, seconds, error).
``--throughput`` grades the 164 HumanEval canonical solutions (one sandboxed run each), an LCB-style stdin
program and an LCB-style functional program on ``--tests`` tests per run, with ``--workers`` workers, and prints
programs per second per worker. ``--hacks`` grades the reward-hack programs of
:mod:`rlvr_jax.bench.code_hacks` and prints their statuses.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time


def hostile_programs(port: int, outside_path: str, project_file: str) -> list[tuple[str, str, str, str]]:
    """``(name, program, expected stdout, expected code status)``. The two ``passed`` rows prove containment by
    their output: no environment variable at all, and a ``kill(-1)`` that reached nothing but the sandbox."""
    return [
        ("network connect", f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                            "print('connected')\n", "connected\n", "runtime_error"),
        ("fork bomb", "import os\nwhile True:\n    os.fork()\n", "", "runtime_error"),
        ("allocate 10 GB", "x = bytearray(10 * 1024 ** 3)\nprint(len(x))\n", str(10 * 1024 ** 3) + "\n", "memory"),
        ("infinite loop", "while True:\n    pass\n", "", "timeout"),
        ("sleep past the wall limit", "import time\ntime.sleep(60)\n", "", "timeout"),
        ("write outside the work dir", f"open({outside_path!r}, 'w').write('pwned')\n", "", "runtime_error"),
        ("read the project's files", f"print(open({project_file!r}).read())\n", "", "runtime_error"),
        ("read environment variables", "import os\nprint(len(os.environ), os.environ.get('HOME'))\n", "0 None\n",
         "passed"),
        ("kill the parent process", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "",
         "runtime_error"),
        ("kill every process it can", "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n"
                                      "    pass\nprint('alive')\n",
         "alive\n", "passed"),
        ("100 MB of stdout", "import sys\nsys.stdout.write('x' * 100_000_000)\n", "", "runtime_error"),
    ]


def stdin_problem(pid: str, tests, task: str = "code:lcb"):
    from rlvr_jax.data import Problem

    return Problem(id=pid, problem=pid, answer="", task=task,
                   metadata={"mode": "stdin", "tests": [{"input": i, "output": o} for i, o in tests]})


def fenced(code: str) -> str:
    return f"```python\n{code}```\n"


def hostile_table(pool, project_file: str) -> list[dict]:
    """Grades every hostile program (then a normal job) on ``pool``; one dict per program."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        outside = os.path.join(tmp, "pwned.txt")
        for name, program, out, status in hostile_programs(srv.getsockname()[1], outside, project_file):
            t0 = time.monotonic()
            g = pool.grade_problems([stdin_problem(name, [("", out)])], [fenced(program)])[0]
            seconds = time.monotonic() - t0
            normal = pool.grade_problems([stdin_problem("sum", [("1 2\n", "3\n")])],
                                         [fenced("a, b = map(int, input().split())\nprint(a + b)\n")])[0]
            rows.append({"name": name, "expected": status, "status": g.status, "seconds": seconds,
                         "error": (g.error or "").strip().splitlines()[-1:] or [""],
                         "normal_after": normal.status})
        srv.settimeout(0.2)
        try:
            srv.accept()
            leaked = True
        except socket.timeout:
            leaked = False
        for r in rows:
            r["host_connection"] = leaked
            r["outside_file_created"] = os.path.exists(outside)
    return rows


def functional_problem(pid: str, func_name: str, tests, task: str = "code:lcb"):
    from rlvr_jax.data import Problem

    return Problem(id=pid, problem=pid, answer="", task=task,
                   metadata={"mode": "functional", "func_name": func_name,
                             "tests": [{"input": i, "output": o} for i, o in tests]})


def throughput(workers: int, tests: int, repeats: int = 1) -> dict:
    """Programs per second per worker on three workloads, all programs correct: the 164 HumanEval canonical
    solutions, an LCB-style stdin program and an LCB-style functional program (``tests`` tests per run)."""
    from rlvr_jax.data import load_dataset
    from rlvr_jax.rewards.pool import GraderPool

    he = list(load_dataset("humaneval"))
    he_responses = [fenced(p.metadata["prefix"] + p.metadata["canonical_solution"]) for p in he]
    lcb = [stdin_problem(f"sum{i}", [(f"{j} {i}\n", f"{i + j}\n") for j in range(tests)]) for i in range(64)]
    lcb_responses = [fenced("a, b = map(int, input().split())\nprint(a + b)\n")] * len(lcb)
    fn = [functional_problem(f"add{i}", "add", [(f"{j}\n[{i}, {j}]", f"[{i + j}, {i * j}]") for j in range(tests)])
          for i in range(64)]
    fn_responses = [fenced("class Solution:\n    def add(self, a: int, b: List[int]) -> List[int]:\n"
                           "        return [b[0] + a, b[0] * b[1]]\n")] * len(fn)
    out = {}
    with GraderPool(num_workers=workers, timeout_s=30.0) as pool:
        pool.grade_problems(he[:workers], he_responses[:workers])  # warm-up: imports, the isolation probe
        for label, problems, responses in (("humaneval", he, he_responses),
                                           (f"lcb_stdin_{tests}_tests", lcb, lcb_responses),
                                           (f"lcb_functional_{tests}_tests", fn, fn_responses)):
            t0 = time.monotonic()
            for _ in range(repeats):
                graded = pool.grade_problems(problems, responses)
            dt = time.monotonic() - t0
            n = len(problems) * repeats
            out[label] = {"programs": n, "seconds": dt, "passed": sum(g.correct for g in graded) * repeats,
                          "programs_per_s_per_worker": n / dt / workers,
                          "not_passed": [(p.id, g.status, (g.error or "")[-200:])
                                         for p, g in zip(problems, graded) if not g.correct][:5]}
    return out


def hacks_table(workers: int) -> list[dict]:
    """Grades every program of :data:`rlvr_jax.bench.code_hacks.HACKS` (one batch, ``workers`` workers,
    limits ``cpu_s=2, wall_s=3``)."""
    from rlvr_jax.bench.code_hacks import grade_hacks
    from rlvr_jax.rewards.pool import GraderPool
    from rlvr_jax.rewards.sandbox import SandboxConfig

    with GraderPool(num_workers=workers, timeout_s=30.0) as pool:
        pool.code_sandbox = SandboxConfig(cpu_s=2.0, wall_s=3.0)
        return grade_hacks(pool)[0]


def _define_flags() -> None:
    from absl import flags
    flags.DEFINE_bool("hostile", False, "run the hostile-program table (sandbox escapes, resource limits)")
    flags.DEFINE_bool("throughput", False, "time LCB-style grading jobs")
    flags.DEFINE_integer("workers", 1, "grader workers (throughput)")
    flags.DEFINE_integer("tests", 10, "tests per LCB-style run (throughput)")
    flags.DEFINE_bool("hacks", False, "grade the reward-hack programs (rlvr_jax/bench/code_hacks.py)")


def main(argv) -> None:
    del argv
    from absl import flags
    args = flags.FLAGS
    if args.hostile:
        from rlvr_jax.rewards.pool import GraderPool
        from rlvr_jax.rewards.sandbox import SandboxConfig

        with GraderPool(num_workers=1, timeout_s=10.0) as pool:
            pool.code_sandbox = SandboxConfig(cpu_s=1.0, wall_s=2.0, memory_mb=512, output_mb=1.0, nproc=16)
            rows = hostile_table(pool, os.path.abspath(__file__))
        print("| program | status (expected) | seconds | normal job after | detail |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['name']} | {r['status']} ({r['expected']}) | {r['seconds']:.2f} | {r['normal_after']} | "
                  f"{r['error'][0][:90]} |")
        print(f"\nconnection reached the host: {rows[0]['host_connection']}; file written outside: "
              f"{rows[0]['outside_file_created']}")
    if args.throughput:
        for label, r in throughput(args.workers, args.tests).items():
            print(f"{label}: {r['programs']} programs ({r['passed']} passed) in {r['seconds']:.2f}s with "
                  f"{args.workers} worker(s): {r['programs_per_s_per_worker']:.2f} programs/s/worker")
            for pid, status, error in r["not_passed"]:
                print(f"  not passed: {pid} {status} {error}")
    if args.hacks:
        rows = hacks_table(args.workers)
        print("| hack | kind | target | status | detail |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['name']} | {r['kind']} | {r['target']} | {r['status']} | {r['error'][0][:100]} |")
        print(f"\n{sum(r['correct'] for r in rows)} of {len(rows)} hacks graded correct")


def cli() -> None:
    """``python -m rlvr_jax.bench.code_bench [--hostile] [--hacks] [--throughput --workers N --tests T]`` (a measurement
    script: absl flags, no config)."""
    from rlvr_jax.cli import Summary, run_cli
    _define_flags()

    def job(argv):
        main(argv)
        from absl import flags
        ran = [t for t in ("hostile", "throughput", "hacks") if flags.FLAGS[t].value]
        return Summary(f"code_bench done: {', '.join(ran) or 'nothing selected (--hostile, --throughput, --hacks)'}")

    run_cli(job, usage=cli.__doc__)


if __name__ == "__main__":
    cli()
