"""A policy's measured properties (the base's against the testbed's criteria), from the evaluator's records.

:func:`measure` reads ``samples.jsonl`` of one evaluation (:mod:`rlvr_jax.evaluation.records`: the
extracted answer and the grade of every sample) and the held-out puzzles, and counts what the testbed asks
of a base before any RL (docs/testbed.md):

* ``pass@1`` and ``pass@n`` (the unbiased estimator, as the evaluator reports);
* ``distinct_correct``: distinct correct expressions among a solved puzzle's samples (mean), and the share of
  solved puzzles with at least two;
* ``near_miss``: the share of wrong answers that are expressions over exactly the puzzle's numbers (a real
  attempt that misses the target), with the median and the share within 5 of ``|value - target|``;
* ``unparseable``: the share of samples with no expression to grade;
* ``never_solved``: the share of puzzles none of the ``n`` samples solves; with rare strategies
  (``WarmStartConfig.rare_strategies``), pass@1 / pass@n on the *rare-only* puzzles (every solution uses a
  rare strategy, :func:`rlvr_jax.testbed.task.needs_only`) and on the rest.

:func:`criteria_table` sets these against the targets (pass@1 25-60%, pass@n at most 90%, under 2%
unparseable, a fully-solved ratio above zero in training).
"""
from __future__ import annotations

import statistics

import numpy as np

from rlvr_jax.testbed import task as T

def _expression(text) -> str | None:
    """``text`` without spaces when it is an expression :func:`rlvr_jax.testbed.task.split_expression` reads."""
    s = (text or "").replace(" ", "")
    try:
        T.split_expression(s)
    except ValueError:
        return None
    return s


def measure(records, problems, n: int, rare_strategies=()) -> dict:
    """The module docstring's figures from ``records`` (the ``kind == "sample"`` records of one evaluation)
    and the evaluated ``problems``."""
    from rlvr_jax.evaluation.pass_at_k import mean_pass_at_k

    by_id: dict[str, list] = {}
    for r in records:
        if r.kind == "sample":
            by_id.setdefault(r.problem_id, []).append(r)
    puzzles = {p.id: T.from_problem(p) for p in problems if p.id in by_id}
    if not puzzles:
        raise ValueError("measure: no sample records for the given problems")
    correct, distinct, unparsed, wrong_total, wrong_near, dist, rare_only = [], [], 0, 0, 0, [], []
    for pid, puz in puzzles.items():
        recs = by_id[pid]
        if len(recs) != n:
            raise ValueError(f"measure: problem {pid} has {len(recs)} samples, expected {n}")
        numbers = sorted(puz.numbers)
        correct.append(sum(bool(r.correct) for r in recs))
        sols = {r.extracted.replace(" ", "") for r in recs if r.correct and r.extracted}
        if sols:
            distinct.append(len(sols))
        rare_only.append(T.needs_only(puz, rare_strategies))
        for r in recs:
            expr = _expression(r.extracted)
            if expr is None:
                unparsed += 1
            if r.correct:
                continue
            wrong_total += 1
            if expr is not None and sorted(T.split_expression(expr)[0]) == numbers:
                wrong_near += 1
                dist.append(abs(T.evaluate_expression(expr) - puz.target))
    c, rare_only = np.asarray(correct), np.asarray(rare_only)

    def pass_at(mask):
        if not mask.any():
            return None
        pk = mean_pass_at_k(np.full(int(mask.sum()), n), c[mask], (1, n))
        return {"puzzles": int(mask.sum()), "pass@1": float(pk[1]), f"pass@{n}": float(pk[n])}

    everything = pass_at(np.ones(len(c), bool))
    out = {"puzzles": len(c), "n": n, "pass@1": everything["pass@1"], f"pass@{n}": everything[f"pass@{n}"],
           "never_solved": float(np.mean(c == 0)), "always_solved": float(np.mean(c == n)),
           "distinct_correct": float(np.mean(distinct)) if distinct else 0.0,
           "solved_with_2plus_distinct": float(np.mean(np.asarray(distinct) >= 2)) if distinct else 0.0,
           "unparseable": unparsed / (n * len(c)),
           "near_miss": wrong_near / wrong_total if wrong_total else 0.0,
           "near_miss_median_distance": float(statistics.median(dist)) if dist else None,
           "near_miss_within_5": float(np.mean(np.asarray(dist) <= 5)) if dist else None}
    if rare_strategies:
        out["rare_only"], out["other"] = pass_at(rare_only), pass_at(~rare_only)
    return out


def criteria_table(props: dict, fully_solved_max: float | None = None) -> str:
    """Markdown: each criterion, its target, the measured value and whether it is met. ``fully_solved_max``:
    the largest fully-solved ratio any training step reached (None: not measured)."""
    n = props["n"]
    rows = [("held-out pass@1", "25-60%", props["pass@1"], 0.25 <= props["pass@1"] <= 0.60),
            (f"held-out pass@{n}", "<= 90%", props[f"pass@{n}"], props[f"pass@{n}"] <= 0.90),
            ("distinct correct answers per solved puzzle", ">= 2", props["distinct_correct"],
             props["distinct_correct"] >= 2),
            ("wrong answers that are near misses (the puzzle's numbers)", "most", props["near_miss"],
             props["near_miss"] >= 0.5),
            ("unparseable answers", "< 2%", props["unparseable"], props["unparseable"] < 0.02)]
    if fully_solved_max is not None:
        rows.append(("fully-solved ratio in training (max over steps)", "> 0", fully_solved_max,
                     fully_solved_max > 0))
    lines = ["| criterion | target | measured | met? |", "|---|---|---|---|"]
    for name, target, value, ok in rows:
        shown = f"{value:.2f}" if name.startswith("distinct") else f"{100 * value:.1f}%"
        lines.append(f"| {name} | {target} | {shown} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines) + "\n"
