"""Group-level remedies applied before the per-token loss: the unlikeliness reward and zero-success gating.

Rows are laid out as N / G consecutive groups of G = ``rollout.n`` rollouts of one prompt (host-side numpy).

Unlikeliness reward (He, Fried, Welleck 2025, "Rewarding the Unlikely: Lifting GRPO Beyond Distribution
Sharpening"). With l_i = (1/|y_i|) sum_t log pi_old(y_i,t) the length-normalised log-likelihood of sample i
under the policy that generated it, rank_i in {0, ..., G-1} its rank in ascending l within its group (the
least likely sample has rank 0; tied samples, e.g. the same completion drawn twice, share the mean of their
ranks) and c_i = 1[sample i is correct]:

    r~_i = r_i (1 - beta rank_i / G)   if c_i,        r~_i = r_i   otherwise,

then GRPO's group normalisation A_i = (r~_i - mean_g r~) / (std_g r~ + eps) of the reshaped rewards. A correct
sample the policy finds likely gets a smaller reward, and so a smaller advantage, than a rare correct one; with
+1 / {0,1} rewards the most likely correct sample gets 1 - beta (G-1)/G. The ranks run over the whole group
and l is the mean token log-prob, as in the authors' released trainer (its ``rank_penalty``, 0.25 in their
training script); the tie rule is ours (their argsort gives tied samples distinct ranks in index order, which
would reward one copy of a completion more than another).

Zero-success gating (after the argument that one observed success already saturates pass@k at large k, so
further updates on a prompt that has one only sharpen): with s_g = sum_{i in g} c_i the group's successes,

    keep_i = 1[s_g(i) <= m],

and the objective's loss runs over the kept rows only (the trainer removes the others from the batch, as the
"drop" selection of PSR / NSR does). m = 0 is the strict form (NSR on unsolved prompts); GRPO needs m >= 1,
since a group without a success has all-zero group-relative advantages.
"""
from __future__ import annotations

import numpy as np


def _groups(x, group_size: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or group_size < 1 or x.shape[0] % group_size:
        raise ValueError(f"expected [N] values with N a multiple of group_size={group_size}, got shape {x.shape}")
    return x.reshape(-1, group_size)


def group_ranks(values, group_size: int) -> np.ndarray:
    """[N] float ranks 0..G-1 of ``values`` in ascending order within each group of ``group_size``; ties get
    the mean of the ranks they span."""
    v = _groups(values, group_size).astype(np.float64)
    out = np.empty_like(v)
    for g, row in enumerate(v):
        order = np.argsort(row, kind="stable")
        ranks = np.empty(len(row))
        ranks[order] = np.arange(len(row), dtype=np.float64)
        for u in np.unique(row):
            tie = row == u
            ranks[tie] = ranks[tie].mean()
        out[g] = ranks
    return out.reshape(-1)


def sequence_mean_logp(logp, mask) -> np.ndarray:
    """[N] length-normalised log-likelihood (1/|y_i|) sum_t logp[i, t] over the valid tokens (0 for an empty row)."""
    m = np.asarray(mask) != 0
    s = np.where(m, np.asarray(logp, np.float64), 0.0).sum(-1)
    return s / np.maximum(m.sum(-1), 1)


def unlikeliness_rewards(rewards, correct, seq_logp, group_size: int, beta: float) -> np.ndarray:
    """[N] reshaped rewards r~ (module docstring): correct samples' r_i scaled by 1 - beta rank_i / G."""
    r = np.asarray(rewards, np.float64)
    c = np.asarray(correct, bool)
    rank = group_ranks(seq_logp, group_size)
    return np.where(c, r * (1.0 - beta * rank / group_size), r).astype(np.asarray(rewards).dtype)


def gate_rows(correct, group_size: int, max_correct: int) -> np.ndarray:
    """[N] bool: rows of the prompts with at most ``max_correct`` correct rollouts (all True when < 0)."""
    c = _groups(np.asarray(correct, bool), group_size)
    if max_correct < 0:
        return np.ones(c.size, bool)
    keep = c.sum(axis=1) <= max_correct
    return np.repeat(keep, group_size)
