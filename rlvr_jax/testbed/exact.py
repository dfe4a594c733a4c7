r"""The exact answer distribution of a testbed policy: every candidate answer's probability by teacher forcing.

A held-out puzzle has at most 54 candidate expressions (:func:`rlvr_jax.testbed.task.all_expressions`) and the
warm start writes each as one fixed token string (``\boxed{3*8+6}``: 7 tokens). The probability that the
evaluation sampler emits candidate ``c = (c_1 .. c_L)`` and then stops is

    P(c) = prod_{j=1..L} q(c_j | prompt, c_<j) * sum_{s in stop ids} q(s | prompt, c)

where ``q(. | h)`` is the sampler's per-token distribution: ``softmax(truncate(logits(h) / T, top_k = -1,
top_p))`` with :func:`rlvr_jax.rollout.sampling_ops.truncate_logits`, the very function the sampler applies
(a token outside the nucleus has probability 0). ``remaining = 1 - sum_c P(c)`` is the mass of every other
output (another tokenisation of the same text, a malformed answer, no stop within the budget). From the
per-candidate probabilities, per puzzle ``p_correct = sum of P(c) over its correct candidates`` and

    exact pass@k = mean over puzzles of 1 - (1 - p_correct)^k       (k = 1 .. 1024)
    answer entropy = mean over puzzles of -sum_c P(c) log P(c) - remaining log remaining
    strategy mass  = mean over puzzles of sum of P(c) over the candidates of each strategy

Exact pass@k is a lower bound on the sampler's pass@k by at most ``remaining`` per puzzle (an output outside
the candidate set may still be graded correct; :mod:`rlvr_jax.testbed.outside` samples and grades those outputs).
The distribution is computed for several sampling settings
(:data:`SETTINGS`: the evaluation's T = 0.6 with top-p 0.95, the same T without truncation, the training
T = 1 without truncation) from one forward pass. Full-sequence logits equal the sampler's KV-cache decode
logits up to float32 rounding, so a token within rounding of the nucleus boundary may be cut differently.

:func:`answer_probs` is jitted once per model shape (temperature and top-p are traced): about a second per
policy for the 128 held-out puzzles on 2 CPU cores.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from rlvr_jax.testbed import task as T

# name -> (temperature, top_p): the evaluation's sampler, the same temperature untruncated, the training sampler
SETTINGS = {"eval": (0.6, 0.95), "eval_no_top_p": (0.6, 1.0), "train": (1.0, 1.0)}
KMAX = 1024
STRATEGY_NAMES = tuple(sorted(set(T.STRATEGIES.values())))


@dataclasses.dataclass(frozen=True)
class CandidateSet:
    """Every candidate answer of a list of puzzles, one row per (puzzle, candidate)."""

    prompts: list            # per puzzle: prompt token ids
    tokens: np.ndarray       # [R, L] int32 answer tokens (no stop), right-padded with 0
    lengths: np.ndarray      # [R] int32
    puzzle: np.ndarray       # [R] int32: the row's puzzle index
    correct: np.ndarray      # [R] bool
    strategy: np.ndarray     # [R] int32 index into STRATEGY_NAMES
    texts: list              # [R] the candidate expressions
    rare_only: np.ndarray    # [P] bool: every solution of the puzzle uses a rare strategy

    @property
    def num_puzzles(self) -> int:
        return len(self.prompts)


def candidates(problems, tokenizer, show_steps: bool = False, template: str = "plain",
               rare_strategies: Sequence[str] = ("product_minus",)) -> CandidateSet:
    """The candidate set of testbed ``problems`` (:class:`rlvr_jax.data.Problem` s made by
    :func:`rlvr_jax.testbed.task.to_problem`): every expression over the puzzle's numbers, written as
    :func:`rlvr_jax.testbed.task.response_text` writes it and tokenised like the warm start's targets."""
    from rlvr_jax.data import encode_prompt

    prompts, toks, puz, corr, strat, texts, rare = [], [], [], [], [], [], []
    for i, prob in enumerate(problems):
        pz = T.from_problem(prob)
        prompts.append(encode_prompt(prob.problem, template, tokenizer))
        sols = set(T.solutions(pz))
        rare.append(T.needs_only(pz, rare_strategies))
        for e in T.all_expressions(pz.numbers, pz.ops):
            toks.append(list(tokenizer(T.response_text(e, show_steps), add_special_tokens=False)["input_ids"]))
            puz.append(i)
            corr.append(e in sols)
            strat.append(STRATEGY_NAMES.index(T.strategy(e)))
            texts.append(e)
    lengths = np.array([len(t) for t in toks], np.int32)
    arr = np.zeros((len(toks), int(lengths.max())), np.int32)
    for r, t in enumerate(toks):
        arr[r, :len(t)] = t
    return CandidateSet(prompts, arr, lengths, np.array(puz, np.int32), np.array(corr, bool),
                        np.array(strat, np.int32), texts, np.array(rare, bool))


