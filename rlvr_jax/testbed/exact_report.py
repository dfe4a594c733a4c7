r"""The exact report of a testbed experiment (:mod:`rlvr_jax.testbed.exact_runs` results), and the step-size study.

:func:`write` reads what an experiment left on disk (one base: ``<out>/exact/base.json`` and
``<out>/seed<s>/exact/<algo>.json``; bases as seeds: the same under every ``<out>/base<b>``) and writes into
``<out>/report``::

    exact.md              exact pass@k (k = 1..1024) mean ± std over every (base, seed) run, per setting, the
                          rare-only / other puzzles, per base, KL(base || policy), the frontier table
    exact_pass_at_k.png   pass@k curves to k = 1024 (evaluation setting, top-p 1.0, rare-only puzzles)
    trajectories.png      pass@1 / pass@1024 / answer entropy against RL step and against KL(base || policy)
    exact_frontier.png    Δ pass@1 against Δ pass@1024 over each run's own base (:mod:`rlvr_jax.testbed.frontier`)
                          (exact.md also splits a method's spread into RL seeds and bases: :func:`spread`)
    exact_summary.json    every number above

The base rows aggregate over bases (the base's exact numbers do not depend on the RL seed); a method's over its
(base, seed) runs; a Δ is a run minus its own base. Std is the sample std (ddof 1). :func:`stepsize` compares
experiments that differ only in the learning rate (and steps) at equal KL. Commands::

    python -m rlvr_jax.testbed.exact_report --out DIR                           # rebuild DIR/report's exact files
    python -m rlvr_jax.testbed.exact_report --stepsize 5e-5=D1 2e-4=D2 8e-4=D3 --out DIR
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re

import numpy as np

from rlvr_jax.evaluation.summary import markdown_table
from rlvr_jax.testbed.report import LABELS

SETTING_LABELS = {"eval": "T 0.6, top-p 0.95", "eval_no_top_p": "T 0.6, top-p 1.0", "train": "T 1.0, top-p 1.0"}
TABLE_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _seed_of(path: str, prefix: str) -> int:
    return int(re.fullmatch(prefix + r"(\d+)", os.path.basename(path)).group(1))


def collect(out_dir: str) -> dict:
    """``{"bases": {b: base record}, "runs": {algo: [(b, seed, record), ...]}}`` from the files on disk
    (``b`` is None for a one-base experiment)."""
    base_dirs = sorted(glob.glob(os.path.join(out_dir, "base[0-9]*")), key=lambda p: _seed_of(p, "base"))
    roots = [(_seed_of(d, "base"), d) for d in base_dirs if os.path.isdir(os.path.join(d, "exact"))]
    if not roots:
        roots = [(None, out_dir)]
    bases, runs = {}, {}
    for b, root in roots:
        path = os.path.join(root, "exact", "base.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"exact_report: no {path} (was the experiment run with exact_eval?)")
        with open(path) as f:
            bases[b] = json.load(f)
        bases[b]["_root"] = root
        for sdir in sorted(glob.glob(os.path.join(root, "seed[0-9]*")), key=lambda p: _seed_of(p, "seed")):
            for path in sorted(glob.glob(os.path.join(sdir, "exact", "*.json"))):
                with open(path) as f:
                    rec = json.load(f)
                rec["_dir"] = os.path.dirname(path)
                runs.setdefault(rec["algo"], []).append((b, _seed_of(sdir, "seed"), rec))
    return {"bases": bases, "runs": runs}


def _ms(values) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None], np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _fmt(ms, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    m, s = ms
    if np.isnan(m):
        return "-"
    sign = "+" if signed else ""
    txt = f"{scale * m:{sign}.{digits}f}"
    return txt + (f" ± {scale * s:.{digits}f}" if s > 0 else "")


def policies(col: dict) -> dict[str, list[tuple]]:
    """``{"base": [(b, None, rec)], algo: [(b, seed, rec)], ...}``: every policy's records."""
    out = {"base": [(b, None, rec) for b, rec in col["bases"].items()]}
    out.update(col["runs"])
    return out


def final_value(rec: dict, setting: str, key: str, k: int | None = None):
    """A final metric of a record: ``pass_at_k*`` lists at k (1-based), else the scalar."""
    m = rec["final"][setting]
    if k is None:
        return m.get(key)
    curve = m.get(key) or []
    return curve[k - 1] if len(curve) >= k else None


