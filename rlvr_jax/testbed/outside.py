r"""What the remaining mass is: a policy's samples that fall outside the enumerated candidate strings, classified.

:mod:`rlvr_jax.testbed.exact` computes the probability of every candidate answer (each expression over the
puzzle's numbers, written exactly as the warm start writes it, then a stop token); everything else is the
"remaining" mass. Exact pass@k counts only the candidates, so it equals the sampler's pass@k only if no
output outside them is graded correct. This module samples the policy with the evaluation's sampler (the JAX
sampler, the setting's temperature and top-p, the warm start's token budget), and sorts every sample:

* ``candidate``: the token string of a candidate followed by a stop token (what the exact computation counts);
* ``candidate_text_other_tokens``: the text of a candidate answer written with other tokens;
* ``other_numbers``: a well-formed ``\boxed{}`` expression (integers, the puzzle's operators, parentheses,
  spaces) whose numbers are not the puzzle's numbers (a number invented, repeated or left out);
* ``right_numbers_other_form``: a well-formed expression over the puzzle's numbers in a form no candidate
  writes (parentheses, spaces, text around the box);
* ``garbled``: a ``\boxed{}`` whose content is not such an expression;
* ``no_answer``: a stopped output without a ``\boxed{}``;
* ``no_stop``: no stop token within the budget.

Every sample outside the candidates is graded with the testbed's verifier (:func:`rlvr_jax.testbed.task.verify`,
the Reasoning Gym countdown scorer the rewards use): ``graded_correct`` counts the outside samples that would
still earn reward (each one is a place where exact pass@k undercounts). The sampled outside share is compared
with the exact remaining mass (mean over puzzles, the same setting) with a 95% Wilson interval: the two are
independent computations of the same quantity.

    python -m rlvr_jax.testbed.outside WARM_DIR [RUN_DIR ...] --out DIR [--n 16] [--setting eval]
"""
from __future__ import annotations

import argparse
import ast
import collections
import json
import math
import os
import re
import sys
from typing import Sequence

import numpy as np

from rlvr_jax.testbed import exact as E
from rlvr_jax.testbed import task as T

CATEGORIES = ("candidate", "candidate_text_other_tokens", "other_numbers", "right_numbers_other_form",
              "garbled", "no_answer", "no_stop")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def classify(body: Sequence[int], stopped: bool, text: str, puzzle: T.Puzzle, candidate_tokens: set,
             candidate_texts: set) -> str:
    """The category (:data:`CATEGORIES`) of one sample: ``body`` its tokens without the stop token, ``text``
    their decoding, ``candidate_tokens`` the puzzle's candidate token tuples, ``candidate_texts`` their texts."""
    if not stopped:
        return "no_stop"
    if tuple(body) in candidate_tokens:
        return "candidate"
    if text in candidate_texts:
        return "candidate_text_other_tokens"
    boxes = _BOXED.findall(text)
    if not boxes:
        return "garbled" if "\\boxed{" in text else "no_answer"
    numbers = expression_numbers(boxes[-1], puzzle.ops)
    if numbers is None:
        return "garbled"
    return "right_numbers_other_form" if sorted(numbers) == sorted(puzzle.numbers) else "other_numbers"


_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def expression_numbers(expr: str, ops: str) -> list[int] | None:
    """The integers of ``expr`` if it is an arithmetic expression over non-negative integer literals, the
    operators ``ops`` and parentheses (spaces allowed), else None."""
    if not re.fullmatch(r"[\d\s()+\-*]+", expr):
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return None
    out = []

    def walk(node) -> bool:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            out.append(node.value)
            return True
        if isinstance(node, ast.BinOp) and _AST_OPS.get(type(node.op), "") in ops and _AST_OPS.get(type(node.op)):
            return walk(node.left) and walk(node.right)
        return False

    return out if walk(tree) else None


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% with the default ``z``)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def classify_samples(samples: Sequence[Sequence[tuple[list[int], bool]]], puzzles: Sequence[T.Puzzle],
                     cands: E.CandidateSet, decode, examples: int = 5) -> dict:
    """Counts per category over ``samples[p] = [(token ids, stopped), ...]`` of puzzle ``p`` (token ids include
    the stop token when stopped), graded-correct counts of the outside samples per category, and up to
    ``examples`` outside texts per category."""
    if len(samples) != cands.num_puzzles or len(puzzles) != cands.num_puzzles:
        raise ValueError(f"classify_samples: {len(samples)} sample lists and {len(puzzles)} puzzles for "
                         f"{cands.num_puzzles} candidate puzzles")
    toks = [set() for _ in range(cands.num_puzzles)]
    texts = [set() for _ in range(cands.num_puzzles)]
    for r in range(len(cands.texts)):
        p = int(cands.puzzle[r])
        toks[p].add(tuple(int(t) for t in cands.tokens[r, :cands.lengths[r]]))
        texts[p].add(decode(cands.tokens[r, :cands.lengths[r]].tolist()))
    counts = collections.Counter({c: 0 for c in CATEGORIES})
    graded = collections.Counter({c: 0 for c in CATEGORIES})
    shown = collections.defaultdict(list)
    per_puzzle_outside = np.zeros(cands.num_puzzles, np.int64)
    for p, rows in enumerate(samples):
        for ids, stopped in rows:
            body = list(ids[:-1]) if stopped else list(ids)
            text = decode(body)
            cat = classify(body, stopped, text, puzzles[p], toks[p], texts[p])
            counts[cat] += 1
            if cat == "candidate":
                continue
            per_puzzle_outside[p] += 1
            graded[cat] += int(T.verify(text, puzzles[p]))
            if len(shown[cat]) < examples:
                shown[cat].append({"puzzle": p, "numbers": list(puzzles[p].numbers), "target": puzzles[p].target,
                                   "text": text})
    total = sum(counts.values())
    outside = total - counts["candidate"]
    return {"samples": total, "outside": outside, "outside_share": outside / total if total else float("nan"),
            "outside_interval": wilson(outside, total), "counts": dict(counts), "graded_correct": dict(graded),
            "graded_correct_total": int(sum(graded.values())), "examples": dict(shown),
            "puzzles_with_outside": int((per_puzzle_outside > 0).sum())}


