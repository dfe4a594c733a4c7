"""The testbed task's worked answers: steps, verifier, brute-force enumeration (fast, no model)."""
import itertools
import random
import re

import pytest

from rlvr_jax.testbed import task as T


def _brute_space(spec):
    keys = set()
    for nums in itertools.combinations_with_replacement(range(1, spec.max_value + 1), spec.num_numbers):
        for perm in set(itertools.permutations(nums)):
            for o1, o2 in itertools.product(spec.ops, repeat=2):
                v = eval(f"{perm[0]}{o1}{perm[1]}{o2}{perm[2]}")  # noqa: S307 - digits and + - * only
                if 1 <= v <= spec.max_target:
                    keys.add((nums, v))
    return sorted(keys)


@pytest.mark.parametrize("ops", ["+-*", "+*"])
def test_enumeration_matches_brute_force(ops):
    spec = T.TaskSpec(ops=ops)
    space = T.puzzle_space(spec)
    assert space == _brute_space(spec)
    rng = random.Random(1)
    for nums, t in rng.sample(space, 60):
        p = T.Puzzle(tuple(rng.sample(nums, 3)), t, ops)
        brute = sorted({f"{a}{o1}{b}{o2}{c}" for a, b, c in itertools.permutations(p.numbers)
                        for o1, o2 in itertools.product(ops, repeat=2)
                        if eval(f"{a}{o1}{b}{o2}{c}") == t})  # noqa: S307
        assert T.solutions(p) == brute


def test_worked_steps_hand_examples():
    assert T.worked_steps("3*8+6") == "3*8=24,24+6=30"
    assert T.worked_steps("6+3*8") == "3*8=24,6+24=30"
    assert T.worked_steps("3-8+9") == "3-8=-5,-5+9=4"
    assert T.worked_steps("9-2*3") == "2*3=6,9-6=3"
    assert T.worked_steps("2*3*4") == "2*3=6,6*4=24"
    assert T.response_text("4*5-9") == "4*5=20,20-9=11 \\boxed{4*5-9}"
    assert T.response_text("4*5-9", show_steps=False) == "\\boxed{4*5-9}"
    with pytest.raises(ValueError, match="malformed"):
        T.worked_steps("3+")


def test_worked_steps_are_correct_arithmetic_ending_at_the_value():
    rng = random.Random(0)
    for _ in range(200):
        nums = [rng.randint(1, 9) for _ in range(3)]
        for e in T.all_expressions(nums):
            steps = T.worked_steps(e).split(",")
            assert len(steps) == 2
            for st in steps:
                m = re.fullmatch(r"(-?\d+)([+*-])(-?\d+)=(-?\d+)", st)
                assert m, (e, st)
                a, o, b, v = int(m[1]), m[2], int(m[3]), int(m[4])
                assert v == (a + b if o == "+" else a - b if o == "-" else a * b), (e, st)
            assert int(steps[-1].split("=")[1]) == eval(e)  # noqa: S307


def test_verifier_accepts_every_worked_solution_and_rejects_near_misses():
    puzzles = T.split_problems({"h": 25}, seed=2)["h"]
    for p in puzzles:
        for s in T.solutions(p):
            assert T.verify(T.response_text(s), p), (p, s)
        for w in T.wrong_expressions(p)[:6]:  # right numbers, worked out correctly, wrong value
            assert not T.verify(T.response_text(w), p), (p, w)
    p = T.Puzzle((3, 8, 6), 30)
    assert not T.verify("3*8=24,24+6=30 \\boxed{3*8+5}", p)  # steps right, boxed answer not
    assert T.verify("3*8=25,25+6=31 \\boxed{3*8+6}", p)  # only the boxed answer is graded (as on MATH)
    assert not T.verify("3*8=24,24+6=30", p)  # no answer


def test_ops_subset_spec_and_validation():
    p = T.Puzzle((2, 3, 4), 10, "+*")
    assert T.solutions(p) == ["2*3+4", "3*2+4", "4+2*3", "4+3*2"]
    assert len(T.all_expressions((1, 2, 3), "+*")) == 24
    with pytest.raises(ValueError, match="ops"):
        T.TaskSpec(ops="+/")
    a = T.split_problems({"h": 10, "r": -1}, seed=0, spec=T.TaskSpec(ops="+*"))
    assert all(p.ops == "+*" and T.solutions(p) for ps in a.values() for p in ps)
    assert sum(len(v) for v in a.values()) == len(T.puzzle_space(T.TaskSpec(ops="+*")))


def test_strategies_are_operator_patterns_up_to_commutation():
    assert T.strategy("3*8+6") == T.strategy("6+3*8") == "product_plus"
    assert T.strategy("3*8-6") == "product_minus" and T.strategy("6-3*8") == "minus_product"
    assert T.strategy("3+8-6") == T.strategy("3-8+6") == "add_subtract"
    assert {T.strategy(e) for e in T.all_expressions((3, 8, 6))} == set(T.STRATEGIES.values())
    with pytest.raises(ValueError, match="three-number"):
        T.strategy("3+8")
    # commuting the numbers of an expression keeps its strategy and its value
    for e in T.all_expressions((2, 5, 9)):
        nums, ops = T.split_expression(e)
        if ops == ["*", "+"]:
            swapped = f"{nums[2]}+{nums[0]}*{nums[1]}"
            assert T.strategy(swapped) == T.strategy(e) and T.evaluate_expression(swapped) == T.evaluate_expression(e)


def test_needs_only_marks_the_puzzles_one_strategy_alone_solves():
    space = T.puzzle_space()
    rng = random.Random(4)
    for nums, t in rng.sample(space, 150):
        p = T.Puzzle(nums, t)
        strategies = {T.strategy(e) for e in T.solutions(p)}
        assert T.needs_only(p, ("product_minus",)) == (strategies == {"product_minus"})
        assert T.needs_only(p, strategies) and not T.needs_only(p, ())
    assert T.needs_only(T.Puzzle((7, 8, 3), 53), ("product_minus",))  # 7*8-3, 8*7-3 only


def test_from_problem_inverts_to_problem():
    for p in T.split_problems({"h": 30}, seed=5)["h"]:
        assert T.from_problem(T.to_problem(p, "x")) == p