def aggregate(col: dict, setting: str, key: str = "pass_at_k", k: int | None = None) -> dict:
    """``{policy: (mean, std), ...}`` of a final metric, plus ``{policy: (mean, std)}`` of its change over each
    run's own base under ``"delta"``."""
    pol = policies(col)
    vals, deltas = {}, {}
    for name, rs in pol.items():
        vals[name] = _ms([final_value(rec, setting, key, k) for _, _, rec in rs])
        if name != "base":
            deltas[name] = _ms([_sub(final_value(rec, setting, key, k),
                                     final_value(col["bases"][b], setting, key, k)) for b, _, rec in rs])
    return {"value": vals, "delta": deltas}


def _sub(a, b):
    return None if a is None or b is None else a - b


def frontier_deltas(col: dict, setting: str = "eval", K: int = 1024) -> dict:
    """:func:`rlvr_jax.testbed.frontier.deltas`' structure (points) from exact records: pass@1, pass@K and
    their changes over the base, on all and on the rare-only puzzles; ``token_entropy`` holds the exact
    answer entropy (nats) here."""
    out = {"K": K}
    for name in policies(col):
        row = {}
        for key, kk, suffix in (("pass_at_k", 1, "1"), ("pass_at_k", K, "K"),
                                ("pass_at_k_rare_only", 1, "1"), ("pass_at_k_rare_only", K, "K")):
            a = aggregate(col, setting, key, kk)
            pre = "rare_" if key.endswith("rare_only") else ""
            row[f"{pre}pass@{suffix}"] = tuple(100 * x for x in a["value"][name])
            row[f"{pre}d{suffix}"] = tuple(100 * x for x in a["delta"].get(name, (0.0, 0.0)))
        row["token_entropy"] = aggregate(col, setting, "answer_entropy")["value"][name]
        out[name] = row
    return out


def spread(col: dict, setting: str = "eval", ks: tuple[int, ...] = (1, 1024)) -> dict:
    """Where a method's spread comes from, for every method run with >= 2 RL seeds on each of >= 2 bases:
    ``{algo: {"bases": B, "seeds": S, f"pass@{k}": {...}, f"d{k}": {...}}}`` where, for the level pass@k and
    its change over the run's own base (``d``), ``seed_std`` is the pooled within-base RL-seed std
    (sqrt of the mean over bases of each base's sample variance over its seeds), ``base_std`` the sample std
    over bases of each base's mean over its seeds, and ``n`` the number of runs. ``"base"`` holds the bases'
    own std of pass@k (the base does not depend on the RL seed)."""
    out = {}
    for algo, rs in col["runs"].items():
        by_base: dict = {}
        for b, _, rec in rs:
            by_base.setdefault(b, []).append(rec)
        if len(by_base) < 2 or min(len(v) for v in by_base.values()) < 2:
            continue
        row = {"bases": len(by_base), "seeds": min(len(v) for v in by_base.values())}
        for k in ks:
            for name, fn in ((f"pass@{k}", lambda rec, b: final_value(rec, setting, "pass_at_k", k)),
                             (f"d{k}", lambda rec, b: _sub(final_value(rec, setting, "pass_at_k", k),
                                                          final_value(col["bases"][b], setting, "pass_at_k", k)))):
                per = {b: np.array([fn(rec, b) for rec in recs], np.float64) for b, recs in by_base.items()}
                within = float(np.sqrt(np.mean([v.var(ddof=1) for v in per.values()])))
                means = np.array([v.mean() for v in per.values()])
                row[name] = {"mean": float(np.mean(np.concatenate(list(per.values())))), "seed_std": within,
                             "base_std": float(means.std(ddof=1)), "n": int(sum(v.size for v in per.values()))}
        out[algo] = row
    if out and len(col["bases"]) > 1:
        out["base"] = {f"pass@{k}": {"mean": _ms([final_value(r, setting, "pass_at_k", k) for r in col["bases"].values()])[0],
                                     "base_std": _ms([final_value(r, setting, "pass_at_k", k)
                                                      for r in col["bases"].values()])[1],
                                     "seed_std": 0.0, "n": len(col["bases"])} for k in ks}
    return out


