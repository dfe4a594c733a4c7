"""What each CLI wrote and its headline numbers, as a :class:`rlvr_jax.cli.summary.Summary`.

One function per CLI; each names the files of that CLI's output layout (the trainer's ``metrics.jsonl``,
``tensorboard/``, ``checkpoints/``, ``final_hf/``; the evaluator's ``summary.json`` and pass@k tables; the
testbed's ``report/``) and reads the numbers back from what was written or returned.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from rlvr_jax.cli.summary import Summary, shown


def _tensorboard(s: Summary, path: str) -> None:
    s.add("tensorboard", path, f"open: tensorboard --logdir {shown(path)}")


def _checkpoint_steps(directory: str) -> list[int]:
    try:
        return sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    except OSError:
        return []


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


TRAIN_HEADLINE = (("reward", "critic/score/mean"), ("correct", "train/correct_ratio"),
                  ("entropy", "actor/entropy"), ("response length", "response_length/mean"),
                  ("step s", "timing_s/step"))


def train_summary(cfg, steps_done: int, metrics: Mapping[str, Any], preempted: bool,
                  final_export: str | None) -> Summary:
    """The trainer's outputs under ``logging.out_dir`` (checkpoints may live under ``checkpoint.dir``)."""
    out = cfg.logging.out_dir
    what = "stopped" if preempted else "done"
    s = Summary(f"train {what}: step {steps_done}/{int(cfg.train.total_steps)} of {cfg.algo.name} in {shown(out)}")
    s.add("metrics", os.path.join(out, "metrics.jsonl"))
    _tensorboard(s, os.path.join(out, "tensorboard"))
    ckpt = cfg.checkpoint.dir or os.path.join(out, "checkpoints")
    steps = _checkpoint_steps(ckpt)
    s.add("checkpoints", ckpt, f"steps {', '.join(map(str, steps[-4:]))}" if steps else "")
    s.add("model", final_export, "Hugging Face format, for rlvr_jax.evaluate --config.checkpoint=...")
    s.add("config", os.path.join(out, "config.json"))
    parts = [f"{name} {_fmt(metrics[key])}" for name, key in TRAIN_HEADLINE if key in metrics]
    evals = [f"{k.split('/')[1]} {_fmt(v)}" for k, v in sorted(metrics.items())
             if k.startswith("eval/") and k.endswith("/greedy_accuracy")]
    if parts:
        s.numbers.append(f"step {steps_done}: " + ", ".join(parts))
    if evals:
        s.numbers.append("held-out greedy accuracy: " + ", ".join(evals))
    if preempted:
        s.numbers.append("rerun the same command to resume from the last checkpoint")
    return s


def eval_summary(out: str, summaries: Mapping[str, Mapping[str, Any]], compared: bool) -> Summary:
    """The evaluator's files in ``out`` and pass@1 / pass@n / greedy accuracy per dataset."""
    s = Summary(f"evaluate done: {len(summaries)} dataset(s) in {shown(out)}" if summaries
                else f"evaluate done: comparison in {shown(out)}")
    s.add("summary", os.path.join(out, "summary.json"))
    s.add("pass@k table", os.path.join(out, "pass_at_k.md"))
    s.add("pass@k csv", os.path.join(out, "pass_at_k.csv"))
    s.add("pass@k plot", os.path.join(out, "pass_at_k.png"))
    if compared:
        s.add("comparison", os.path.join(out, "compare.md"))
        s.add("comparison plot", os.path.join(out, "compare_pass_at_k.png"))
    for name, m in summaries.items():
        pk = m.get("pass_at_k", {})
        ks = sorted(pk, key=int)
        line = f"{name}: " + ", ".join(f"pass@{k} {float(pk[k]):.4f}" for k in ks[:1] + ks[-1:] if ks)
        if m.get("greedy_accuracy") is not None:
            line += f", greedy accuracy {float(m['greedy_accuracy']):.4f}"
        s.numbers.append(line)
    return s


def demo_summary(out: str, report_dir: str, title: str, warm_dir: str | None = None) -> Summary:
    """The testbed's report directory and pass@1 / pass@k(max) per policy from its ``summary.json``
    (``warm_dir``: the warm start's directory, default ``<out>/warmstart``)."""
    s = Summary(f"{title} in {shown(out)}")
    s.add("report", os.path.join(report_dir, "summary.md"))
    s.add("pass@k table", os.path.join(report_dir, "pass_at_k.md"))
    s.add("pass@k plot", os.path.join(report_dir, "pass_at_k.png"))
    s.add("curves", os.path.join(report_dir, "training_curves.png"))
    s.add("sweep plot", os.path.join(report_dir, "sweep.png"))
    s.add("base model", os.path.join(warm_dir or os.path.join(out, "warmstart"), "base_hf"))
    try:
        with open(os.path.join(report_dir, "summary.json")) as f:
            rep = json.load(f)
        kmax = rep["ks"][-1]
        cells = []
        for name, row in rep["heldout"].items():
            cells.append(f"{name} {100 * row['pass@1'][0]:.1f} / {100 * row[f'pass@{kmax}'][0]:.1f}")
        s.numbers.append(f"held-out pass@1 / pass@{kmax} (%): " + ", ".join(cells))
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        pass
    return s


def warmstart_summary(out: str, stats: Mapping[str, Any]) -> Summary:
    s = Summary(f"warm start done: {stats.get('num_params', '?')} parameters in {shown(out)}")
    s.add("model", stats.get("checkpoint"))
    s.add("data", os.path.join(out, "data"))
    s.add("stats", os.path.join(out, "warmstart.json"))
    ws = stats.get("warmstart_set") or {}
    if ws:
        s.numbers.append("on its own puzzles: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ws.items()))
    return s


def bench_summary(results: Mapping[str, Any], out: str | None) -> Summary:
    s = Summary(f"bench done: preset {results.get('preset')} on {results.get('device')}")
    s.add("results", out)
    for what in ("learner", "sampler"):
        r = results.get(what)
        if r and r.get("tokens_per_s") is not None:
            line = f"{what}: {_fmt(r['tokens_per_s'])} tokens/s"
            if r.get("mfu") is not None:
                line += f", MFU {_fmt(r['mfu'])}"
            s.numbers.append(line)
    if results.get("export"):
        s.numbers.append(f"export: {_fmt(results['export'].get('s_per_gb'))} s/GB")
    return s
