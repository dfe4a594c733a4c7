r"""Dataset-level metrics from per-sample records, and the pass@k tables.

* pass@k: the unbiased estimator of the NSR paper's Eq. 5 (:func:`rlvr_jax.evaluation.pass_at_k.mean_pass_at_k`) over the
  n samples of each problem.
* greedy accuracy: fraction of problems whose greedy (temperature 0) response is correct.
* answer-level entropy (two-stage paper, Appendix C.5): per problem, the G sampled answers o^(i) (``NA`` for
  responses without an extractable answer) are grouped into M distinct answers (by their canonical string,
  :func:`rlvr_jax.rewards.normalize_answer`) with empirical probabilities p_j = f_j / G, and
  ``AnswerEntropy = -sum_j p_j log p_j`` (natural log); the table reports the mean over problems.
* token-level entropy (same appendix): ``TokenEntropy = (1/G) sum_i (1/T_i) sum_t H(p_t^(i))`` with
  ``H(p) = -sum_v p(v) log p(v)`` of the model's raw (temperature-1) next-token distribution at each generated
  position, averaged over the G samples of a problem, then over problems. ``token_entropy_pooled`` is the
  token-weighted alternative ``sum H / sum T``. Both need entropies from the model (``token_entropy_fn``).
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from rlvr_jax.evaluation.pass_at_k import mean_pass_at_k
from rlvr_jax.rewards.extract import normalize_answer
from rlvr_jax.rewards.result import STATUSES

NA = "NA"


def answer_entropy(answers: Sequence[str | None]) -> float:
    """``-sum_j p_j log p_j`` over the distinct canonical answers (None -> ``NA``)."""
    if not answers:
        raise ValueError("answer_entropy needs at least one answer")
    keys = [NA if a is None else (normalize_answer(a) or NA) for a in answers]
    counts = np.array(list(Counter(keys).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def summarize(samples: Mapping[str, Sequence], greedy: Mapping[str, Sequence] | None, ks: Sequence[int]) -> dict:
    """Metrics of one dataset from ``{problem_id: [SampleRecord x n]}`` (and greedy ``{problem_id: [record]}``)."""
    if not samples:
        raise ValueError("summarize: no complete problems")
    n_per = np.array([len(r) for r in samples.values()])
    c_per = np.array([sum(x.correct for x in r) for r in samples.values()])
    all_recs = [x for r in samples.values() for x in r]
    out: dict = {
        "num_problems": len(samples),
        "n": int(n_per.max()),
        "pass_at_k": {str(k): v for k, v in mean_pass_at_k(n_per, c_per, ks).items()},
        "mean_accuracy": float(c_per.sum() / n_per.sum()),
        "answer_entropy": float(np.mean([answer_entropy([x.extracted for x in r]) for r in samples.values()])),
        "mean_length": float(np.mean([x.length for x in all_recs])),
        "truncated_fraction": float(np.mean([x.finish_reason == "length" for x in all_recs])),
        "status_counts": {s: sum(x.status == s for x in all_recs) for s in STATUSES},
    }
    if all(x.entropy_sum is not None for x in all_recs):
        per_problem = [np.mean([x.entropy_sum / max(x.length, 1) for x in r]) for r in samples.values()]
        out["token_entropy"] = float(np.mean(per_problem))
        out["token_entropy_pooled"] = float(sum(x.entropy_sum for x in all_recs) /
                                            max(1, sum(x.length for x in all_recs)))
    else:
        out["token_entropy"] = out["token_entropy_pooled"] = None
    if greedy:
        out["greedy_accuracy"] = float(np.mean([r[0].correct for r in greedy.values()]))
        out["greedy_problems"] = len(greedy)
    else:
        out["greedy_accuracy"] = None
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def pass_at_k_rows(columns: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[list]]:
    """Header and rows of a k x column table from ``{column: {k: value}}`` (missing k -> None)."""
    ks = sorted({int(k) for col in columns.values() for k in col})
    header = ["k"] + list(columns)
    rows = [[k] + [columns[c].get(str(k), columns[c].get(k)) for c in columns] for k in ks]
    return header, rows


def write_csv(path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in row])


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def extra_rows(summaries: Mapping[str, dict]) -> tuple[list[str], list[list]]:
    """Header and rows of the non-pass@k metrics, one row per dataset (or checkpoint)."""
    keys = ["num_problems", "n", "greedy_accuracy", "mean_accuracy", "answer_entropy", "token_entropy",
            "token_entropy_pooled", "mean_length", "truncated_fraction"]
    return ["name"] + keys, [[name] + [s.get(k) for k in keys] for name, s in summaries.items()]
