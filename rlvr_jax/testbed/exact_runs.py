r"""Exact evaluation of a testbed experiment's policies, and their trajectories (:mod:`rlvr_jax.testbed.exact`).

For one base (one warm start) and every RL run on it:

* the base: :func:`rlvr_jax.testbed.exact.evaluate_exact` at every setting of :data:`exact.SETTINGS` (the
  evaluation's T = 0.6 with top-p 0.95, the same T with top-p 1.0, the training T = 1): ``<out>/exact/base.json``
  (the metrics) and ``base_probs.npz`` (every candidate's probability per setting);
* a run: its orbax checkpoints (the trainer saves one every ``checkpoint.every`` steps and at the end,
  :func:`rlvr_jax.testbed.experiment.rl_config`) are loaded one by one
  (:func:`rlvr_jax.trainer.checkpointing.load_policy_checkpoint`) and evaluated exactly: per step a
  :func:`trajectory_point` (pass@1 / 16 / 256 / 1024, answer entropy, correct and remaining mass per setting,
  the rare-only puzzles' pass@1 / pass@1024, and KL(base || policy) over the answer set at the two untruncated
  settings); the last checkpoint's full metrics (pass@k for k = 1..1024, strategy masses) are ``final``.
  ``<seed dir>/exact/<algo>.json`` and ``<algo>_probs.npz`` (the probabilities at every evaluated step).

Step 0 of every trajectory is the base itself (KL 0). Nothing is sampled: the numbers are functions of the
weights only, so they repeat bit for bit for the same checkpoints on one machine.
"""
from __future__ import annotations

import json
import os

import numpy as np

from rlvr_jax.testbed import exact as E

TRAJ_KS = (1, 16, 256, 1024)
KL_SETTINGS = ("train", "eval_no_top_p")   # untruncated: KL(base || policy) is finite there


def trajectory_point(metrics: dict, probs: dict, base_probs: dict, cands: E.CandidateSet) -> dict:
    """The per-step record of a trajectory from :func:`exact.policy_metrics` output ``metrics`` and the
    candidate probabilities of the policy (``probs``) and its base (``base_probs``), per setting."""
    out = {}
    for name, m in metrics.items():
        pk = m["pass_at_k"]
        row = {f"pass@{k}": pk[k - 1] for k in TRAJ_KS if k <= len(pk)}
        row.update(answer_entropy=m["answer_entropy"], correct_mass=m["correct_mass"],
                   remaining_mass=m["remaining_mass"])
        if m["pass_at_k_rare_only"]:
            row["rare_only_pass@1"] = m["pass_at_k_rare_only"][0]
            row[f"rare_only_pass@{len(pk)}"] = m["pass_at_k_rare_only"][-1]
        if name in KL_SETTINGS and name in base_probs:
            row["kl_base_policy"] = E.kl_base_policy(base_probs[name], probs[name], cands)
        out[name] = row
    return out


def _save_probs(path: str, probs_by_step: dict[int, dict[str, np.ndarray]]) -> None:
    np.savez_compressed(path, **{f"{name}/{step}": p for step, pr in probs_by_step.items() for name, p in pr.items()})


def _write(out_dir: str, name: str, rec: dict, probs_by_step: dict[int, dict[str, np.ndarray]]) -> None:
    """``<out_dir>/exact/<name>.json`` (the record) and ``<name>_probs.npz`` (the probabilities per step)."""
    d = os.path.join(out_dir, "exact")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.json"), "w") as f:
        json.dump(rec, f)
    _save_probs(os.path.join(d, f"{name}_probs.npz"), probs_by_step)


def load_probs(path: str) -> dict[int, dict[str, np.ndarray]]:
    """``{step: {setting: [R] probabilities}}`` from a ``*_probs.npz`` written here."""
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            name, step = key.rsplit("/", 1)
            out.setdefault(int(step), {})[name] = z[key]
    return out


def evaluate_base(base_hf: str, cands: E.CandidateSet, tokenizer, out_dir: str) -> tuple[dict, dict]:
    """Exact metrics and probabilities of the base checkpoint (``<out_dir>/exact/base.json`` and
    ``base_probs.npz``); returns ``(record, probs)``."""
    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.models import load_hf

    model, _ = load_hf(base_hf, dtype="float32")
    metrics, probs = E.evaluate_exact(model, cands, stop_token_ids(tokenizer), pad_id=int(tokenizer.pad_token_id))
    rec = {"checkpoint": base_hf, "final": metrics, "steps": [0],
           "trajectory": [dict(trajectory_point(metrics, probs, probs, cands), step=0)]}
    _write(out_dir, "base", rec, {0: probs})
    return rec, probs


def evaluate_run(run_dir: str, algo: str, cands: E.CandidateSet, tokenizer, base_rec: dict, base_probs: dict,
                 out_dir: str) -> dict:
    """Every checkpoint of the run in ``run_dir`` evaluated exactly (module docstring); writes
    ``<out_dir>/exact/<algo>.json`` and ``<algo>_probs.npz`` and returns the record."""
    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.trainer.checkpointing import Checkpointer, load_policy_checkpoint

    ckdir = os.path.join(run_dir, "checkpoints")
    ck = Checkpointer(ckdir)
    try:
        steps = ck.all_steps()
    finally:
        ck.close()
    if not steps:
        raise FileNotFoundError(f"evaluate_run: no checkpoint in {ckdir}")
    stops = stop_token_ids(tokenizer)
    traj = [dict(base_rec["trajectory"][0])]
    probs_by_step = {0: base_probs}
    final = None
    for step in sorted(steps):
        model, _, _ = load_policy_checkpoint(ckdir, step)
        metrics, probs = E.evaluate_exact(model, cands, stops, pad_id=int(tokenizer.pad_token_id))
        traj.append(dict(trajectory_point(metrics, probs, base_probs, cands), step=int(step)))
        probs_by_step[int(step)] = probs
        final = metrics
    rec = {"algo": algo, "run_dir": run_dir, "steps": [t["step"] for t in traj], "trajectory": traj,
           "final": final}
    _write(out_dir, algo, rec, probs_by_step)
    return rec
