"""The prior-strength sweep (``python -m rlvr_jax.demo --sweep prior``).

The NSR paper's mechanism (its Sec. 4): pushing down a sampled wrong answer moves its probability to the other
answers *in proportion to the model's current probabilities*, so NSR can only help where the prior already
favours the correct answers; PSR sharpens onto the sampled correct answers whatever the prior. The sweep makes
that testable: it takes one base per warm-start length in :attr:`SweepConfig.warmstart_steps` (a longer warm
start = a stronger prior; everything else, the data included, is the same; the shorter bases are snapshots of
the longest run, so the sweep costs one warm start), runs every method on each
base with :func:`rlvr_jax.testbed.experiment.run_experiment` (one seed), and reports, per method, the pass@k
change over *its own* base against the base's strength (its measured held-out pass@1)::

    <out>/sweep/steps<S>/...        one experiment per base (warm start, RL runs, evaluations, report)
    <out>/sweep/report/sweep.md     base strength and every method's pass@k change per base, k in SWEEP_KS
    <out>/sweep/report/sweep.png    one panel per k: change in pass@k (points) against base pass@1
    <out>/sweep/report/sweep.json   the numbers behind both
"""
from __future__ import annotations

import dataclasses
import json
import os

from rlvr_jax.evaluation.summary import markdown_table
from rlvr_jax.testbed.report import LABELS

SWEEP_KS = (1, 4, 16, 64)


def sweep_deltas(results: dict[int, dict[str, dict]], ks=SWEEP_KS) -> dict:
    """Bookkeeping of the sweep. ``results[steps][policy]`` is one evaluation summary (``pass_at_k`` keyed by
    str(k)) per warm-start length, ``"base"`` included. Returns, with the bases ordered by warm-start length::

        {"steps": [S1, S2, ...], "base": {k: [base pass@k per S]},
         "delta": {algo: {k: [policy pass@k - base pass@k per S]}}}

    Only the k present in every summary are kept; a method missing on some base raises ValueError."""
    steps = sorted(results)
    if not steps:
        raise ValueError("sweep_deltas: no results")
    algos = [a for a in results[steps[0]] if a != "base"]
    for s in steps:
        if "base" not in results[s] or set(results[s]) - {"base"} != set(algos):
            raise ValueError(f"sweep_deltas: base {s} has policies {sorted(results[s])}, expected base + {algos}")
    ks = [k for k in ks if all(str(k) in results[s][p]["pass_at_k"] for s in steps for p in results[s])]
    base = {k: [results[s]["base"]["pass_at_k"][str(k)] for s in steps] for k in ks}
    delta = {a: {k: [results[s][a]["pass_at_k"][str(k)] - results[s]["base"]["pass_at_k"][str(k)] for s in steps]
                 for k in ks} for a in algos}
    return {"steps": steps, "base": base, "delta": delta}


def plot_sweep(d: dict, path: str) -> None:
    """One panel per k: each method's pass@k change (points) against its base's pass@1 (%)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ks = list(d["base"])
    x = [100 * v for v in d["base"][ks[0]]] if ks and ks[0] == 1 else list(range(len(d["steps"])))
    fig, axes = plt.subplots(1, len(ks), figsize=(3.6 * len(ks), 3.2), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for a, per_k in d["delta"].items():
            ax.plot(x, [100 * v for v in per_k[k]], marker="o", ms=4, label=LABELS.get(a, a))
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title(f"pass@{k} change vs own base", fontsize=9)
        ax.set_xlabel("base pass@1 (%)" if ks[0] == 1 else "base index")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("points")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sweep_table(d: dict) -> str:
    """Markdown: one row per (method, base): warm-start steps, the base's pass@k and the method's change
    (points) at each k."""
    ks = list(d["base"])
    header = ["method", "warm-start steps"] + [f"base pass@{k}" for k in ks] + [f"Δpass@{k}" for k in ks]
    rows = [[LABELS.get(a, a), s] + [f"{100 * d['base'][k][i]:.1f}" for k in ks] +
            [f"{100 * d['delta'][a][k][i]:+.1f}" for k in ks]
            for a in d["delta"] for i, s in enumerate(d["steps"])]
    return markdown_table(header, rows)


def run_sweep(exp, sweep, verbose: bool = True) -> dict:
    """Runs the sweep of the module docstring under ``exp.out_dir/sweep`` and returns the bookkeeping dict."""
    from rlvr_jax.testbed.experiment import run_experiment

    from rlvr_jax.testbed import warmstart as ws

    root = os.path.join(exp.out_dir, "sweep")
    steps_all = [int(s) for s in sweep.warmstart_steps]
    warm = {s: os.path.join(root, f"steps{s}", "warmstart") for s in steps_all}
    if not all(ws.is_complete(d) for d in warm.values()):  # one warm start; the weaker bases are its snapshots
        ws.warm_start(warm[steps_all[-1]], dataclasses.replace(exp.warmstart, steps=steps_all[-1]), verbose,
                      snapshots={s: warm[s] for s in steps_all[:-1]})
    results: dict[int, dict[str, dict]] = {}
    for steps in steps_all:
        cfg = dataclasses.replace(exp, out_dir=os.path.dirname(warm[steps]), warm_dir=warm[steps],
                                  seeds=(sweep.seed,), warmstart=dataclasses.replace(exp.warmstart, steps=steps))
        summary = run_experiment(cfg, verbose=verbose)
        results[int(steps)] = {p: per_seed[0] for p, per_seed in summary["per_seed"].items()}
    d = sweep_deltas(results)
    report = os.path.join(root, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "sweep.md"), "w") as f:
        f.write(f"## Prior-strength sweep (seed {sweep.seed}; changes in points against each method's own base)"
                f"\n\n{sweep_table(d)}")
    plot_sweep(d, os.path.join(report, "sweep.png"))
    with open(os.path.join(report, "sweep.json"), "w") as f:
        json.dump(d, f, indent=1)
    if verbose:
        print(f"[testbed] sweep report: {os.path.abspath(report)}", flush=True)
    return d
