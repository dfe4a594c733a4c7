r"""Where a trained policy's probability mass came from and went, answer by answer, against its base.

Inputs are exact answer probabilities (:func:`rlvr_jax.testbed.exact.answer_probs`): ``p_base[r]`` and
``p_pol[r]`` for every candidate row ``r`` of a :class:`~rlvr_jax.testbed.exact.CandidateSet`, plus per puzzle
the remaining mass ``1 - sum_r p[r]`` (every non-candidate output) as one more outcome. Use an untruncated
setting (``"train"``: T = 1, top-p 1; the distribution the RL gradient acts on) so that no answer has
probability 0 and every log ratio is finite. With ``d[r] = p_pol[r] - p_base[r]``, per puzzle:

* **freed from incorrect** ``F = sum over incorrect r of max(0, -d[r])``. Mass is conserved per puzzle (the
  candidates and the remaining mass sum to 1 on both sides), so the decreases of all outcomes (incorrect,
  correct, remaining) are pooled and handed to the outcomes that rose; the freed mass is attributed to the
  gainers in proportion to their gains: the share of ``F`` that went to correct answers is
  ``G_correct / G`` (``G = G_correct + G_incorrect + G_remaining``, the sums of ``max(0, d)``), to other
  incorrect answers ``G_incorrect / G``, to the remaining mass ``G_remaining / G``. Aggregated shares weight
  the puzzles by ``F`` (``sum_p F_p G_x,p / G_p / sum_p F_p``).
* **in proportion to the prior?** Over the answers whose mass rose, ``y = log(p_pol / p_base)`` against
  ``x = log p_base``. If the freed mass of a puzzle is handed to its gainers in proportion to their prior
  (``p_pol = c_p p_base`` for every gainer of puzzle ``p``), ``y`` is the constant ``log c_p`` within each
  puzzle: the *within-puzzle* least-squares slope of ``y`` on ``x`` (both minus their puzzle means; the
  puzzle fixed-effects estimator) is 0. A positive slope means the likely answers gained more than their
  share (sharpening), a negative one that unlikely answers gained more (flattening). ``pooled_slope`` is the
  plain regression over all gainers (it also mixes the different ``c_p`` of different puzzles). ``spearman`` is
  the rank correlation of ``p_base`` and the gain ``d`` over the gainers (proportional: every ``d = (c_p - 1)
  p_base`` rises with ``p_base`` within a puzzle). All three are given for every gainer and, with a ``sampled``
  mask, separately for answers sampled during training and answers never sampled.
* **per strategy**: for each strategy ``s`` (:data:`rlvr_jax.testbed.exact.STRATEGY_NAMES`) the mass of its
  incorrect answers (``fails``, mean over the puzzles where it has one), of its correct answers (``correct``),
  and of its correct answers on the puzzles where it is the *only* correct strategy (``only``), before and
  after: does lowering ``a*b-c`` where it fails also lower it where it is the only solution?
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import numpy as np

from rlvr_jax.testbed import exact as E

BIN_EDGES = (1e-3, 1e-2, 1e-1)   # base-probability bins: <1e-3, 1e-3..1e-2, 1e-2..0.1, >=0.1


def _bin_labels(edges: Sequence[float]) -> list[str]:
    lo = ["0"] + [f"{e:g}" for e in edges]
    hi = [f"{e:g}" for e in edges] + ["1"]
    return [f"[{a},{b})" for a, b in zip(lo, hi)]


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank."""
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v), np.float64)
    r[order] = np.arange(1, len(v) + 1)
    uniq, inv = np.unique(v, return_inverse=True)
    sums = np.zeros(len(uniq))
    cnt = np.zeros(len(uniq))
    np.add.at(sums, inv, r)
    np.add.at(cnt, inv, 1)
    return (sums / cnt)[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of the average ranks); nan for < 3 points or a constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and R^2 of ``y`` on ``x`` (both already centred); nan when ``x`` or ``y`` has no spread."""
    sxx = float((x ** 2).sum())
    if len(x) < 2 or sxx <= 1e-300:
        return float("nan"), float("nan")
    slope = float((x * y).sum() / sxx)
    syy = float((y ** 2).sum())
    r2 = float(1.0 - ((y - slope * x) ** 2).sum() / syy) if syy > 1e-24 else float("nan")
    return slope, r2


def proportionality(p_base: np.ndarray, p_pol: np.ndarray, puzzle: np.ndarray) -> dict:
    """The "in proportion to the prior" test over the rows given (the gainers): within-puzzle slope and R^2
    of ``log(p_pol / p_base)`` on ``log p_base``, the pooled slope / intercept / R^2, and Spearman of
    ``p_base`` against the gain ``p_pol - p_base``."""
    n = int(len(p_base))
    out = {"n": n, "slope": float("nan"), "r2": float("nan"), "pooled_slope": float("nan"),
           "pooled_intercept": float("nan"), "pooled_r2": float("nan"), "spearman": float("nan"),
           "mean_log_ratio": float("nan")}
    if n == 0:
        return out
    x = np.log(p_base)
    y = np.log(p_pol) - x
    out["mean_log_ratio"] = float(y.mean())
    _, inv = np.unique(puzzle, return_inverse=True)
    cnt = np.bincount(inv).astype(np.float64)
    xm = np.bincount(inv, x) / cnt
    ym = np.bincount(inv, y) / cnt
    out["slope"], out["r2"] = _ols(x - xm[inv], y - ym[inv])
    ps, pr2 = _ols(x - x.mean(), y - y.mean())
    out["pooled_slope"], out["pooled_r2"] = ps, pr2
    if not np.isnan(ps):
        out["pooled_intercept"] = float(y.mean() - ps * x.mean())
    out["spearman"] = spearman(p_base, p_pol - p_base)
    return out


def _strategy_flow(p_base: np.ndarray, p_pol: np.ndarray, cands: E.CandidateSet) -> dict:
    P = cands.num_puzzles
    out = {}
    n_correct_strats = np.zeros(P, np.int64)
    has = {}
    for i in range(len(E.STRATEGY_NAMES)):
        has[i] = E.per_puzzle(np.ones(len(p_base)), cands, (cands.strategy == i) & cands.correct) > 0
        n_correct_strats += has[i]
    for i, name in enumerate(E.STRATEGY_NAMES):
        s = cands.strategy == i
        groups = {"fails": (s & ~cands.correct, E.per_puzzle(np.ones(len(p_base)), cands, s & ~cands.correct) > 0),
                  "correct": (s & cands.correct, has[i]),
                  "only": (s & cands.correct, has[i] & (n_correct_strats == 1))}
        d = {}
        for g, (rows, puz) in groups.items():
            b = E.per_puzzle(p_base, cands, rows)[puz]
            a = E.per_puzzle(p_pol, cands, rows)[puz]
            d[g] = {"puzzles": int(puz.sum()), "before": float(b.mean()) if len(b) else float("nan"),
                    "after": float(a.mean()) if len(a) else float("nan")}
        out[name] = d
    return out


def mass_flow(p_base: np.ndarray, p_pol: np.ndarray, cands: E.CandidateSet, sampled: np.ndarray | None = None,
              bins: Sequence[float] = BIN_EDGES) -> dict:
    """The mass flow from ``p_base`` to ``p_pol`` (``[R]`` probabilities of ``cands``' rows under the base and
    under a trained policy, one sampling setting). ``sampled``: optional ``[R]`` bool, the answers sampled during
    training. Returns (masses are means over puzzles; the module docstring defines every quantity):

    * ``delta_correct`` / ``delta_incorrect`` / ``delta_remaining``: the change of each kind of mass;
    * ``freed_incorrect``: mass freed from incorrect answers; ``share_to_correct`` / ``share_to_incorrect`` /
      ``share_to_remaining``: where it went (sum to 1 when anything was freed); ``share_to_correct_if_proportional``
      / ``share_to_remaining_if_proportional``: the same shares had every gainer gained in proportion to its base
      mass (per puzzle: the gainers' base mass of that kind over all gainers' base mass; freed-weighted);
    * ``by_bin``: per (correct / incorrect) x base-probability bin: rows, base and policy mass, ``delta``
      (mean over puzzles of the bin's mass change), ``mean_log_ratio``, ``frac_up`` (share of its answers that rose);
    * ``proportional_all``: the same over every answer with mass before and after (losers too: > 0 when mass
      moved from unlikely answers to likely ones);
    * ``proportional`` (every gainer), ``proportional_sampled`` / ``proportional_unsampled`` (with ``sampled``):
      :func:`proportionality`;
    * ``strategy``: :func:`_strategy_flow`;
    * ``per_puzzle``: ``[P]`` arrays ``freed_incorrect``, ``gain_correct``, ``gain_incorrect``,
      ``gain_remaining``, ``delta_correct``, ``delta_remaining``.
    """
    pb = np.asarray(p_base, np.float64)
    pp = np.asarray(p_pol, np.float64)
    R = len(cands.puzzle)
    if pb.shape != (R,) or pp.shape != (R,):
        raise ValueError(f"mass_flow: p_base {pb.shape} and p_pol {pp.shape} must both be ({R},), "
                         "one per candidate row")
    if sampled is not None:
        sampled = np.asarray(sampled, bool)
        if sampled.shape != (R,):
            raise ValueError(f"mass_flow: sampled {sampled.shape} must be ({R},)")
    for name, p in (("p_base", pb), ("p_pol", pp)):
        if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(E.per_puzzle(p, cands) > 1 + 1e-6):
            raise ValueError(f"mass_flow: {name} must be probabilities (>= 0, at most 1 per puzzle)")
    corr = cands.correct
    d = pp - pb
    up, down = np.maximum(d, 0.0), np.maximum(-d, 0.0)
    rem_b = np.clip(1.0 - E.per_puzzle(pb, cands), 0.0, 1.0)
    rem_p = np.clip(1.0 - E.per_puzzle(pp, cands), 0.0, 1.0)
    d_rem = rem_p - rem_b
    freed = E.per_puzzle(down, cands, ~corr)
    g_cor = E.per_puzzle(up, cands, corr)
    g_inc = E.per_puzzle(up, cands, ~corr)
    g_rem = np.maximum(d_rem, 0.0)
    g_tot = g_cor + g_inc + g_rem
    share = {}
    for name, g in (("correct", g_cor), ("incorrect", g_inc), ("remaining", g_rem)):
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(g_tot > 0, g / np.where(g_tot > 0, g_tot, 1.0), 0.0)
        share[name] = float((freed * frac).sum() / freed.sum()) if freed.sum() > 0 else float("nan")

    # the same shares if every gainer had gained in proportion to its base mass (puzzles whose gainers had base mass)
    bg = {"correct": E.per_puzzle(pb, cands, corr & (d > 0)), "incorrect": E.per_puzzle(pb, cands, ~corr & (d > 0)),
          "remaining": np.where(d_rem > 0, rem_b, 0.0)}
    bg_tot = bg["correct"] + bg["incorrect"] + bg["remaining"]
    w = np.where(bg_tot > 0, freed, 0.0)
    for name, g in bg.items():
        frac = g / np.where(bg_tot > 0, bg_tot, 1.0)
        share[f"{name}_if_proportional"] = float((w * frac).sum() / w.sum()) if w.sum() > 0 else float("nan")

    labels = _bin_labels(bins)
    b_idx = np.searchsorted(np.asarray(bins, np.float64), pb, side="right")
    by_bin = {}
    P = cands.num_puzzles
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(pp) - np.log(pb)
    for kind, sel in (("correct", corr), ("incorrect", ~corr)):
        for bi, lab in enumerate(labels):
            rows = sel & (b_idx == bi)
            fin = rows & np.isfinite(lr)
            by_bin[f"{kind} {lab}"] = {
                "rows": int(rows.sum()), "base_mass": float(pb[rows].sum() / P),
                "policy_mass": float(pp[rows].sum() / P),
                "delta": float(d[rows].sum() / P),
                "mean_log_ratio": float(lr[fin].mean()) if fin.any() else float("nan"),
                "frac_up": float((d[rows] > 0).mean()) if rows.any() else float("nan")}

    gainers = (d > 0) & (pb > 0)
    pos = (pb > 0) & (pp > 0)
    out = {"num_puzzles": int(P), "num_rows": int(R),
           "correct_before": float(E.per_puzzle(pb, cands, corr).mean()),
           "correct_after": float(E.per_puzzle(pp, cands, corr).mean()),
           "delta_correct": float(E.per_puzzle(d, cands, corr).mean()),
           "delta_incorrect": float(E.per_puzzle(d, cands, ~corr).mean()),
           "delta_remaining": float(d_rem.mean()),
           "freed_incorrect": float(freed.mean()),
           "share_to_correct": share["correct"], "share_to_incorrect": share["incorrect"],
           "share_to_remaining": share["remaining"],
           "share_to_correct_if_proportional": share["correct_if_proportional"],
           "share_to_remaining_if_proportional": share["remaining_if_proportional"],
           "by_bin": by_bin,
           "proportional": proportionality(pb[gainers], pp[gainers], cands.puzzle[gainers]),
           "proportional_all": proportionality(pb[pos], pp[pos], cands.puzzle[pos]),
           "strategy": _strategy_flow(pb, pp, cands),
           "per_puzzle": {"freed_incorrect": freed, "gain_correct": g_cor, "gain_incorrect": g_inc,
                          "gain_remaining": g_rem, "delta_correct": g_cor - E.per_puzzle(down, cands, corr),
                          "delta_remaining": d_rem}}
    if sampled is not None:
        for name, m in (("sampled", sampled), ("unsampled", ~sampled)):
            sel = gainers & m
            out[f"proportional_{name}"] = proportionality(pb[sel], pp[sel], cands.puzzle[sel])
    return out


def _f(v: float, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def mass_flow_table(results: dict[str, dict], strategy: str = "product_minus") -> str:
    """Markdown table, one row per method, of :func:`mass_flow` results: the correct-mass change, the freed
    incorrect mass and its shares, the within-puzzle slope (R^2) and Spearman over the gainers (sampled /
    never-sampled slopes when measured), and ``strategy``'s mass where it fails and where it is the only
    correct strategy, before -> after. Masses in % (means over puzzles)."""
    pct = lambda v: _f(100 * v, "{:.1f}")  # noqa: E731
    head = ["method", "correct mass % (before -> after)", "freed from incorrect %",
            "-> correct / incorrect / remaining %",
            "-> correct % if proportional",
            "slope (R^2), gainers", "Spearman", "slope, all answers", "slope sampled / never",
            f"{strategy} where it fails %",
            f"{strategy} where it is the only solution %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        pr = r["proportional"]
        samp = "n/a"
        if "proportional_sampled" in r:
            samp = (f"{_f(r['proportional_sampled']['slope'], '{:+.3f}')} / "
                    f"{_f(r['proportional_unsampled']['slope'], '{:+.3f}')}")
        st = r["strategy"].get(strategy, {})
        fail, only = st.get("fails", {}), st.get("only", {})
        lines.append("| " + " | ".join([
            name, f"{pct(r['correct_before'])} -> {pct(r['correct_after'])}", pct(r["freed_incorrect"]),
            f"{pct(r['share_to_correct'])} / {pct(r['share_to_incorrect'])} / {pct(r['share_to_remaining'])}",
            pct(r["share_to_correct_if_proportional"]),
            f"{_f(pr['slope'], '{:+.3f}')} ({_f(pr['r2'], '{:.2f}')})", _f(pr["spearman"], "{:+.2f}"),
            f"{_f(r['proportional_all']['slope'], '{:+.3f}')} ({_f(r['proportional_all']['r2'], '{:.2f}')})", samp,
            f"{pct(fail.get('before', float('nan')))} -> {pct(fail.get('after', float('nan')))}",
            f"{pct(only.get('before', float('nan')))} -> {pct(only.get('after', float('nan')))} "
            f"({only.get('puzzles', 0)} puzzles)"]) + " |")
    return "\n".join(lines) + "\n"


def plot_log_ratio(p_base: np.ndarray, policies: dict[str, np.ndarray], cands: E.CandidateSet, path: str,
                   floor: float = 1e-8) -> str:
    """One panel per policy: ``log10(p_after / p_before)`` against ``log10 p_before`` for every candidate
    (correct / incorrect coloured; probabilities floored at ``floor``), with the zero line; saved to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(policies))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), sharex=True, sharey=True, squeeze=False)
    x = np.log10(np.maximum(p_base, floor))
    for ax, (name, pp) in zip(axes[0], policies.items()):
        y = np.log10(np.maximum(pp, floor)) - x
        for sel, col, lab in ((~cands.correct, "tab:red", "incorrect"), (cands.correct, "tab:blue", "correct")):
            ax.scatter(x[sel], y[sel], s=3, alpha=0.35, color=col, label=lab, linewidths=0)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("log10 p_before")
    axes[0][0].set_ylabel("log10 (p_after / p_before)")
    axes[0][0].legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bin_table(results: dict[str, dict]) -> str:
    """Markdown table, one row per (method, correct / incorrect): per base-probability bin the change of the
    bin's mass (percentage points, mean over puzzles) and the share of its answers that rose."""
    first = next(iter(results.values()))
    labels = sorted({k.split(" ", 1)[1] for k in first["by_bin"]}, key=lambda v: float(v[1:].split(",")[0]))
    head = ["method", "answers"] + [f"p_base in {lab}: mass % before -> after (answers up %)" for lab in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        for kind in ("correct", "incorrect"):
            cells = []
            for lab in labels:
                b = r["by_bin"][f"{kind} {lab}"]
                cells.append(f"{_f(100 * b['base_mass'], '{:.1f}')} -> {_f(100 * b['policy_mass'], '{:.1f}')} "
                             f"({_f(100 * b['frac_up'], '{:.0f}')})")
            lines.append("| " + " | ".join([name, kind] + cells) + " |")
    return "\n".join(lines) + "\n"


def strategy_table(results: dict[str, dict]) -> str:
    """Markdown table, one row per method and strategy: the strategy's mass (%, mean over the puzzles concerned)
    where it fails, where it is correct, and where it is the only correct strategy, before -> after."""
    head = ["method", "strategy", "where it fails", "where it is correct", "where it is the only solution"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        for strat, g in r["strategy"].items():
            cells = [f"{_f(100 * g[k]['before'], '{:.1f}')} -> {_f(100 * g[k]['after'], '{:.1f}')} ({g[k]['puzzles']})"
                     for k in ("fails", "correct", "only")]
            lines.append("| " + " | ".join([name, strat] + cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(result: dict) -> dict:
    """``result`` with its per-puzzle arrays as lists (for ``json.dump``)."""
    out = dict(result)
    out["per_puzzle"] = {k: np.asarray(v).tolist() for k, v in result["per_puzzle"].items()}
    return out


def training_draws(run_config: dict, num_problems: int) -> np.ndarray:
    """``[num_problems]`` how many rollouts of each RL prompt a run drew: its prompt order replayed from its
    ``config.json`` (:class:`rlvr_jax.data.PromptSampler` with ``train.seed``, ``train.prompt_batch_size``,
    ``train.shuffle``, ``train.total_steps``) times ``rollout.n``."""
    from rlvr_jax.data import PromptSampler

    tr = run_config["train"]
    sampler = PromptSampler(num_problems, int(tr["prompt_batch_size"]), seed=int(tr["seed"]),
                            shuffle=bool(tr["shuffle"]))
    draws = np.zeros(num_problems, np.int64)
    for _ in range(int(tr["total_steps"])):
        np.add.at(draws, sampler.next_batch(), 1)
    return draws * int(run_config["rollout"]["n"])


def likely_sampled(p_train: np.ndarray, cands: E.CandidateSet, rollouts: np.ndarray, level: float = 0.5) -> np.ndarray:
    """``[R]`` bool: the answer appears at least once in its puzzle's ``rollouts[puzzle]`` training samples
    with probability >= ``level`` when drawn from ``p_train`` (the base at the training temperature). A proxy:
    the runs do not log their rollouts, and the policy moves during training."""
    n = np.asarray(rollouts, np.float64)[cands.puzzle]
    return -np.expm1(n * np.log1p(-np.clip(p_train, 0.0, 1.0 - 1e-16))) >= level


def resolve_runs(warm: str, runs: Sequence[str], prog: str = "massflow") -> tuple[str, dict[str, str]]:
    """``(warm-start dir, {policy name: HF dir})`` of a warm-start argument and run arguments."""
    if not os.path.exists(os.path.join(warm, "warmstart.json")) and os.path.exists(
            os.path.join(os.path.dirname(os.path.abspath(warm)), "warmstart.json")):
        warm = os.path.dirname(os.path.abspath(warm))
    if not os.path.exists(os.path.join(warm, "warmstart.json")):
        raise SystemExit(f"{prog}: {warm} is not a warm-start directory (no warmstart.json)")
    out = {}
    for r in runs:
        run = os.path.abspath(r)
        if os.path.isdir(os.path.join(run, "final_hf")):
            hf, name = os.path.join(run, "final_hf"), os.path.basename(run)
        elif os.path.exists(os.path.join(run, "config.json")) and os.path.basename(run) == "final_hf":
            hf, name = run, os.path.basename(os.path.dirname(run))
        else:
            raise SystemExit(f"{prog}: {r} is neither a run directory with final_hf/ nor an HF export")
        if name in out:
            raise SystemExit(f"{prog}: two policies named {name!r}")
        out[name] = hf
    return warm, out


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m rlvr_jax.testbed.massflow", description=__doc__.split("\n")[0])
    ap.add_argument("warm_dir", help="the warm-start directory (warmstart.json, base_hf/, data/); the base policy")
    ap.add_argument("runs", nargs="+", help="RL run directories (with final_hf/) or HF exports")
    ap.add_argument("--out", required=True, help="writes massflow.md, massflow.json, massflow.png here")
    ap.add_argument("--setting", default="train", choices=sorted(E.SETTINGS),
                    help="sampling setting of the probabilities (default train: T = 1, top-p 1)")
    ap.add_argument("--split", default="heldout", choices=("heldout", "rl"),
                    help="heldout: puzzles never trained on; rl: the RL puzzles (sampled = likely sampled)")
    ap.add_argument("--num-problems", type=int, default=None, help="only the first N puzzles of the split")
    args = ap.parse_args(argv)
    warm, runs = resolve_runs(args.warm_dir, args.runs)

    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.models import load_hf
    from rlvr_jax.testbed import warmstart as ws

    tok, probs_in, cands, num_all = E.load_split(warm, args.split, args.num_problems)
    stops, pad = stop_token_ids(tok), int(tok.pad_token_id)
    settings = {args.setting: E.SETTINGS[args.setting], "train": E.SETTINGS["train"]}

    def probs(path):
        model, _ = load_hf(path, dtype="float32")
        return E.answer_probs(model, cands, stops, settings, pad_id=pad)

    base = probs(os.path.join(warm, ws.BASE_DIR))
    results, pols = {}, {}
    for name, hf in runs.items():
        pp = probs(hf)
        sampled = None
        if args.split == "rl":
            cfg_path = os.path.join(os.path.dirname(hf), "config.json")
            with open(cfg_path) as f:
                run_cfg = json.load(f)
            rl_file = run_cfg.get("data", {}).get("train", "")
            if os.path.abspath(rl_file) != os.path.abspath(os.path.join(warm, ws.DATA_DIR, "rl.jsonl")):
                raise SystemExit(f"{prog}: run {name} trained on {rl_file!r}, not this warm start's rl.jsonl")
            draws = training_draws(run_cfg, num_all)[:len(probs_in)]
            sampled = likely_sampled(base["train"], cands, draws)
        results[name] = mass_flow(base[args.setting], pp[args.setting], cands, sampled)
        pols[name] = pp[args.setting]
    os.makedirs(args.out, exist_ok=True)
    cmd = "python -m rlvr_jax.testbed.massflow " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# Mass flow against the base ({args.split} puzzles: {cands.num_puzzles}, setting {args.setting} = "
            f"T {settings[args.setting][0]}, top-p {settings[args.setting][1]})\n\n`{cmd}`\n\n"
            + mass_flow_table(results) + "\n## By base probability\n\n" + bin_table(results)
            + "\n## By strategy (puzzles in brackets)\n\n" + strategy_table(results))
    with open(os.path.join(args.out, "massflow.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "massflow.json"), "w") as f:
        json.dump({"split": args.split, "setting": args.setting, "runs": runs,
                   "results": {k: to_json(v) for k, v in results.items()}}, f, indent=1)
    plot_log_ratio(base[args.setting], pols, cands, os.path.join(args.out, "massflow.png"))
    print(text)
    return results


if __name__ == "__main__":
    main()
