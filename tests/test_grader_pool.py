"""The grading process pool: hard per-item timeouts, worker replacement, garbage robustness, reuse."""
import os
import random
import threading
import time

import pytest

from rlvr_jax.data import Problem
from rlvr_jax.rewards import STATUSES, GraderPool, grade_math
from rlvr_jax.data.reasoning_gym import load_reasoning_gym

# sympy tries to evaluate this power tower for ever (found by experiment: > 20 s without a timeout).
HANG = "\\boxed{9^{9^{9^{9}}}}"


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout_s=2.0) as p:
        yield p


def test_grades_in_order_and_reuses_workers(pool):
    pids = sorted(pool.worker_pids)
    responses = ["\\boxed{\\frac{1}{2}}", "\\boxed{3}", "no answer here", "\\boxed{(1,2)}"] * 3
    answers = ["0.5", "4", "1", "(1,2)"] * 3
    for _ in range(2):
        res = pool.grade_math(responses, answers)
        assert [r.status for r in res] == ["correct", "incorrect", "no_answer", "correct"] * 3
        assert [r.reward for r in res] == [1.0, -1.0, -1.0, 1.0] * 3
        assert [r.extracted for r in res[:4]] == ["\\frac{1}{2}", "3", None, "(1,2)"]
    assert sorted(pool.worker_pids) == pids  # the same processes served both calls


def test_pathological_input_times_out_softly(pool):
    pids = sorted(pool.worker_pids)
    t0 = time.monotonic()
    # Per-call timeout 4 s: the soft timer fires at 3.2 s, 0.8 s before the hard kill (slack for a loaded CI).
    res = pool.grade_math([HANG, "\\boxed{2}"], ["1", "2"], timeout_s=4.0)
    elapsed = time.monotonic() - t0
    assert res[0].status == "timeout" and res[0].reward == -1.0 and not res[0].correct
    assert res[0].extracted == "9^{9^{9^{9}}}" and "soft timeout" in res[0].error
    assert res[1].status == "correct"
    assert 3.2 <= res[0].seconds < 4.0 and elapsed < 4.0 + 1.0, (res[0].seconds, elapsed)
    assert sorted(pool.worker_pids) == pids  # the soft timer interrupted sympy; no kill needed


def test_hard_timeout_kills_and_replaces_worker():
    # soft_fraction=0 disables the in-worker timer: only the parent's kill can end the item.
    with GraderPool(num_workers=1, timeout_s=1.5, soft_fraction=0.0) as p:
        pid = p.worker_pids[0]
        p.grade_math(["\\boxed{1}"], ["1"])  # wait until the worker is up
        t0 = time.monotonic()
        res = p.grade_math([HANG, "\\boxed{2}", "\\boxed{3}"], ["1", "2", "4"])
        elapsed = time.monotonic() - t0
        assert [r.status for r in res] == ["timeout", "correct", "incorrect"]
        assert "killed" in res[0].error
        assert 1.5 <= res[0].seconds < 1.5 + 1.0, res[0].seconds
        assert p.worker_pids[0] != pid and p.stats.hard_kills == 1
        assert elapsed < 1.5 + 15.0  # kill + a fresh worker start-up + two quick items


def test_dead_worker_gives_error_and_is_replaced():
    with GraderPool(num_workers=1, timeout_s=30.0, soft_fraction=0.0) as p:
        p.grade_math(["\\boxed{1}"], ["1"])
        pid = p.worker_pids[0]
        killer = threading.Timer(0.5, os.kill, args=(pid, 9))
        killer.start()
        res = p.grade_math([HANG, "\\boxed{5}"], ["1", "5"])
        killer.join()
        assert res[0].status == "error" and "died" in res[0].error
        assert res[1].status == "correct"
        assert p.worker_pids[0] != pid and p.stats.worker_deaths == 1


def _garbage(rng: random.Random) -> str:
    pieces = ["\\boxed{", "}", "{", "\\frac", "^", "_", "\\sqrt", "(", ")", "[", "]", "\\left", "\\right", "$",
              "\\", "\\infty", "\\pi", "\\text{", "\\begin{pmatrix}", "\\end{pmatrix}", "\\\\", "&", "!", "%",
              "^\\circ", "=", ",", ".", "-", "+", "*", "/", "x", "e", "i", "\\{", "\\}", "é", "\u2212", "\x00",
              "\\fbox", "answer:", " ", "\n"]
    pieces += [str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(5)]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))


def test_random_garbage_never_crashes(pool):
    rng = random.Random(0)
    responses = [_garbage(rng) for _ in range(1000)]
    # Most gold answers are sane; some are garbage too (never blank: loaders skip those).
    answers = [rng.choice(["1", "\\frac{1}{2}", "(1,2)", "\\text{odd}", "x^2", _garbage(rng) or "0"])
               for _ in range(1000)]
    t0 = time.monotonic()
    res = pool.grade_math(responses, answers, timeout_s=5.0)
    elapsed = time.monotonic() - t0
    assert len(res) == 1000
    assert all(r.status in STATUSES for r in res)
    counts = {s: sum(r.status == s for r in res) for s in STATUSES}
    assert counts["no_answer"] > 100 and counts["incorrect"] > 100, counts
    assert counts["timeout"] + counts["error"] < 50, counts
    assert elapsed < 120, elapsed


def test_grade_math_function_and_reward_formats():
    res = grade_math(["\\boxed{2}", "\\boxed{3}"], ["2", "2"], timeout_s=5.0, num_workers=1, reward_format="01")
    assert [(r.status, r.reward) for r in res] == [("correct", 1.0), ("incorrect", 0.0)]
    res = grade_math(["\\boxed{2}", "none"], ["2", "2"], timeout_s=5.0, num_workers=1)
    assert [(r.status, r.reward) for r in res] == [("correct", 1.0), ("no_answer", -1.0)]
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        grade_math(["a", "b"], ["1"], num_workers=1)


def test_blank_gold_is_an_error_not_a_match(pool):
    res = pool.grade_math(["\\boxed{}", "\\boxed{1}"], ["", " "])
    assert [r.status for r in res] == ["error", "error"]


def test_grade_problems_mixes_math_and_reasoning_gym(pool):
    rg = load_reasoning_gym("chain_sum", size=2, seed=1)
    problems = [Problem(id="m", problem="1+1?", answer="2"), rg[0], rg[1]]
    responses = ["\\boxed{2}", f"\\boxed{{{rg[0].answer}}}", "<answer>99999</answer>"]
    res = pool.grade_problems(problems, responses)
    assert [r.status for r in res] == ["correct", "correct", "incorrect"]
    assert res[1].score == 1.0 and res[2].score < 1.0
    with pytest.raises(ValueError, match="unknown task"):
        pool.grade_problems([Problem(id="z", problem="p", answer="a", task="code")], ["x"])


def test_in_process_mode_and_close():
    p = GraderPool(num_workers=0, timeout_s=5.0)
    assert [r.status for r in p.grade_math(["\\boxed{0.25}", "\\boxed{1}"], ["\\frac14", "2"])] == [
        "correct", "incorrect"]
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.grade_math(["\\boxed{1}"], ["1"])
    with pytest.raises(ValueError, match="timeout_s"):
        GraderPool(num_workers=0, timeout_s=0)