def sample_policy(model, cands: E.CandidateSet, stop_ids: Sequence[int], pad_id: int, n: int, temperature: float,
                  top_p: float, max_new_tokens: int, seed: int = 0) -> list[list[tuple[list[int], bool]]]:
    """``n`` samples per puzzle of the candidate set's prompts from the JAX sampler (as the testbed evaluator
    draws them): ``[puzzle][sample] = (token ids, stopped)``."""
    from rlvr_jax.rollout.base import SamplingParams
    from rlvr_jax.rollout.jax_sampler import JaxSampler

    engine = JaxSampler(model, pad_id=pad_id, eos_token_ids=list(stop_ids), max_batch_size=256,
                        max_new_tokens_limit=max_new_tokens)
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    with engine:
        out = engine.generate(cands.prompts, n, params)
    return [[(list(c.token_ids), c.finish_reason == "stop") for c in row] for row in out]


def table(results: dict[str, dict]) -> str:
    """The markdown table of :func:`main`'s results (one row per policy)."""
    cats = [c for c in CATEGORIES if c != "candidate"]
    head = ("| policy | samples | outside % (95% CI) | exact remaining % | " + " | ".join(cats)
            + " | outside graded correct |\n|---|---:|---|---:|" + "---:|" * len(cats) + "---:|\n")
    rows = []
    for name, r in results.items():
        lo, hi = r["outside_interval"]
        rows.append(f"| {name} | {r['samples']} | {100 * r['outside_share']:.2f} ({100 * lo:.2f}-{100 * hi:.2f}) | "
                    f"{100 * r['exact_remaining']:.2f} | " + " | ".join(str(r["counts"][c]) for c in cats)
                    + f" | {r['graded_correct_total']} |")
    return head + "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m rlvr_jax.testbed.outside", description=__doc__.split("\n")[0])
    ap.add_argument("warm_dir", help="the warm-start directory (warmstart.json, base_hf/, data/); the base policy")
    ap.add_argument("runs", nargs="*", help="RL run directories (with final_hf/) or HF exports, besides the base")
    ap.add_argument("--out", required=True, help="writes outside.md and outside.json here")
    ap.add_argument("--n", type=int, default=16, help="samples per held-out puzzle (default 16)")
    ap.add_argument("--setting", default="eval", choices=sorted(E.SETTINGS),
                    help="sampling setting (default eval: T 0.6, top-p 0.95)")
    ap.add_argument("--num-problems", type=int, default=None, help="only the first N held-out puzzles")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = ap.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"outside: --n must be >= 1, got {args.n}")
    from rlvr_jax.testbed.massflow import resolve_runs
    warm, runs = resolve_runs(args.warm_dir, args.runs, prog="outside")

    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.models import load_hf
    from rlvr_jax.testbed import warmstart as ws

    tok, held, cands, _ = E.load_split(warm, "heldout", args.num_problems)
    puzzles = [T.from_problem(q) for q in held]
    with open(os.path.join(warm, "warmstart.json")) as f:
        show_steps = bool(json.load(f).get("config", {}).get("show_steps", False))
    budget = ws.max_new_tokens(ws.WarmStartConfig(show_steps=show_steps))   # the evaluator's token budget
    stops, pad = stop_token_ids(tok), int(tok.pad_token_id)
    temp, top_p = E.SETTINGS[args.setting]
    policies = {"base": os.path.join(warm, ws.BASE_DIR), **runs}
    results = {}
    for name, path in policies.items():
        model, _ = load_hf(path, dtype="float32")
        probs = E.answer_probs(model, cands, stops, {args.setting: (temp, top_p)}, pad_id=pad)[args.setting]
        samples = sample_policy(model, cands, stops, pad, args.n, temp, top_p, budget, args.seed)
        res = classify_samples(samples, puzzles, cands, lambda ids: tok.decode(ids))
        res["exact_remaining"] = float(np.mean(1.0 - E.per_puzzle(probs, cands)))
        res["checkpoint"] = path
        results[name] = res
    os.makedirs(args.out, exist_ok=True)
    cmd = "python -m rlvr_jax.testbed.outside " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# Samples outside the candidate strings ({cands.num_puzzles} held-out puzzles x {args.n}, setting "
            f"{args.setting} = T {temp}, top-p {top_p}, {budget} new tokens)\n\n`{cmd}`\n\n" + table(results))
    for name, r in results.items():
        for cat, ex in r["examples"].items():
            text += f"\n{name}, {cat}: " + "; ".join(f"{e['numbers']}->{e['target']}: {e['text']!r}" for e in ex[:3])
    with open(os.path.join(args.out, "outside.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "outside.json"), "w") as f:
        json.dump({"setting": args.setting, "n": args.n, "results": results}, f, indent=1)
    print(text)
    print(f"results: {os.path.join(args.out, 'outside.md')}")
    return results


if __name__ == "__main__":
    main()
