"""Evaluation metrics: the unbiased pass@k estimator (Chen et al., 2021; NSR paper Eq. 5).

pass@k = E_problems[ 1 - C(n - c, k) / C(n, k) ]  for n samples per problem of which c are correct,
computed per problem in the stable product form

  1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)      (when n - c >= k; else exactly 1),

which never forms the huge binomials. c = 0 gives exactly 0.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def _check_int(name: str, x) -> None:
    if not np.all(np.asarray(x) == np.floor(np.asarray(x, dtype=float))):
        raise ValueError(f"pass_at_k: {name} must be integers, got {x!r}")


def _pass_at_k_scalar(n: int, c: int, k: int) -> float:
    if n < 0 or c < 0 or k < 0:
        raise ValueError(f"pass_at_k: n, c, k must be >= 0, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} > n={n} (need at least k samples per problem)")
    if c > n:
        raise ValueError(f"pass_at_k: c={c} > n={n} (more correct samples than samples)")
    if c == 0 or k == 0:
        return 0.0
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k(n, c, k):
    """Unbiased pass@k for n samples with c correct (scalars or broadcastable integer arrays).

    Returns a float for scalar inputs, else an ndarray of the broadcast shape. Raises ValueError naming the
    values when k > n, c > n or any is negative.
    """
    for name, x in (("n", n), ("c", c), ("k", k)):
        _check_int(name, x)
    if np.ndim(n) == 0 and np.ndim(c) == 0 and np.ndim(k) == 0:
        return _pass_at_k_scalar(int(n), int(c), int(k))
    nb, cb, kb = np.broadcast_arrays(np.asarray(n), np.asarray(c), np.asarray(k))
    out = np.empty(nb.shape, dtype=np.float64)
    for idx in np.ndindex(nb.shape):
        out[idx] = _pass_at_k_scalar(int(nb[idx]), int(cb[idx]), int(kb[idx]))
    return out


def mean_pass_at_k(n_per_problem, c_per_problem, ks: Iterable[int]) -> dict[int, float]:
    """Dataset pass@k: {k: mean over problems of pass_at_k(n_i, c_i, k)} for each k in ks."""
    n = np.asarray(n_per_problem)
    c = np.asarray(c_per_problem)
    if n.shape != c.shape or n.ndim != 1 or n.size == 0:
        raise ValueError(f"mean_pass_at_k: need equal-length non-empty 1-D n and c, got shapes {n.shape}, {c.shape}")
    return {int(k): float(np.mean(pass_at_k(n, c, int(k)))) for k in ks}