@functools.lru_cache(maxsize=8)
def _logprob_fn(graphdef, stop_ids: tuple[int, ...], end_with_stop: bool):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rlvr_jax.rollout.sampling_ops import truncate_logits

    stops = jnp.asarray(stop_ids, jnp.int32)

    @jax.jit
    def fn(state, ids, mask, targets, lengths, temps, top_ps):
        model = nnx.merge(graphdef, state)
        logits = model(ids, attention_mask=mask).astype(jnp.float32)
        L = targets.shape[1]
        logits = logits[:, -(L + 1):]                          # positions predicting answer tokens 0..L (L: stop)
        j = jnp.arange(L + 1)[None, :]

        def one(t, p):
            z = truncate_logits(logits / t, -1, p)
            logp = jax.nn.log_softmax(z, axis=-1)
            tgt = jnp.concatenate([targets, jnp.zeros_like(targets[:, :1])], axis=1)
            tok = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
            stop = jax.nn.logsumexp(logp[..., stops], axis=-1)
            per = jnp.where(j < lengths[:, None], tok, 0.0)
            if end_with_stop:
                per = per + jnp.where(j == lengths[:, None], stop, 0.0)
            return jnp.sum(per, axis=1)

        return jax.vmap(one)(temps, top_ps)

    return fn


def sequence_logprobs(model, prompts: Sequence[Sequence[int]], tokens: np.ndarray, lengths: np.ndarray,
                      stop_ids: Sequence[int], settings: Sequence[tuple[float, float]], *,
                      end_with_stop: bool = True, pad_id: int = 0, batch_rows: int = 1024) -> np.ndarray:
    """``[S, R]`` float64 log-probabilities that the sampler at ``settings[s] = (temperature, top_p)`` writes
    row ``r``'s ``tokens[r, :lengths[r]]`` after ``prompts[r]`` (then a stop id, with ``end_with_stop``;
    without it, the probability of the prefix). ``-inf`` where a token falls outside the nucleus. Rows are
    left-padded prompts + right-padded answers, in fixed chunks of ``batch_rows`` (one compilation)."""
    from flax import nnx

    if any(t <= 0 for t, _ in settings):
        raise ValueError(f"sequence_logprobs: temperatures must be > 0 (greedy is not a distribution), got {settings}")
    R = len(prompts)
    if tokens.shape[0] != R or lengths.shape[0] != R:
        raise ValueError(f"sequence_logprobs: {R} prompts but {tokens.shape[0]} token rows, {lengths.shape[0]} lengths")
    graphdef, state = nnx.split(model)
    fn = _logprob_fn(graphdef, tuple(int(s) for s in stop_ids), end_with_stop)
    P = max(len(p) for p in prompts)
    L = tokens.shape[1]
    ids = np.full((R, P + L), pad_id, np.int32)
    mask = np.zeros((R, P + L), np.int32)
    for r, p in enumerate(prompts):
        ids[r, P - len(p):P] = p
        mask[r, P - len(p):P] = 1
    ids[:, P:] = np.where(np.arange(L)[None] < lengths[:, None], tokens, pad_id)
    mask[:, P:] = np.arange(L)[None] < lengths[:, None]
    temps = np.array([t for t, _ in settings], np.float32)
    tops = np.array([p for _, p in settings], np.float32)
    B = min(batch_rows, R)
    out = np.zeros((len(settings), R), np.float64)
    for s in range(0, R, B):
        e = min(s + B, R)
        pad = B - (e - s)
        sl = lambda a: np.concatenate([a[s:e], np.repeat(a[e - 1:e], pad, axis=0)]) if pad else a[s:e]  # noqa: E731
        res = fn(state, sl(ids), sl(mask), sl(tokens.astype(np.int32)), sl(lengths.astype(np.int32)), temps, tops)
        out[:, s:e] = np.asarray(res, np.float64)[:, :e - s]
    return out


