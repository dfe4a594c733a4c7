"""The trade-off frontier of a testbed study: per method, the change of pass@1 against the change of pass@k_max
over the base (same seed), on all held-out puzzles and on the rare-only ones.

Input: a report's ``summary.json`` (:func:`rlvr_jax.testbed.report.write_report`: every seed's evaluation of
the base and of each method, and their measured properties with the rare-only split). For method a and seed s,

    d1(a, s) = pass@1(a, s) - pass@1(base, s),      dK(a, s) = pass@K(a, s) - pass@K(base, s),   K = n,

reported as mean ± std over seeds (the base and the method are evaluated with the same evaluation seed).
Outputs ``frontier.png`` (two panels: all puzzles, rare-only puzzles) and ``frontier.md`` (the table) next to
the summary. Command: ``python -m rlvr_jax.testbed.frontier --report DIR/report``.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from rlvr_jax.evaluation.summary import markdown_table
from rlvr_jax.testbed.report import LABELS

REMEDIES = ("nsr_warmup", "grpo_unlikely", "grpo_gated", "nsr_gated", "simko")


def _ms(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], float)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else (float("nan"), 0.0)


def deltas(summary: dict) -> dict:
    """``{method: {"d1", "dK", "rare_d1", "rare_dK", "pass@1", "pass@K", "rare_pass@1", "rare_pass@K",
    "token_entropy"}: (mean, std)}`` in points (x 100) except entropy; ``"K"`` the largest k."""
    ks = summary["ks"]
    kmax = str(ks[-1])
    per_seed = summary["per_seed"]
    props = (summary.get("properties") or {}).get("policies", {})
    seeds = [str(s) for s in summary["config"]["seeds"]]
    base = per_seed["base"]
    out = {"K": int(kmax)}
    for name, evs in per_seed.items():
        row = {}
        for key, k in (("1", "1"), ("K", kmax)):
            row[f"pass@{key}"] = _ms([100 * e["pass_at_k"][k] for e in evs])
            row[f"d{key}"] = _ms([100 * (e["pass_at_k"][k] - b["pass_at_k"][k]) for e, b in zip(evs, base)])
            if props:
                mine = [props[name][s].get("rare_only") for s in seeds]
                ref = [props["base"][s].get("rare_only") for s in seeds]
                if all(mine) and all(ref):
                    row[f"rare_pass@{key}"] = _ms([100 * m[f"pass@{k}"] for m in mine])
                    row[f"rare_d{key}"] = _ms([100 * (m[f"pass@{k}"] - r[f"pass@{k}"]) for m, r in zip(mine, ref)])
        row["token_entropy"] = _ms([e.get("token_entropy") for e in evs])
        out[name] = row
    return out


def _fmt(ms, signed=True, digits=1) -> str:
    m, s = ms
    return f"{m:+.{digits}f} ± {s:.{digits}f}" if signed else f"{m:.{digits}f} ± {s:.{digits}f}"


def table(d: dict, entropy_label: str = "token entropy") -> str:
    """The markdown table of :func:`deltas` (base first, then the methods in the summary's order); the last
    column is ``row["token_entropy"]`` under ``entropy_label`` (the exact report puts the answer entropy there)."""
    K = d["K"]
    rare = any("rare_d1" in r for n, r in d.items() if n != "K")
    head = ["method", "pass@1 (%)", f"pass@{K} (%)", "Δ pass@1", f"Δ pass@{K}"]
    if rare:
        head += ["rare-only pass@1", f"rare-only pass@{K}", "rare-only Δ pass@1", f"rare-only Δ pass@{K}"]
    head.append(entropy_label)
    rows = []
    for name, r in d.items():
        if name == "K":
            continue
        cells = [LABELS.get(name, name) + (" (remedy)" if name in REMEDIES else ""), _fmt(r["pass@1"], False),
                 _fmt(r["pass@K"], False), "" if name == "base" else _fmt(r["d1"]),
                 "" if name == "base" else _fmt(r["dK"])]
        if rare:
            cells += [_fmt(r["rare_pass@1"], False), _fmt(r["rare_pass@K"], False),
                      "" if name == "base" else _fmt(r["rare_d1"]), "" if name == "base" else _fmt(r["rare_dK"])]
        cells.append(_fmt(r["token_entropy"], False, 3))
        rows.append(cells)
    return markdown_table(head, rows)


def plot(d: dict, path: str) -> None:
    """Two panels (all puzzles, rare-only puzzles): Δ pass@1 (x) against Δ pass@K (y), error bars = std over
    seeds; remedies as squares, the paper's methods as circles; the base at the origin."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = d["K"]
    panels = [("d1", "dK", "all held-out puzzles")]
    if any("rare_d1" in r for n, r in d.items() if n != "K"):
        panels.append(("rare_d1", "rare_dK", "rare-only puzzles"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, (kx, ky, title) in zip(axes[0], panels):
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        for i, (name, r) in enumerate((n, r) for n, r in d.items() if n not in ("K", "base")):
            (x, sx), (y, sy) = r[kx], r[ky]
            ax.errorbar(x, y, xerr=sx, yerr=sy, fmt="s" if name in REMEDIES else "o", ms=7, capsize=3,
                        color=f"C{i % 10}", label=LABELS.get(name, name))
            ax.annotate(LABELS.get(name, name), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.plot(0, 0, "k*", ms=12, label="base")
        ax.set_xlabel("Δ pass@1 over the base (points)")
        ax.set_ylabel(f"Δ pass@{K} over the base (points)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report_dir: str) -> dict:
    """``frontier.md`` and ``frontier.png`` in ``report_dir`` from its ``summary.json``; returns the deltas."""
    with open(os.path.join(report_dir, "summary.json")) as f:
        d = deltas(json.load(f))
    with open(os.path.join(report_dir, "frontier.md"), "w") as f:
        f.write(f"## Change over the base, mean ± std over seeds (points; pass@{d['K']} = largest k)\n\n"
                f"{table(d)}")
    plot(d, os.path.join(report_dir, "frontier.png"))
    return d


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", required=True, help="a testbed report directory holding summary.json")
    args = ap.parse_args(argv)
    write(args.report)
    print(f"frontier: {os.path.join(os.path.abspath(args.report), 'frontier.md')}")


if __name__ == "__main__":
    main()
