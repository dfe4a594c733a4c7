"""Answer extraction and math equivalence: a table of tricky (response, gold) pairs with expected verdicts.

The verdict semantics are documented in rlvr_jax/rewards/math_grader.py; grading here runs in-process (no
pool) so the table is fast; the pool and its timeouts are tested in test_grader_pool.py.
"""
import pytest

from rlvr_jax.rewards import extract_answer, last_boxed, normalize_answer, reward_value
from rlvr_jax.rewards.math_grader import check_math, grade_math_response, quiet_math_verify
from rlvr_jax.data.reasoning_gym import load_reasoning_gym
from rlvr_jax.rewards.reasoning_gym import extract_rg_answer, grade_rg_response

quiet_math_verify()

B = "The answer is therefore $\\boxed{%s}$."

# (response, gold, expected status)
TABLE = [
    # fractions, decimals, \dfrac
    (B % "\\frac{1}{2}", "0.5", "correct"),
    (B % "0.5", "\\frac{1}{2}", "correct"),
    (B % "\\dfrac{3}{4}", "\\frac{3}{4}", "correct"),
    (B % "\\tfrac34", "\\dfrac{3}{4}", "correct"),
    (B % "\\frac{6}{8}", "\\frac34", "correct"),
    (B % "3/4", "\\frac{3}{4}", "correct"),
    (B % "0.75", "\\frac{3}{4}", "correct"),
    (B % "0.7", "\\frac{3}{4}", "incorrect"),
    (B % "\\frac{1}{3}", "\\frac{1}{3}", "correct"),
    (B % "0.333333", "\\frac{1}{3}", "correct"),
    (B % "0.33", "\\frac{1}{3}", "incorrect"),
    (B % "1.5", "\\frac{3}{2}", "correct"),
    (B % "-\\frac{1}{2}", "\\frac{1}{2}", "incorrect"),
    (B % "\\frac{-1}{2}", "-\\frac{1}{2}", "correct"),
    # integers, formatting of numbers
    (B % "6.0", "6", "correct"),
    (B % "1,000", "1000", "correct"),
    (B % "1{,}000", "1000", "correct"),
    (B % "007", "7", "correct"),
    (B % "204", "204", "correct"),
    (B % "205", "204", "incorrect"),
    (B % "27", "27", "correct"),
    # degrees, percents, units, currency (decorations ignored)
    (B % "336", "336^\\circ", "correct"),
    (B % "336^\\circ", "336", "correct"),
    (B % "336^{\\circ}", "336^\\circ", "correct"),
    (B % "30^\\circ", "336^\\circ", "incorrect"),
    (B % "50\\%", "50", "correct"),
    (B % "50", "50\\%", "correct"),
    (B % "10\\text{ cm}", "10", "correct"),
    (B % "10", "10\\text{ cm}^2", "correct"),
    (B % "\\$18.90", "18.90", "correct"),
    (B % "18.9", "\\$18.90", "correct"),
    # sqrt forms and symbolic expressions
    (B % "2\\sqrt{2}", "\\sqrt{8}", "correct"),
    (B % "\\sqrt{8}", "2\\sqrt2", "correct"),
    (B % "\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", "correct"),
    (B % "\\sqrt{3}", "\\sqrt{2}", "incorrect"),
    (B % "1.41", "\\sqrt{2}", "incorrect"),
    (B % "3.14", "\\pi", "incorrect"),
    (B % "2\\pi", "2\\pi", "correct"),
    (B % "(x+1)^2", "x^2+2x+1", "correct"),
    (B % "x^2+2x", "x^2+2x+1", "incorrect"),
    (B % "y=2x+3", "2x+3", "correct"),
    (B % "5", "x=5", "correct"),
    (B % "x=5", "5", "correct"),
    # intervals
    (B % "(-\\infty, 3)", "(-\\infty,3)", "correct"),
    (B % "(-\\infty,3]", "(-\\infty,3)", "incorrect"),
    (B % "[1,2)", "[1,2)", "correct"),
    (B % "(1,2)", "[1,2)", "incorrect"),
    (B % "[-2,5]", "\\left[ -2, 5 \\right]", "correct"),
    # tuples, points, unordered solution lists
    (B % "(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", "correct"),
    (B % "(3, \\frac{\\pi}{3})", "\\left( 3, \\frac{\\pi}{2} \\right)", "incorrect"),
    (B % "(2,1)", "(1,2)", "incorrect"),
    (B % "2, 1", "1, 2", "correct"),
    (B % "1, 2, 3", "1, 2", "incorrect"),
    # matrices and vectors
    (B % "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "correct"),
    (B % "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "incorrect"),
    (B % "\\begin{pmatrix} 1/2 & 0 \\\\ 0 & 1 \\end{pmatrix}",
     "\\begin{pmatrix} \\frac{1}{2} & 0 \\\\ 0 & 1 \\end{pmatrix}", "correct"),
    # text answers and multiple-choice letters
    (B % "\\text{Evelyn}", "\\text{Evelyn}", "correct"),
    (B % "Evelyn", "\\text{Evelyn}", "correct"),
    (B % "\\text{east}", "\\text{west}", "incorrect"),
    (B % "\\text{(C)}", "\\text{(C)}", "correct"),
    (B % "C", "\\text{(C)}", "correct"),
    (B % "D", "\\text{(C)}", "incorrect"),
    (B % "\\text{odd}", "\\text{odd}", "correct"),
    (B % "\\text{even}", "\\text{odd}", "incorrect"),
    # multiple boxes: the last complete box is the answer
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", "correct"),
    ("First \\boxed{4}, then corrected: \\boxed{3}", "4", "incorrect"),
    ("\\boxed{2} and \\boxed{3}", "2, 3", "incorrect"),
    ("So \\boxed{5} ... and then \\boxed{6", "5", "correct"),  # a truncated last box is ignored
    ("\\fbox{12}", "12", "correct"),
    ("so the result is $\\boxed 7$", "7", "correct"),
    ("\\boxed{\\{1, 2\\}}", "\\{1,2\\}", "correct"),
    # no box: fallbacks, then no_answer
    ("Thus, the final answer is $\\frac{1}{2}$.", "\\frac12", "correct"),
    ("The answer is 42.", "42", "correct"),
    ("Answer: 17", "17", "correct"),
    ("I think it is 42 but I am not sure", "42", "no_answer"),
    ("", "42", "no_answer"),
    ("\\boxed{}", "42", "no_answer"),
]


def test_table_size():
    assert len(TABLE) >= 60


@pytest.mark.parametrize("response,gold,expected", TABLE)
def test_grader_table(response, gold, expected):
    status, extracted = grade_math_response(response, gold)
    assert status == expected, (response, gold, extracted)


def test_blank_gold_raises():
    with pytest.raises(ValueError, match="blank gold"):
        check_math("1", "  ")


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    ("a \\boxed{x^{2}} b \\boxed{\\left\\{ 1, 2 \\right\\}} c", "\\left\\{ 1, 2 \\right\\}"),
    ("\\boxed{ 5 }", "5"),
    ("no box at all", None),
    ("\\boxed{3} \\boxed{}", "3"),
    ("\\boxedx{3}", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extract_answer_fallback_switch():
    text = "The final answer is $3$."
    assert extract_answer(text) == "3"
    assert extract_answer(text, fallbacks=False) is None
    with pytest.raises(TypeError):
        extract_answer(None)


@pytest.mark.parametrize("a,b", [
    ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("\\left( 1, 2 \\right)", "(1,2)"), ("\\text{ Evelyn }", "Evelyn"),
    ("336^\\circ", "336"), ("1{,}000", "1000"), ("$5$.", "5")])
def test_normalize_answer(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_reward_mapping():
    assert (reward_value(True, "pm1"), reward_value(False, "pm1")) == (1.0, -1.0)
    assert (reward_value(True, "01"), reward_value(False, "01")) == (1.0, 0.0)
    with pytest.raises(ValueError, match="reward_format"):
        reward_value(True, "binary")


def test_reasoning_gym_scoring():
    ds = load_reasoning_gym("basic_arithmetic", size=5, seed=3)
    assert len(ds) == 5 and ds.name == "rg:basic_arithmetic"
    p = ds[0]
    assert p.task == "rg:basic_arithmetic" and p.metadata["entry"]["question"] == p.problem
    entry = p.metadata["entry"]
    assert grade_rg_response(f"so \\boxed{{{p.answer}}}", "basic_arithmetic", entry) == ("correct", p.answer, 1.0)
    status, extracted, score = grade_rg_response("\\boxed{123456789}", "basic_arithmetic", entry)
    assert status == "incorrect" and score < 1.0
    assert grade_rg_response("nothing here", "basic_arithmetic", entry)[0] == "no_answer"
    assert extract_rg_answer("<answer>a</answer> then <answer> b </answer>") == "b"
    # The same seed regenerates the same problems (procedural, no download).
    assert [q.problem for q in load_reasoning_gym("basic_arithmetic", size=5, seed=3)] == [q.problem for q in ds]


def test_reasoning_gym_countdown_accepts_any_valid_expression():
    ds = load_reasoning_gym("countdown", size=3, seed=0)
    entry = ds[0].metadata["entry"]
    gold = entry["answer"]
    assert grade_rg_response(f"\\boxed{{{gold}}}", "countdown", entry)[0] == "correct"
    # An expression string different from the reference but reaching the target with the same numbers.
    alt = f"(({gold}))"
    assert alt != gold
    assert grade_rg_response(f"\\boxed{{{alt}}}", "countdown", entry)[0] == "correct"
    # Using a number twice is rejected by the task's own scorer.
    n0 = entry["metadata"]["numbers"][0]
    assert grade_rg_response(f"\\boxed{{{gold} + {n0} - {n0}}}", "countdown", entry)[0] == "incorrect"
    with pytest.raises(ValueError, match="unknown Reasoning Gym task"):
        load_reasoning_gym("no_such_task", size=2)
