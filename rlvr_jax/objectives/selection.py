"""Which samples an objective learns from: the one definition shared by the objectives and the trainer.

Every objective's policy-gradient term uses the tokens with 1[select(A_t)] = 1, by the sign of the advantage:

  psr             A > 0   (correct samples; NSR paper Eq. 3)
  nsr, nsr_gated  A < 0   (incorrect samples; Eq. 4)
  grpo_n, gspo_n  A < 0   (relative negatives; two-stage paper Sec. 4)
  every other     all tokens

The objectives multiply their surrogate by this indicator (``select_tokens``). The trainer calls
``kept_rows`` (a row is kept when at least one valid token is selected) for the ``train/kept_samples`` metric
and, with ``algo.sample_selection = "drop"``, to remove the other rows from the batch before the mini-batches
are formed (the NSR paper's released code: PSR trains on the correct samples only, NSR on the incorrect ones).

The two selection modes differ only in what the loss is averaged over. With token-mean aggregation, kept
tokens K and all valid tokens N of a mini-batch, and f = |K| / |N|:

  "mask" (Eq. 3/4 literally):  L = (1/|N|) sum_{t in K} l_t - (c/|N|) sum_{t in N} H_t
  "drop" (the released code):  L = (1/|K|) sum_{t in K} l_t - (c/|K|) sum_{t in K} H_t

so the policy-gradient term of "mask" is f times that of "drop", and "mask"'s entropy bonus also acts on the
samples the objective does not learn from. For objectives that select all tokens both modes are the same.
"""
from __future__ import annotations

import numpy as np

SELECTION_MODES = ("drop", "mask")
_RULES = {"psr": "positive", "nsr": "negative", "nsr_gated": "negative", "grpo_n": "negative", "gspo_n": "negative"}


def selection_rule(objective: str) -> str:
    """'positive', 'negative' or 'all' for objective ``objective``."""
    return _RULES.get(objective, "all")


def select_tokens(objective: str, adv, xp=None):
    """Boolean array of adv's shape: the tokens whose policy-gradient term ``objective`` keeps (before the
    response mask). ``xp`` is the array module (numpy by default; the objectives pass jax.numpy)."""
    xp = np if xp is None else xp
    rule = selection_rule(objective)
    if rule == "positive":
        return adv > 0
    if rule == "negative":
        return adv < 0
    return xp.ones(xp.shape(adv), bool)


def kept_rows(objective: str, advantages: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[N] bool: rows with at least one valid token selected by ``objective`` (the rows its gradient uses)."""
    adv = np.asarray(advantages)
    return np.any(select_tokens(objective, adv) & (np.asarray(mask) != 0), axis=-1)