def spread_table(sp: dict, ks: tuple[int, ...] = (1, 1024)) -> str:
    """The markdown table of :func:`spread` (points)."""
    head = ["policy", "runs"]
    for k in ks:
        head += [f"pass@{k}", f"RL-seed std pass@{k}", f"base std pass@{k}", f"Δ pass@{k}", f"RL-seed std Δ{k}",
                 f"base std Δ{k}"]
    rows = []
    for name, r in sp.items():
        cells = [LABELS.get(name, name), str(r[f"pass@{ks[0]}"]["n"]) if name == "base"
                 else f"{r['bases']} x {r['seeds']}"]
        for k in ks:
            lv = r[f"pass@{k}"]
            cells += [f"{100 * lv['mean']:.1f}", f"{100 * lv['seed_std']:.1f}", f"{100 * lv['base_std']:.1f}"]
            dv = r.get(f"d{k}")
            cells += ["-", "-", "-"] if dv is None else [f"{100 * dv['mean']:+.1f}", f"{100 * dv['seed_std']:.1f}",
                                                         f"{100 * dv['base_std']:.1f}"]
        rows.append(cells)
    return markdown_table(head, rows)


def _traj_array(rs: list[tuple], setting: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, [runs, steps] values)`` over the steps every run has."""
    steps = sorted(set.intersection(*[set(rec["steps"]) for _, _, rec in rs]))
    vals = np.array([[next(t for t in rec["trajectory"] if t["step"] == s)[setting].get(key, np.nan)
                      for s in steps] for _, _, rec in rs], np.float64)
    return np.array(steps), vals


def tables(col: dict) -> dict[str, str]:
    """The markdown tables of ``exact.md``."""
    pol = policies(col)
    names = list(pol)
    labels = [LABELS.get(n, n) for n in names]
    out = {}
    for setting in ("eval", "eval_no_top_p"):
        rows = []
        for k in TABLE_KS:
            a = aggregate(col, setting, "pass_at_k", k)["value"]
            rows.append([k] + [_fmt(a[n]) for n in names])
        out[f"pass_at_k_{setting}"] = markdown_table(["k"] + labels, rows)
    head = ["policy"]
    cols = []
    for setting in ("eval", "eval_no_top_p", "train"):
        for k in (1, 1024):
            head.append(f"pass@{k}, {SETTING_LABELS[setting]}")
            cols.append(aggregate(col, setting, "pass_at_k", k)["value"])
    for setting in ("eval", "train"):
        head.append(f"answer entropy (nats), {SETTING_LABELS[setting]}")
        cols.append(aggregate(col, setting, "answer_entropy")["value"])
    kl = {n: _ms([rec["trajectory"][-1]["train"].get("kl_base_policy") for _, _, rec in rs]) for n, rs in pol.items()}
    head.append("KL(base ‖ policy), T 1.0 (nats)")
    rows = []
    for n in names:
        cells = [LABELS.get(n, n)]
        for i, c in enumerate(cols):
            cells.append(_fmt(c[n], 1.0, 3) if "entropy" in head[i + 1] else _fmt(c[n]))
        cells.append(_fmt(kl[n], 1.0, 3))
        rows.append(cells)
    out["settings"] = markdown_table(head, rows)
    # rare-only / other puzzles (evaluation setting, and the rare strategy's mass at T 1)
    first = next(iter(col["bases"].values()))["final"]["eval"]
    if first.get("num_rare_only"):
        rows = []
        for n in names:
            cells = [LABELS.get(n, n)]
            for key in ("pass_at_k_rare_only", "pass_at_k_other"):
                for k in (1, 64, 1024):
                    cells.append(_fmt(aggregate(col, "eval", key, k)["value"][n]))
            cells.append(_fmt(aggregate(col, "eval_no_top_p", "pass_at_k_rare_only", 1024)["value"][n]))
            cells.append(_fmt(_ms([rec["final"]["train"]["strategy_mass_rare_only"].get("product_minus")
                                   for _, _, rec in pol[n]])))
            rows.append(cells)
        out["groups"] = markdown_table(
            ["policy", "rare-only pass@1", "rare-only pass@64", "rare-only pass@1024", "other pass@1",
             "other pass@64", "other pass@1024", "rare-only pass@1024, top-p 1.0",
             "rare-only a*b-c mass, T 1 (%)"], rows)
        out["groups_note"] = (f"{first['num_rare_only']} rare-only puzzles (solved only by `a*b-c`), "
                              f"{first['num_puzzles'] - first['num_rare_only']} other; T 0.6, top-p 0.95 unless "
                              "stated.")
    # per base (mean over that base's seeds)
    bases = list(col["bases"])
    if len(bases) > 1:
        rows = []
        for n in names:
            cells = [LABELS.get(n, n)]
            for b in bases:
                rs = [rec for bb, _, rec in pol[n] if bb == b]
                p1 = _ms([final_value(r, "eval", "pass_at_k", 1) for r in rs])
                pk = _ms([final_value(r, "eval", "pass_at_k", 1024) for r in rs])
                cells.append(f"{100 * p1[0]:.1f} / {100 * pk[0]:.1f}")
            rows.append(cells)
        out["per_base"] = markdown_table(["policy"] + [f"base {b}: pass@1 / pass@1024" for b in bases], rows)
    from rlvr_jax.testbed import frontier
    out["frontier"] = frontier.table(frontier_deltas(col), entropy_label="answer entropy (nats)")
    return out


def plot_pass_at_k(col: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("eval", "pass_at_k", "T 0.6, top-p 0.95 (the evaluation)"),
              ("eval_no_top_p", "pass_at_k", "T 0.6, top-p 1.0"),
              ("eval", "pass_at_k_rare_only", "rare-only puzzles, T 0.6, top-p 0.95")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (setting, key, title) in zip(axes, panels):
        for i, (name, rs) in enumerate(policies(col).items()):
            curves = np.array([rec["final"][setting][key] for _, _, rec in rs if rec["final"][setting][key]])
            if not len(curves):
                continue
            k = np.arange(1, curves.shape[1] + 1)
            m = 100 * curves.mean(0)
            ax.plot(k, m, color="k" if name == "base" else f"C{i % 10}", lw=2 if name == "base" else 1.3,
                    ls="--" if name == "base" else "-", label=LABELS.get(name, name))
            if len(curves) > 1:
                s = 100 * curves.std(0, ddof=1)
                ax.fill_between(k, m - s, m + s, color="k" if name == "base" else f"C{i % 10}", alpha=0.12)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("exact pass@k (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_trajectories(col: dict, path: str) -> None:
    """Row 1: against RL step; row 2: against KL(base || policy) at T 1 (mean over runs at each step)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("pass@1", "eval", "pass@1 (%)", 100), ("pass@1024", "eval", "pass@1024 (%), top-p 0.95", 100),
            ("pass@1024", "eval_no_top_p", "pass@1024 (%), top-p 1.0", 100),
            ("answer_entropy", "train", "answer entropy at T 1 (nats)", 1))
    fig, axes = plt.subplots(2, len(keys), figsize=(4 * len(keys), 7))
    for i, (name, rs) in enumerate(col["runs"].items()):
        steps, kl = _traj_array(rs, "train", "kl_base_policy")
        for j, (key, setting, title, scale) in enumerate(keys):
            _, v = _traj_array(rs, setting, key)
            m = scale * v.mean(0)
            for row, x in ((0, steps), (1, kl.mean(0))):
                ax = axes[row, j]
                ax.plot(x, m, marker="o", ms=2.5, color=f"C{i % 10}", label=LABELS.get(name, name))
                if row == 0 and len(rs) > 1:
                    s = scale * v.std(0, ddof=1)
                    ax.fill_between(x, m - s, m + s, color=f"C{i % 10}", alpha=0.1)
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("RL step" if row == 0 else "KL(base ‖ policy) over the answers, T 1 (nats)")
                ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _mean_tree(trees: list):
    """Leaf-wise mean (nan-aware) of equally shaped dicts of numbers."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: _mean_tree([t[k] for t in trees]) for k in first if all(k in t for t in trees)}
    vals = np.asarray([np.nan if v is None else v for v in trees], np.float64)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def mass_flow_section(col: dict, setting: str = "train") -> tuple[str, dict] | None:
    """The mass-flow table (:func:`rlvr_jax.testbed.massflow.mass_flow`) of every method's final policy against
    its own base at ``setting`` (default T 1, top-p 1.0: every answer has mass), one row per method: each
    number the mean over the method's (base, seed) runs. None when a run's probabilities are missing."""
    from rlvr_jax.testbed import massflow
    from rlvr_jax.testbed.exact import load_candidates

    cands, base_p = {}, {}
    for b, rec in col["bases"].items():
        root = rec.get("_root")
        if root is None or not os.path.exists(os.path.join(root, "exact", "base_probs.npz")):
            return None
        warm = os.path.dirname(rec["checkpoint"])
        cands[b] = load_candidates(warm, rec["final"]["eval"]["num_puzzles"])[1]
        base_p[b] = _load_probs(os.path.join(root, "exact", "base_probs.npz"))[0][setting]
    results, per_run = {}, {}
    for algo, rs in col["runs"].items():
        outs = []
        for b, seed, rec in rs:
            path = os.path.join(rec["_dir"], f"{algo}_probs.npz")
            if not os.path.exists(path):
                return None
            probs = _load_probs(path)
            r = massflow.mass_flow(base_p[b], probs[max(probs)][setting], cands[b])
            r.pop("per_puzzle", None)
            r.pop("by_bin", None)
            outs.append(r)
            per_run[f"{algo}/base{b}/seed{seed}"] = r
        results[LABELS.get(algo, algo)] = _mean_tree(outs)
    return massflow.mass_flow_table(results), {"mean": results, "runs": per_run}


def _load_probs(path: str):
    from rlvr_jax.testbed.exact_runs import load_probs
    return load_probs(path)


def write(out_dir: str, timings: dict | None = None) -> dict:
    """The report files of the module docstring into ``<out_dir>/report``; returns the summary dict."""
    from rlvr_jax.testbed import frontier

    col = collect(out_dir)
    rep = os.path.join(out_dir, "report")
    os.makedirs(rep, exist_ok=True)
    tab = tables(col)
    runs = {a: len(rs) for a, rs in col["runs"].items()}
    nb = len(col["bases"])
    lines = [f"# Exact evaluation ({nb} base{'s' if nb > 1 else ''} {list(col['bases'])}, runs per method "
             f"{runs}; mean ± std over every (base, seed) run, the base over bases)", "",
             "Every candidate answer's probability by teacher forcing (rlvr_jax.testbed.exact); pass@k = mean over "
             "puzzles of 1 - (1 - p_correct)^k, in %.", "",
             "## pass@k, T 0.6, top-p 0.95 (the evaluation's sampler)", "", tab["pass_at_k_eval"],
             "## pass@k, T 0.6, top-p 1.0", "", tab["pass_at_k_eval_no_top_p"],
             "## By sampling setting", "", tab["settings"]]
    if "groups" in tab:
        lines += ["## Rare-only and other puzzles", "", tab["groups_note"], "", tab["groups"]]
    if "per_base" in tab:
        lines += ["## Per base (mean over its seeds), T 0.6, top-p 0.95", "", tab["per_base"]]
    lines += ["## Change over each run's own base (points), T 0.6, top-p 0.95", "", tab["frontier"]]
    sp = spread(col)
    if sp:
        lines += ["## RL seeds against bases (points, T 0.6, top-p 0.95): pooled within-base RL-seed std and the "
                  "std over bases of each base's seed mean, for methods with >= 2 seeds on >= 2 bases", "",
                  spread_table(sp)]
    mf = mass_flow_section(col) if col["runs"] else None
    if mf is not None:
        lines += ["## Mass flow (final policy against its own base, T 1, top-p 1.0; mean over runs; "
                  "rlvr_jax.testbed.massflow)", "", mf[0]]
    if timings:
        lines += ["## Timing (s)", ""] + [f"- {k}: {v:.1f}" for k, v in timings.items()]
    with open(os.path.join(rep, "exact.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_pass_at_k(col, os.path.join(rep, "exact_pass_at_k.png"))
    if col["runs"]:
        plot_trajectories(col, os.path.join(rep, "trajectories.png"))
        frontier.plot(frontier_deltas(col), os.path.join(rep, "exact_frontier.png"))
    summary = {"bases": [b for b in col["bases"]], "runs": runs, "timings_s": timings or {},
               "frontier": frontier_deltas(col),
               "pass_at_k": {s: {n: {"mean": (100 * np.mean([r["final"][s]["pass_at_k"] for _, _, r in rs], 0)).tolist(),
                                     "std": (100 * np.std([r["final"][s]["pass_at_k"] for _, _, r in rs], 0,
                                                          ddof=1 if len(rs) > 1 else 0)).tolist()}
                                 for n, rs in policies(col).items()} for s in ("eval", "eval_no_top_p", "train")},
               "tables": tab, "spread": spread(col)}
    if mf is not None:
        summary["mass_flow"] = mf[1]
    with open(os.path.join(rep, "exact_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


# ----------------------------------------------------------------------------------------------- step size
def at_kl(kl: np.ndarray, values: np.ndarray, target: float) -> float:
    """``values`` linearly interpolated at KL ``target`` along a trajectory (``kl`` made non-decreasing by a
    running maximum, so the first time the run reaches ``target`` counts); nan beyond the trajectory's end."""
    k = np.maximum.accumulate(np.asarray(kl, np.float64))
    if target > k[-1] + 1e-12:
        return float("nan")
    return float(np.interp(target, k, np.asarray(values, np.float64)))


