"""Unbiased pass@k against brute-force subset enumeration and exact rational arithmetic."""
import itertools
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from rlvr_jax.evaluation.pass_at_k import mean_pass_at_k, pass_at_k


def brute_force(n, c, k):
    """Fraction of the k-subsets of n samples (the first c correct) that contain a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def test_matches_subset_enumeration_small_n():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert abs(pass_at_k(n, c, k) - float(brute_force(n, c, k))) <= 1e-15, (n, c, k)


def test_matches_exact_rationals_n256():
    n = 256
    worst = 0.0
    for c in range(n + 1):
        for k in (1, 2, 3, 4, 8, 16, 32, 64, 100, 128, 200, 255, 256):
            exact = 1 - Fraction(comb(n - c, k), comb(n, k))
            got = pass_at_k(n, c, k)
            if exact == 0 or exact == 1:
                assert got == float(exact), (c, k)  # exact edges
            else:
                worst = max(worst, abs(got - float(exact)) / float(exact))
    assert worst < 1e-12, worst


def test_edges_and_arrays():
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(256, 1, 1) == 1 / 256
    got = pass_at_k(np.array([4, 4, 4]), np.array([[0, 1, 4]]), np.array([[1], [2]]))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, [[0.0, 0.25, 1.0], [0.0, 0.5, 1.0]], rtol=1e-15)


@pytest.mark.parametrize("n,c,k,match", [(4, 1, 5, "k=5 > n=4"), (4, 5, 1, "c=5 > n=4"), (4, -1, 1, "c=-1"),
                                         (-2, 0, 1, "n=-2"), (4, 1, -1, "k=-1"), (4, 1.5, 1, "integers")])
def test_invalid_values_raise_naming_them(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_over_problems():
    n = [8, 8, 8, 8]
    c = [0, 1, 4, 8]
    res = mean_pass_at_k(n, c, [1, 2, 8])
    assert set(res) == {1, 2, 8}
    np.testing.assert_allclose(res[1], np.mean([0, 1 / 8, 4 / 8, 1]), rtol=1e-15)
    np.testing.assert_allclose(res[2], np.mean([0, 1 - comb(7, 2) / comb(8, 2), 1 - comb(4, 2) / comb(8, 2), 1]),
                               rtol=1e-15)
    assert res[8] == 0.75
    with pytest.raises(ValueError, match="k=16 > n=8"):
        mean_pass_at_k(n, c, [16])
