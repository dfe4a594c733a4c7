"""Code grading: LiveCodeBench's comparison rules on hand-written cases, and hand-written correct / incorrect
solutions graded through the pool (stdin, functional, HumanEval), including tests split across workers."""
import pytest
from helpers_code import (HALF_OK_OTHER_FORMAT, HALF_TESTS, SUM_OK, SUM_TESTS, SUM_WRONG_ON_TEST1, TWO_SUM_OK,
                          TWO_SUM_TESTS, fenced, stdin_problem)

from rlvr_jax.data import Problem, load_dataset
from rlvr_jax.rewards import GraderPool
from rlvr_jax.rewards.code_grader import grade_status
from rlvr_jax.rewards.code_scoring import functional_args, functional_output_matches, stdin_output_matches


@pytest.mark.parametrize("got,want,ok", [
    ("3\n", "3", True),
    ("  3  \n\n", "3\n", True),                    # surrounding whitespace and blank lines at the ends
    ("1 2  3\r\n4\n", "1 2  3\n4", True),          # \r and per-line stripping
    ("1.0\n", "1.00", True),                        # decimals compare by value ...
    ("3\n", "3.0", True),
    ("1e2", "100", True),
    ("0.5 0.25\n", "0.50 0.250", True),
    ("0.333", "0.3333", False),                     # ... exactly: no tolerance
    ("1  2", "1 2", True),                          # inner whitespace only matters for non-numbers
    ("a  b", "a b", False),
    ("YES", "yes", False),
    ("1\n2\n", "1 2", False),                       # line count differs
    ("1\n\n2", "1\n2", False),                      # an inner blank line is a line
    ("", "", True),
    ("nan", "nan", True),                           # equal as strings
    ("1 x", "1.0 x", False),                        # a non-number token: string comparison only
    ("sNaN", "3", False),                           # Decimal('sNaN') == 3 raises: a mismatch, not a crash
    ("3", "sNaN", False), ("NaN", "NaN", True), ("NaN 1", "NaN 1.0", False),
    ("Infinity", "inf", True),
])
def test_stdin_comparison_rules(got, want, ok):
    assert stdin_output_matches(got, want)[0] is ok


def test_stdin_comparison_of_a_huge_line_parses_nothing():
    import time

    t0 = time.perf_counter()
    assert stdin_output_matches("3 " * 3_000_000, "3")[0] is False  # token counts differ: no Decimal is built
    assert time.perf_counter() - t0 < 1.0  # parsing 3M tokens as Decimal takes about 3 s here


@pytest.mark.parametrize("got,want,ok", [
    ("[0, 1]", "[0, 1]", True), ("[0,1]", "[0, 1]", True), ("[1, 0]", "[0, 1]", False),
    ("1", "1.0", True), ("0.1", "0.10000000000000001", True), ("\"abc\"", "\"abc\"", True),
    ("true", "true", True), ("1", "true", True),    # Python's ==: True == 1
    ("null", "[]", False), ("not json", "1", False),
])
def test_functional_comparison_rules(got, want, ok):
    assert functional_output_matches(got, want)[0] is ok


def test_functional_args_one_json_value_per_line():
    assert functional_args('[1, 2]\n"x"\n{"a": 1}\n') == [[1, 2], "x", {"a": 1}]


def _functional(pid, tests, func_name):
    return Problem(id=pid, problem="p", answer="", task="code:lcb",
                   metadata={"mode": "functional", "func_name": func_name,
                             "tests": [{"input": i, "output": o} for i, o in tests]})


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout_s=10.0) as p:
        yield p


def _grade(pool, problems, responses):
    return pool.grade_problems(problems, responses)