def stepsize(entries: list[tuple[str, str]], out: str) -> dict:
    """Experiments differing in lr (``entries``: ``(label, experiment dir)``): per method and lr the final
    KL(base || policy) and changes over the base, and the changes at the KL every lr of that method reaches
    (the smallest final mean KL): ``stepsize.md``, ``stepsize.png`` and ``stepsize.json`` in ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = {label: collect(d) for label, d in entries}
    first = next(iter(cols.values()))["runs"]
    methods = [a for a in first if all(a in c["runs"] for c in cols.values())]   # those every experiment ran
    keys = (("pass@1", "eval"), ("pass@1024", "eval"), ("pass@1024", "eval_no_top_p"))
    res = {}
    for algo in methods:
        curves = {}
        for label, c in cols.items():
            rs = c["runs"][algo]
            steps, kl = _traj_array(rs, "train", "kl_base_policy")
            base = {(s, k): np.mean([c["bases"][b]["trajectory"][0][s][k] for b, _, _ in rs]) for k, s in keys}
            curves[label] = {"steps": steps.tolist(), "kl": kl.mean(0).tolist(),
                             **{f"{k}/{s}": (_traj_array(rs, s, k)[1].mean(0) - base[(s, k)]).tolist()
                                for k, s in keys}}
        common = min(v["kl"][-1] for v in curves.values())
        for v in curves.values():
            v["at_common_kl"] = {f"{k}/{s}": at_kl(v["kl"], v[f"{k}/{s}"], common) for k, s in keys}
        res[algo] = {"common_kl": common, "lrs": curves}
    rows = []
    for algo, r in res.items():
        for label, v in r["lrs"].items():
            rows.append([LABELS.get(algo, algo), label, v["steps"][-1], f"{v['kl'][-1]:.3f}"]
                        + [f"{100 * v[f'{k}/{s}'][-1]:+.1f}" for k, s in keys]
                        + [f"{100 * v['at_common_kl'][f'{k}/{s}']:+.1f}" for k, s in keys])
    head = ["method", "lr", "steps", "final KL (nats)", "Δ pass@1", "Δ pass@1024", "Δ pass@1024 top-p 1.0",
            "at common KL: Δ pass@1", "Δ pass@1024", "Δ pass@1024 top-p 1.0"]
    os.makedirs(out, exist_ok=True)
    note = ", ".join(f"{LABELS.get(a, a)} {r['common_kl']:.3f}" for a, r in res.items())
    with open(os.path.join(out, "stepsize.md"), "w") as f:
        f.write("## Step size: change over the base (points, exact, T 0.6; mean over runs), at the end and at the "
                f"KL(base ‖ policy) every lr of the method reaches (common KL: {note})\n\n"
                + markdown_table(head, rows))
    fig, axes = plt.subplots(len(keys), len(methods), figsize=(4 * len(methods), 3.2 * len(keys)), squeeze=False)
    for j, algo in enumerate(methods):
        for i, (k, s) in enumerate(keys):
            ax = axes[i, j]
            for n, (label, v) in enumerate(res[algo]["lrs"].items()):
                ax.plot(v["kl"], 100 * np.asarray(v[f"{k}/{s}"]), marker="o", ms=3, color=f"C{n}", label=f"lr {label}")
            ax.axhline(0, color="grey", lw=0.8)
            ax.axvline(res[algo]["common_kl"], color="grey", lw=0.8, ls=":")
            ax.set_title(f"{LABELS.get(algo, algo)}: Δ {k}{' (top-p 1.0)' if s == 'eval_no_top_p' else ''}",
                         fontsize=9)
            ax.set_xlabel("KL(base ‖ policy), T 1 (nats)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "stepsize.png"), dpi=80)
    plt.close(fig)
    with open(os.path.join(out, "stepsize.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="an experiment directory (its report/ gets the exact files), "
                                                 "or with --stepsize the output directory")
    ap.add_argument("--stepsize", nargs="+", metavar="LABEL=DIR", help="experiments differing in lr")
    args = ap.parse_args(argv)
    if args.stepsize:
        entries = []
        for e in args.stepsize:
            if "=" not in e:
                ap.error(f"--stepsize entries are LABEL=DIR, got {e!r}")
            label, d = e.split("=", 1)
            entries.append((label, d))
        stepsize(entries, args.out)
        print(f"step size: {os.path.join(os.path.abspath(args.out), 'stepsize.md')}")
        return
    write(args.out)
    print(f"exact report: {os.path.join(os.path.abspath(args.out), 'report', 'exact.md')}")


if __name__ == "__main__":
    main()