def answer_probs(model, cands: CandidateSet, stop_ids: Sequence[int], settings: dict | None = None,
                 pad_id: int = 0) -> dict[str, np.ndarray]:
    """``{setting name: [R] probability of each candidate row}`` for ``settings`` (default :data:`SETTINGS`)."""
    settings = dict(SETTINGS if settings is None else settings)
    prompts = [cands.prompts[i] for i in cands.puzzle]
    lp = sequence_logprobs(model, prompts, cands.tokens, cands.lengths, stop_ids, list(settings.values()),
                           pad_id=pad_id)
    return {name: np.exp(lp[i]) for i, name in enumerate(settings)}


def per_puzzle(values: np.ndarray, cands: CandidateSet, where: np.ndarray | None = None) -> np.ndarray:
    """``[P]`` sums of row ``values`` per puzzle (rows with ``where`` only)."""
    out = np.zeros(cands.num_puzzles, np.float64)
    v = values if where is None else np.where(where, values, 0.0)
    np.add.at(out, cands.puzzle, v)
    return out


def pass_at_k_curve(p_correct: np.ndarray, kmax: int = KMAX) -> np.ndarray:
    """``[kmax]``: mean over puzzles of ``1 - (1 - p)^k`` for k = 1..kmax (computed as ``-expm1(k log1p(-p))``)."""
    p = np.clip(np.asarray(p_correct, np.float64), 0.0, 1.0)
    k = np.arange(1, kmax + 1, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore"):
        lq = np.log1p(-p)[None, :]
    return np.mean(-np.expm1(k * lq), axis=1)


def _entropy(probs: np.ndarray, cands: CandidateSet, remaining: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        h = per_puzzle(np.where(probs > 0, -probs * np.log(probs), 0.0), cands)
        r = np.clip(remaining, 0.0, 1.0)
        h += np.where(r > 0, -r * np.log(r), 0.0)
    return h


def distribution_metrics(probs: np.ndarray, cands: CandidateSet, kmax: int = KMAX) -> dict:
    """The exact metrics of one policy at one setting from its candidate probabilities ``probs`` ([R]):
    ``pass_at_k`` (k = 1..kmax, as a list; also for the ``rare_only`` and ``other`` puzzles), ``answer_entropy``
    (nats; the remaining mass counts as one more outcome), ``correct_mass``, ``remaining_mass`` (mean and max
    over puzzles), ``strategy_mass`` (mean over puzzles, every strategy) and ``strategy_mass_rare_only``."""
    pc = per_puzzle(probs, cands, cands.correct)
    rem = 1.0 - per_puzzle(probs, cands)
    rare = cands.rare_only
    strat = {}
    strat_rare = {}
    for i, name in enumerate(STRATEGY_NAMES):
        m = per_puzzle(probs, cands, cands.strategy == i)
        strat[name] = float(np.mean(m))
        if rare.any():
            strat_rare[name] = float(np.mean(m[rare]))
    out = {"pass_at_k": pass_at_k_curve(pc, kmax).tolist(),
           "answer_entropy": float(np.mean(_entropy(probs, cands, rem))),
           "correct_mass": float(np.mean(pc)), "remaining_mass": float(np.mean(rem)),
           "remaining_mass_max": float(np.max(rem)), "strategy_mass": strat, "strategy_mass_rare_only": strat_rare,
           "num_puzzles": int(cands.num_puzzles), "num_rare_only": int(rare.sum())}
    for name, sel in (("rare_only", rare), ("other", ~rare)):
        out[f"pass_at_k_{name}"] = pass_at_k_curve(pc[sel], kmax).tolist() if sel.any() else []
    return out


def kl_base_policy(p_base: np.ndarray, p_pol: np.ndarray, cands: CandidateSet) -> float:
    """Mean over puzzles of KL(base || policy) over the answer set (the candidates and the remaining mass as
    one outcome), in nats; ``inf`` when the policy gives 0 to an answer the base gives mass (use an
    untruncated setting)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_base > 0, p_base * (np.log(p_base) - np.log(p_pol)), 0.0)
        kl = per_puzzle(terms, cands)
        rb = np.clip(1.0 - per_puzzle(p_base, cands), 0.0, 1.0)
        rp = np.clip(1.0 - per_puzzle(p_pol, cands), 1e-300, 1.0)
        kl += np.where(rb > 0, rb * (np.log(np.maximum(rb, 1e-300)) - np.log(rp)), 0.0)
    return float(np.mean(kl))


def policy_metrics(probs: dict[str, np.ndarray], cands: CandidateSet, kmax: int = KMAX) -> dict:
    """:func:`distribution_metrics` for every setting in ``probs`` (the output of :func:`answer_probs`)."""
    return {name: distribution_metrics(p, cands, kmax) for name, p in probs.items()}


def evaluate_exact(model, cands: CandidateSet, stop_ids: Sequence[int], pad_id: int = 0, kmax: int = KMAX,
                   settings: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``(policy_metrics, answer_probs)`` of ``model``."""
    probs = answer_probs(model, cands, stop_ids, settings, pad_id)
    return policy_metrics(probs, cands, kmax), probs


def load_split(warm_dir: str, split: str = "heldout", num_problems: int | None = None):
    """``(tokenizer, problems, candidate set, number of problems in the split)`` of a warm-start directory's
    ``split`` (``heldout`` or ``rl``; the first ``num_problems`` of it), its candidates written as the warm start
    writes its answers (``warmstart.json``'s ``show_steps`` and rare strategies)."""
    import json
    import os

    from transformers import AutoTokenizer

    from rlvr_jax.data import load_file
    from rlvr_jax.testbed import warmstart as ws

    tok = AutoTokenizer.from_pretrained(os.path.join(warm_dir, ws.BASE_DIR))
    problems = list(load_file(os.path.join(warm_dir, ws.DATA_DIR, f"{split}.jsonl"), split))
    num_all = len(problems)
    if num_problems is not None:
        problems = problems[:num_problems]
    with open(os.path.join(warm_dir, "warmstart.json")) as f:
        wcfg = json.load(f).get("config", {})
    cands = candidates(problems, tok, show_steps=bool(wcfg.get("show_steps", False)),
                       rare_strategies=tuple(wcfg.get("rare_strategies", ("product_minus",))))
    return tok, problems, cands, num_all


def load_candidates(warm_dir: str, num_problems: int | None = None):
    """``(tokenizer, CandidateSet)`` of the held-out puzzles of a warm-start directory (the first
    ``num_problems``)."""
    tok, _, cands, _ = load_split(warm_dir, "heldout", num_problems)
    return tok, cands