def test_hand_written_solutions_through_the_pool(pool):
    two_sum = _functional("two-sum", TWO_SUM_TESTS, "twoSum")
    cases = [  # (problem, response, status, error fragment)
        (stdin_problem("sum", SUM_TESTS), fenced(SUM_OK), "correct", None),
        (stdin_problem("sum", SUM_TESTS), fenced(SUM_WRONG_ON_TEST1), "incorrect", "test 1: line 1: got '0'"),
        (stdin_problem("half", HALF_TESTS), fenced(HALF_OK_OTHER_FORMAT), "correct", None),
        (two_sum, fenced(TWO_SUM_OK), "correct", None),  # a tuple return counts as a list
        (two_sum, fenced(TWO_SUM_OK.replace("seen[target - x], i", "i, seen[target - x]")), "incorrect",
         "test 0: returned [1, 0]"),
        (two_sum, fenced("def twoSum(nums, target):\n    return [0, 1]\n"), "incorrect", "test 1"),  # top-level
        (two_sum, fenced("class Solution:\n    pass\n"), "runtime_error", "no function 'twoSum'"),
        (stdin_problem("sum", SUM_TESTS), fenced("print(1/0)\n"), "runtime_error", "ZeroDivisionError"),
        (stdin_problem("sum", SUM_TESTS), fenced("def f(:\n"), "syntax_error", "SyntaxError"),
        (stdin_problem("sum", SUM_TESTS), SUM_OK, "no_answer", None),  # not in a fenced block
        (stdin_problem("sum", SUM_TESTS), fenced("import sys\nsys.exit(0)\n"), "incorrect", "test 0"),
        (stdin_problem("sum", SUM_TESTS), fenced(SUM_OK + "exit()\nprint('after exit')\n"), "correct", None),
        (stdin_problem("sum", SUM_TESTS), fenced(SUM_OK + "quit(3)\n"), "runtime_error", "SystemExit(3)"),
    ]
    graded = _grade(pool, [c[0] for c in cases], [c[1] for c in cases])
    for (problem, response, status, fragment), g in zip(cases, graded):
        assert g.status == status, (problem.id, response, g.status, g.error)
        assert g.correct == (status == "correct") and g.reward == (1.0 if status == "correct" else -1.0)
        assert g.score == float(status == "correct")
        if fragment:
            assert fragment in (g.error or ""), (g.error, fragment)
        assert (g.extracted is None) == (status == "no_answer")


def test_humaneval_canonical_and_broken_solutions(pool):
    ds = load_dataset("humaneval")[:3]
    full = [fenced(p.metadata["prefix"] + p.metadata["canonical_solution"]) for p in ds]
    body_only = [fenced(p.metadata["canonical_solution"]) for p in ds]  # the completion alone also works
    wrong = [fenced(p.metadata["prefix"] + "    return None\n") for p in ds]
    graded = _grade(pool, list(ds) * 3, full + body_only + wrong)
    assert [g.status for g in graded] == ["correct"] * 6 + ["incorrect"] * 3
    assert all("AssertionError" in g.error for g in graded[6:])


def test_tests_split_across_workers_merge_in_test_order(pool):
    tests = [(f"{i} {i}\n", f"{2 * i}\n") for i in range(6)]
    wrong_at_4 = "a, b = map(int, input().split())\nprint(a + b if a != 4 else -1)\n"
    problems = [stdin_problem("many", tests)] * 2
    whole = _grade(pool, problems, [fenced(SUM_OK), fenced(wrong_at_4)])
    pool.code_tests_per_task = 2
    try:
        split = _grade(pool, problems, [fenced(SUM_OK), fenced(wrong_at_4)])
        one = _grade(pool, problems[:1], [fenced(wrong_at_4)])  # auto: 1 response < 2 workers -> split
    finally:
        pool.code_tests_per_task = None
    for res in (whole, split):
        assert [g.status for g in res] == ["correct", "incorrect"]
        assert res[1].error.startswith("test 4: ")
    assert one[0].status == "incorrect" and one[0].error.startswith("test 4: ")


def test_mixed_batch_and_reward_format():
    math = Problem(id="m", problem="1+1?", answer="2")
    with GraderPool(num_workers=1, timeout_s=10.0, reward_format="01") as p:
        g = p.grade_problems([math, stdin_problem("sum", SUM_TESTS), math],
                             ["\\boxed{2}", fenced(SUM_WRONG_ON_TEST1), "\\boxed{3}"])
    assert [x.status for x in g] == ["correct", "incorrect", "incorrect"]
    assert [x.reward for x in g] == [1.0, 0.0, 0.0]


def test_grade_status_names():
    assert [grade_status(s) for s in ("passed", "failed", "timeout", "memory")] == \
        ["correct", "incorrect", "timeout", "memory"]
