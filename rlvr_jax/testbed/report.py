"""The testbed report: tables (:func:`rlvr_jax.evaluation.summary.markdown_table`), plots and the summary.

``write_report`` writes, under ``<out>/report``::

    pass_at_k.md          pass@k (k = 1..n, mean +- std over seeds) and the other held-out metrics
    per_seed.md           every seed's pass@1 / pass@n / greedy accuracy / token entropy
    pass_at_k.png         pass@k curves of base and every algorithm (mean over seeds)
    training_curves.png   token entropy, correct ratio, fully-solved ratio, held-out greedy accuracy over steps
    base_properties.md    the base's measured properties against the testbed's criteria (per seed), and every
                          policy's pass@k on the rare-only / other puzzles
    summary.md / .json    headline numbers (deltas against the base) and timings
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os

import numpy as np

from rlvr_jax.evaluation.summary import markdown_table

LABELS = {"base": "base", "psr": "PSR", "nsr": "NSR", "w_reinforce": "W-REINFORCE", "grpo": "GRPO",
          "grpo_n": "GRPO-N"}
CURVES = (("train/rollout_entropy", "token entropy of rollouts (nats)"),
          ("train/correct_ratio", "correct ratio (train rollouts)"),
          ("train/fully_solved_ratio", "fully-solved prompt ratio"),
          ("eval/*/greedy_accuracy", "held-out greedy accuracy (trainer eval)"))
METRICS = (("greedy_accuracy", True), ("mean_accuracy", True), ("answer_entropy", False),
           ("token_entropy", False))


def metric(row: dict, pattern: str):
    """``row[pattern]``, or the first value whose key matches the glob ``pattern`` (the trainer names its
    held-out metrics ``eval/<dataset>/...`` after the dataset path); None when absent."""
    if pattern in row:
        return row[pattern]
    return next((v for k, v in row.items() if fnmatch.fnmatchcase(k, pattern)), None)


def read_metrics(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(runs: dict[str, list[list[dict]]], path: str) -> None:
    """One panel per quantity of :data:`CURVES`; one line per algorithm (mean over seeds, band = min..max)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.0 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES):
        for algo, seeds in runs.items():
            per_seed = [{r["step"]: metric(r, key) for r in rows if metric(r, key) is not None} for rows in seeds]
            steps = sorted(set.intersection(*[set(s) for s in per_seed])) if per_seed else []
            if not steps:
                continue
            vals = np.array([[s[t] for t in steps] for s in per_seed])
            line, = ax.plot(steps, vals.mean(0), marker="o" if len(steps) < 12 else None, ms=3,
                            label=LABELS.get(algo, algo))
            if len(per_seed) > 1:
                ax.fill_between(steps, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mean_std(xs) -> tuple[float, float]:
    a = np.asarray([x for x in xs if x is not None], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _fmt(m: float, s: float, pct: bool = True) -> str:
    """``mean ± std`` (std omitted when 0): percent with one decimal, else three decimals."""
    if math.isnan(m):
        return "-"
    if pct:
        return f"{100 * m:.1f}" + (f" ± {100 * s:.1f}" if s > 0 else "")
    return f"{m:.3f}" + (f" ± {s:.3f}" if s > 0 else "")


def unparseable_share(summary: dict) -> float:
    """Share of the evaluation samples with no extractable answer (``status_counts['no_answer']``)."""
    counts = summary.get("status_counts") or {}
    total = sum(counts.values())
    return counts.get("no_answer", 0) / total if total else float("nan")


def aggregate(evals: dict[str, list[dict]], ks) -> dict:
    """``{policy: {"pass@k": (mean, std), ..., metric: (mean, std)}}`` over seeds."""
    out = {}
    for name, per_seed in evals.items():
        row = {f"pass@{k}": _mean_std([s["pass_at_k"][str(k)] for s in per_seed]) for k in ks}
        for key, _ in METRICS:
            row[key] = _mean_std([s.get(key) for s in per_seed])
        row["unparseable"] = _mean_std([unparseable_share(s) for s in per_seed])
        out[name] = row
    return out


def _or_nan(x) -> float:
    """``x``, or nan when it is missing (None); 0.0 stays 0.0."""
    return float("nan") if x is None else float(x)


def tables(agg: dict, evals: dict[str, list[dict]], runs: dict, ks, seeds) -> dict[str, str]:
    """The report's markdown tables: ``pass_at_k`` (rows k), ``metrics`` (greedy, entropies, unparseable share),
    ``per_seed`` (pass@1 / pass@kmax / greedy / token entropy of every seed) and ``training`` (first- and
    last-5-step train correct and fully-solved ratios, mean over seeds)."""
    names = list(agg)
    labels = [LABELS.get(n, n) for n in names]
    pk = markdown_table(["k"] + labels, [[k] + [_fmt(*agg[n][f"pass@{k}"]) for n in names] for k in ks])
    rows = [[f"{key}{' (%)' if pct else ' (nats)'}"] + [_fmt(*agg[n][key], pct=pct) for n in names]
            for key, pct in METRICS]
    rows.append(["no-answer samples (%)"] + [_fmt(*agg[n]["unparseable"]) for n in names])
    metrics = markdown_table(["metric"] + labels, rows)
    kmax = ks[-1]
    per_seed = markdown_table(
        ["seed"] + labels,
        [[seed] + [f"{100 * evals[n][i]['pass_at_k']['1']:.1f} / {100 * evals[n][i]['pass_at_k'][str(kmax)]:.1f} / "
                   f"{100 * _or_nan(evals[n][i].get('greedy_accuracy')):.1f} / "
                   f"{_or_nan(evals[n][i].get('token_entropy')):.3f}" for n in names]
         for i, seed in enumerate(seeds)])
    train_rows = []
    for a, per in runs.items():
        cells = [LABELS.get(a, a)]
        for key in ("train/correct_ratio", "train/fully_solved_ratio"):
            first = _mean_std([np.mean([metric(r, key) for r in rows[:5]]) for rows in per])
            last = _mean_std([np.mean([metric(r, key) for r in rows[-5:]]) for rows in per])
            cells += [_fmt(*first), _fmt(*last)]
        train_rows.append(cells)
    training = markdown_table(["method", "correct ratio, first 5 steps (%)", "last 5 (%)",
                               "fully-solved ratio, first 5 (%)", "last 5 (%)"], train_rows)
    return {"pass_at_k": pk, "metrics": metrics, "per_seed": per_seed, "training": training}


def properties_md(props: dict) -> str:
    """``base_properties.md``: per seed, the base's criteria table; then every policy's pass@k on the
    rare-only and the other puzzles (mean ± std over seeds), when the base has rare strategies."""
    from rlvr_jax.testbed.properties import criteria_table

    out = ["## The base before any RL (held-out evaluation records)", ""]
    for seed, p in props["policies"]["base"].items():
        n = p["n"]
        out += [f"### seed {seed}", "", criteria_table(p, props.get("train_fully_solved_max")),
                f"Never solved in {n} samples: {100 * p['never_solved']:.1f}% of puzzles; always solved: "
                f"{100 * p['always_solved']:.1f}%; solved puzzles with >= 2 distinct correct answers: "
                f"{100 * p['solved_with_2plus_distinct']:.1f}%; near misses: median distance to the target "
                f"{p['near_miss_median_distance']}, {100 * (p['near_miss_within_5'] or 0):.1f}% within 5.", ""]
    names = list(props["policies"])
    first = next(iter(props["policies"]["base"].values()))
    if first.get("rare_only"):
        n = first["n"]
        cols = [(part, k) for part in ("rare_only", "other") for k in (1, n)]
        header = ["policy"] + [f"{part.replace('_', '-')} pass@{k} (%)" for part, k in cols] + [
            "distinct correct per solved puzzle"]
        rows = []
        for name in names:
            per = list(props["policies"][name].values())
            rows.append([LABELS.get(name, name)] + [_fmt(*_mean_std([q[part][f"pass@{k}"] for q in per]))
                                                    for part, k in cols]
                        + [_fmt(*_mean_std([q["distinct_correct"] for q in per]), pct=False)])
        out += [f"## pass@k on the rare-only puzzles ({first['rare_only']['puzzles']}, solved only by a rare "
                f"strategy) and the other {first['other']['puzzles']}", "", markdown_table(header, rows)]
    return "\n".join(out) + "\n"


def write_report(report_dir: str, evals: dict[str, list[dict]], runs: dict, ks, cfg, timings: dict,
                 warm_stats: dict, props: dict | None = None) -> dict:
    """The report files of the module docstring; returns the summary dict (also ``summary.json``).
    ``props``: every policy's measured properties (:func:`rlvr_jax.testbed.experiment.policy_properties`),
    written to ``base_properties.md``."""
    from rlvr_jax.evaluation.plots import plot_pass_at_k

    os.makedirs(report_dir, exist_ok=True)
    agg = aggregate(evals, ks)
    tab = tables(agg, evals, runs, ks, cfg.seeds)
    seeds_note = (f"{len(cfg.seeds)} seeds {list(cfg.seeds)}, mean ± std" if len(cfg.seeds) > 1
                  else f"seed {cfg.seeds[0]}")
    setting = (f"{cfg.eval_problems} held-out puzzles, n={cfg.eval_n}, T={cfg.eval_temperature}, "
               f"top-p {cfg.eval_top_p}")
    with open(os.path.join(report_dir, "pass_at_k.md"), "w") as f:
        f.write(f"## pass@k (%) on {setting} ({seeds_note})\n\n{tab['pass_at_k']}\n## other metrics\n\n"
                f"{tab['metrics']}")
    with open(os.path.join(report_dir, "per_seed.md"), "w") as f:
        f.write(f"## per seed: pass@1 / pass@{ks[-1]} / greedy accuracy (%) / token entropy\n\n{tab['per_seed']}\n"
                f"## training rollouts (mean over seeds)\n\n{tab['training']}")
    if props:
        with open(os.path.join(report_dir, "base_properties.md"), "w") as f:
            f.write(properties_md(props))
    plot_training_curves(runs, os.path.join(report_dir, "training_curves.png"))
    plot_pass_at_k({LABELS.get(n, n): {f"held-out, {seeds_note}": {k: agg[n][f"pass@{k}"][0] for k in ks}}
                    for n in agg}, os.path.join(report_dir, "pass_at_k.png"))
    kmax, b = ks[-1], agg["base"]
    lines = [f"# Testbed report ({seeds_note})", "",
             f"Base: warm-started tiny Qwen3 ({warm_stats.get('num_params', '?')} parameters, "
             f"{cfg.warmstart.steps} warm-start steps); RL: {cfg.total_steps} steps x {cfg.prompt_batch_size} "
             f"prompts x {cfg.rollout_n} rollouts, lr {cfg.lr}; evaluation: {setting}.", "", tab["pass_at_k"],
             tab["metrics"], tab["per_seed"], tab["training"], "## Against the base", ""]
    for a in [x for x in agg if x != "base"]:
        r = agg[a]
        lines.append(f"- **{LABELS.get(a, a)}**: pass@1 {100 * (r['pass@1'][0] - b['pass@1'][0]):+.1f} points, "
                     f"pass@{kmax} {100 * (r[f'pass@{kmax}'][0] - b[f'pass@{kmax}'][0]):+.1f} points; token "
                     f"entropy {b['token_entropy'][0]:.3f} -> {r['token_entropy'][0]:.3f}; answer entropy "
                     f"{b['answer_entropy'][0]:.3f} -> {r['answer_entropy'][0]:.3f}.")
    lines += ["", "## Timing (s)", ""] + [f"- {k}: {v:.1f}" for k, v in timings.items()]
    with open(os.path.join(report_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary = {"config": dataclasses.asdict(cfg), "ks": list(ks), "heldout": agg, "per_seed": evals,
               "properties": props,
               "timings_s": timings, "warmstart": {k: warm_stats.get(k) for k in
                                                   ("num_params", "warmstart_set", "total_seconds")}}
    with open(os.path.join(report_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
