"""The base's measured properties (rlvr_jax.testbed.properties) on hand-made evaluation records."""
import pytest

from rlvr_jax.evaluation.records import SampleRecord
from rlvr_jax.testbed import properties as P
from rlvr_jax.testbed import task as T


def _recs(pid, answers, puzzle):
    sols = set(T.solutions(puzzle))
    return [SampleRecord(pid, i, "sample", a, "correct" if a in sols else "incorrect", a in sols, 7, "stop")
            for i, a in enumerate(answers)]


def test_measured_properties_count_against_hand_figures():
    a, b = T.Puzzle((3, 8, 6), 30), T.Puzzle((7, 8, 3), 59)
    probs = T.to_problems([a, b], "heldout")
    # puzzle a: 2 correct (two distinct), 1 near miss 3+8+6 = 17 (distance 13), 1 unparseable (a bare "9" is
    # no expression either: tested below)
    # puzzle b: never solved; 7*8-3 = 53 (distance 6), 7+8+3 = 18 (distance 41), 9*9+9 uses other numbers
    recs = (_recs(probs[0].id, ["3*8+6", "6+3*8", "3+8+6", None], a)
            + _recs(probs[1].id, ["7*8-3", "7+8+3", "9*9+9", "7*8-3"], b)
            + [SampleRecord(probs[0].id, 0, "greedy", "3*8+6", "correct", True, 7, "stop")])
    p = P.measure(recs, probs, n=4)
    assert p["puzzles"] == 2 and p["n"] == 4
    assert p["pass@1"] == pytest.approx((2 / 4 + 0) / 2)
    assert p["pass@4"] == pytest.approx(0.5) and p["never_solved"] == 0.5 and p["always_solved"] == 0.0
    assert p["distinct_correct"] == 2.0 and p["solved_with_2plus_distinct"] == 1.0
    assert p["unparseable"] == pytest.approx(1 / 8)
    assert p["near_miss"] == pytest.approx(4 / 6)          # 6 wrong answers, 4 over the puzzle's numbers
    assert p["near_miss_median_distance"] == pytest.approx((6 + 13) / 2)  # distances 13, 6, 41, 6
    assert p["near_miss_within_5"] == 0.0
    # only a*b+c (and its commuted forms) solves either puzzle; "Make 17 with 3 8 6" only a sum
    c = T.Puzzle((3, 8, 6), 17)
    probs3 = T.to_problems([a, b, c], "heldout")
    recs3 = recs + _recs(probs3[2].id, ["3+8+6", "8+6+3", "3+8+6", "3*8-6"], c)
    q = P.measure(recs3, probs3, n=4, rare_strategies=("product_plus",))
    assert q["rare_only"] == {"puzzles": 2, "pass@1": 0.25, "pass@4": 0.5}
    assert q["other"] == {"puzzles": 1, "pass@1": 0.75, "pass@4": 1.0} and "rare_only" not in p
    table = P.criteria_table(p, fully_solved_max=0.0625)
    assert "| held-out pass@1 | 25-60% | 25.0% | yes |" in table
    assert "| held-out pass@4 | <= 90% | 50.0% | yes |" in table
    assert "| unparseable answers | < 2% | 12.5% | **no** |" in table
    assert "(max over steps) | > 0 | 6.2% | yes |" in table
    bare = [SampleRecord(probs[0].id, i, "sample", x, "incorrect", False, 3, "stop") for i, x in enumerate(["9", "3*"])]
    two = P.measure(bare + [SampleRecord(probs[1].id, i, "sample", "7+8+3", "incorrect", False, 7, "stop")
                                    for i in range(2)], probs, n=2)
    assert two["unparseable"] == pytest.approx(2 / 4) and two["near_miss"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="expected 5"):
        P.measure(recs, probs, n=5)
