"""pass@k curves (log2 k axis), one panel per dataset, one line per checkpoint."""
from __future__ import annotations

import math
from typing import Mapping


def plot_pass_at_k(curves: Mapping[str, Mapping[str, Mapping[str, float]]], path, title: str = "") -> None:
    """Writes a PNG. ``curves[label][dataset][k] = pass@k`` (k as str or int)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    datasets = sorted({d for per in curves.values() for d in per})
    if not datasets:
        raise ValueError("plot_pass_at_k: nothing to plot")
    cols = min(3, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, ds in zip(axes.flat, datasets):
        all_ks = set()
        for label, per in curves.items():
            if ds not in per:
                continue
            pts = sorted((int(k), v) for k, v in per[ds].items())
            all_ks.update(k for k, _ in pts)
            ax.plot([k for k, _ in pts], [100 * v for _, v in pts], marker="o", ms=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(all_ks))
        ax.set_xticklabels([str(k) for k in sorted(all_ks)], fontsize=7)
        ax.set_title(ds)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
