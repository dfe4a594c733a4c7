r"""The testbed experiment: PSR, NSR, W-REINFORCE (lambda = 0.1) and GRPO from one warm-started base.

Pipeline (``run_experiment``):

1. the base checkpoint and the disjoint puzzle sets (:mod:`rlvr_jax.testbed.warmstart`; reused when the
   warm-start directory is complete);
2. for each algorithm, the real trainer (:func:`rlvr_jax.train.run`) on the RL puzzles with the in-process
   JAX engine, config :func:`rl_config` (the papers' preset for the algorithm from
   :mod:`rlvr_jax.config.presets`, with testbed sizes), exporting ``final_hf``;
3. the evaluator (:func:`rlvr_jax.evaluation.runner.evaluate`) with ``n`` samples per held-out puzzle
   (k = 1, 2, 4, ..., n) for the base and every trained policy (``<out>/seed<s>/eval/<policy>``);
4. the report directory::

       report/pass_at_k.md          pass@k table (rows k, one column per policy) + greedy / entropy metrics
       report/pass_at_k.png         pass@k curves of base and every algorithm in one plot (mean over seeds)
       report/training_curves.png   token entropy, correct ratio, fully-solved ratio and held-out greedy
                                    accuracy over RL steps (from each run's metrics.jsonl)
       report/summary.md / .json    the headline numbers and the questions of the NSR paper, answered
                                    from this run's numbers

Several seeds (``seeds=(0, 1, 2)``) repeat steps 2-3 with ``train.seed`` and the evaluation seed changed
(same base model) and the summary reports mean and standard deviation over seeds.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import time

import numpy as np

from rlvr_jax.testbed import warmstart as ws

ALGORITHMS = ("psr", "nsr", "w_reinforce", "grpo")
LABELS = {"base": "base", "psr": "PSR", "nsr": "NSR", "w_reinforce": "W-REINFORCE", "grpo": "GRPO"}
CURVES = (("train/rollout_entropy", "token entropy of rollouts (nats)"),
          ("train/correct_ratio", "correct ratio (train rollouts)"),
          ("train/fully_solved_ratio", "fully-solved prompt ratio"),
          ("eval/*/greedy_accuracy", "held-out greedy accuracy (trainer eval)"))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    warm_dir: str = "runs/testbed/warmstart"
    out_dir: str = "runs/testbed"
    algorithms: tuple[str, ...] = ALGORITHMS
    seeds: tuple[int, ...] = (0,)
    total_steps: int = 40
    lr: float = 2e-4
    prompt_batch_size: int = 32
    rollout_n: int = 8
    num_mini_batches: int = 2
    eval_n: int = 64
    eval_problems: int = 128   # held-out puzzles evaluated (all of them by default)
    eval_temperature: float = 1.0
    eval_every: int = 10
    warmstart: ws.WarmStartConfig = ws.WarmStartConfig()

    @classmethod
    def quick(cls, **kw) -> "ExperimentConfig":
        """The CI mode: fewer steps, a smaller evaluation (still n=64, k up to 64)."""
        base = dict(total_steps=8, eval_problems=24, eval_every=4,
                    warmstart=ws.WarmStartConfig(steps=120))
        base.update(kw)
        return cls(**base)


def rl_config(algo: str, warm_dir: str, out_dir: str, *, seed: int = 0, total_steps: int = 40, lr: float = 2e-4,
              prompt_batch_size: int = 32, rollout_n: int = 8, num_mini_batches: int = 2, eval_every: int = 10,
              eval_n: int = 64):
    """The trainer config of one testbed run: the base config with the papers' ``algo`` preset
    (:func:`rlvr_jax.config.presets.set_algorithm`) and testbed sizes (tiny model, short answers)."""
    from rlvr_jax.config import get_base_config
    from rlvr_jax.config.presets import set_algorithm

    c = set_algorithm(get_base_config(), algo)
    base = os.path.join(warm_dir, ws.BASE_DIR)
    data = os.path.join(warm_dir, ws.DATA_DIR)
    c.model.hf_path = base
    c.model.tokenizer_path = base
    c.model.dtype = "float32"
    c.model.logprob_chunk_size = 32
    c.data.train = os.path.join(data, "rl.jsonl")
    c.data.template = "plain"
    c.data.max_prompt_len = 32
    c.data.grade_workers = 0          # in-process grading: the scorer is cheap, no worker start-up
    c.rollout.n = rollout_n
    c.rollout.max_new_tokens = 12     # answers are "\boxed{a*b+c}" + EOS = 8 tokens
    c.train.seed = seed
    c.train.total_steps = total_steps
    c.train.prompt_batch_size = prompt_batch_size
    c.train.num_mini_batches = num_mini_batches  # 2 updates per step, the second off-policy (paper: 4)
    c.train.micro_batch_size = prompt_batch_size * rollout_n // num_mini_batches
    c.train.length_bucket = 16
    c.optim.lr = lr
    c.checkpoint.every = 10 ** 6      # one checkpoint, at the end
    c.checkpoint.keep = 1
    c.checkpoint.resume = False
    c.logging.out_dir = out_dir
    c.logging.tensorboard = False
    c.logging.progress = False
    c.logging.eval_every = eval_every
    c.logging.eval_n = eval_n
    c.logging.eval_datasets = (os.path.join(data, "heldout.jsonl"),)
    return c


def _eval_config(cfg: ExperimentConfig, seed: int):
    from rlvr_jax.evaluation.config import EvalConfig

    return EvalConfig(n=cfg.eval_n, temperature=cfg.eval_temperature, top_p=1.0, top_k=-1, max_new_tokens=12,
                      seed=seed, template="plain", greedy=True, max_problems=cfg.eval_problems,
                      prompt_batch_size=max(1, 256 // cfg.eval_n), grade_workers=0)


def evaluate_checkpoint(checkpoint: str, tokenizer, heldout, cfg: ExperimentConfig, out_dir: str, seed: int,
                        pool) -> dict:
    """pass@k (and greedy accuracy, answer / token entropy) of one HF checkpoint on the held-out puzzles."""
    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.evaluation.runner import evaluate, make_model_token_entropy_fn
    from rlvr_jax.models import load_hf
    from rlvr_jax.rollout.jax_sampler import JaxSampler

    model, _ = load_hf(checkpoint, dtype="float32")
    pad = int(tokenizer.pad_token_id)
    ecfg = _eval_config(cfg, seed)
    engine = JaxSampler(model, pad_id=pad, eos_token_ids=stop_token_ids(tokenizer), max_batch_size=256,
                        max_new_tokens_limit=ecfg.max_new_tokens)
    ent = make_model_token_entropy_fn(model, pad_id=pad, batch_size=256, length_bucket=32, chunk_size=32)
    with engine:
        summary = evaluate(engine, tokenizer, {"heldout": heldout}, ecfg, out_dir, ent, pool=pool,
                           progress=False, label=os.path.basename(out_dir))
    return summary["heldout"]


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


def aggregate(evals: dict[str, list[dict]], ks) -> dict:
    """``{policy: {"pass@k": (mean, std), ..., metric: (mean, std)}}`` over seeds."""
    out = {}
    for name, per_seed in evals.items():
        row = {f"pass@{k}": _mean_std([s["pass_at_k"][str(k)] for s in per_seed]) for k in ks}
        for key in ("greedy_accuracy", "mean_accuracy", "answer_entropy", "token_entropy"):
            row[key] = _mean_std([s.get(key) for s in per_seed])
        out[name] = row
    return out


def write_report(report_dir: str, agg: dict, runs: dict, ks, cfg: ExperimentConfig, timings: dict,
                 warm_stats: dict) -> dict:
    """pass_at_k.md / .png (mean over seeds), training_curves.png, summary.md and summary.json."""
    from rlvr_jax.evaluation.plots import plot_pass_at_k

    os.makedirs(report_dir, exist_ok=True)
    names = list(agg)
    header = "| k | " + " | ".join(LABELS.get(n, n) for n in names) + " |\n|---|" + "---|" * len(names) + "\n"
    table = header + "".join(f"| {k} | " + " | ".join(_fmt(*agg[n][f"pass@{k}"]) for n in names) + " |\n"
                             for k in ks)
    extra_keys = (("greedy_accuracy", True), ("mean_accuracy", True), ("answer_entropy", False),
                  ("token_entropy", False))
    extra = ("| metric | " + " | ".join(LABELS.get(n, n) for n in names) + " |\n|---|" + "---|" * len(names)
             + "\n" + "".join(f"| {key}{' (%)' if pct else ''} | " + " | ".join(_fmt(*agg[n][key], pct=pct)
                                                                                  for n in names) + " |\n"
                              for key, pct in extra_keys))
    seeds_note = f"{len(cfg.seeds)} seed(s) {list(cfg.seeds)}, mean ± std" if len(cfg.seeds) > 1 else \
        f"seed {cfg.seeds[0]}"
    with open(os.path.join(report_dir, "pass_at_k.md"), "w") as f:
        f.write(f"## pass@k (%) on {cfg.eval_problems} held-out puzzles, n={cfg.eval_n}, T={cfg.eval_temperature} "
                f"({seeds_note})\n\n{table}\n## other metrics\n\n{extra}")
    plot_training_curves(runs, os.path.join(report_dir, "training_curves.png"))
    plot_pass_at_k({LABELS.get(n, n): {f"held-out, {seeds_note}": {k: agg[n][f"pass@{k}"][0] for k in ks}}
                    for n in names}, os.path.join(report_dir, "pass_at_k.png"))

    kmax = ks[-1]
    final_train = {a: {key: _mean_std([metric(rows[-1], key) for rows in seeds]) for key, _ in CURVES}
                   for a, seeds in runs.items()}
    lines = [f"# Testbed report ({seeds_note})", "",
             f"Base: warm-started tiny Qwen3 ({warm_stats.get('num_params', '?')} parameters); RL: "
             f"{cfg.total_steps} steps x {cfg.prompt_batch_size} prompts x {cfg.rollout_n} rollouts, "
             f"lr {cfg.lr}; evaluation: {cfg.eval_problems} held-out puzzles, n={cfg.eval_n}, "
             f"T={cfg.eval_temperature}.", "", table, "", extra, "",
             "## What happened (from the numbers above)", ""]
    b = agg["base"]
    for a in [x for x in names if x != "base"]:
        r = agg[a]
        d1 = 100 * (r["pass@1"][0] - b["pass@1"][0])
        dk = 100 * (r[f"pass@{kmax}"][0] - b[f"pass@{kmax}"][0])
        de = r["token_entropy"][0] - b["token_entropy"][0]
        lines.append(f"- **{LABELS.get(a, a)}**: pass@1 {d1:+.1f} points, pass@{kmax} {dk:+.1f} points vs the "
                     f"base; token entropy {b['token_entropy'][0]:.3f} -> {r['token_entropy'][0]:.3f} "
                     f"({de:+.3f}); answer entropy {b['answer_entropy'][0]:.3f} -> {r['answer_entropy'][0]:.3f}; "
                     f"last-step train correct ratio {100 * final_train[a]['train/correct_ratio'][0]:.1f}%.")
    lines += ["", "## Timing (s)", ""] + [f"- {k}: {v:.1f}" for k, v in timings.items()]
    with open(os.path.join(report_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary = {"config": dataclasses.asdict(cfg), "ks": list(ks), "heldout": agg, "final_train": final_train,
               "timings_s": timings, "warmstart": {k: warm_stats.get(k) for k in
                                                   ("num_params", "heldout", "warmstart_set", "total_seconds")}}
    with open(os.path.join(report_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def run_experiment(cfg: ExperimentConfig, verbose: bool = True) -> dict:
    """Runs the whole pipeline (module docstring) and returns the summary dict. A complete warm start already in
    ``cfg.warm_dir`` is reused as it is (``cfg.warmstart`` applies only when one is made)."""
    from transformers import AutoTokenizer

    from rlvr_jax.data import load_file
    from rlvr_jax.evaluation.config import default_ks
    from rlvr_jax.rewards import GraderPool
    from rlvr_jax.train import run

    def log(msg):
        if verbose:
            print(f"[testbed] {msg}", flush=True)

    unknown = [a for a in cfg.algorithms if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown testbed algorithm(s) {unknown}; expected a subset of {ALGORITHMS}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if ws.is_complete(cfg.warm_dir):
        log(f"reusing the warm start in {cfg.warm_dir}")
        with open(os.path.join(cfg.warm_dir, "warmstart.json")) as f:
            warm_stats = json.load(f)
    else:
        log(f"warm start -> {cfg.warm_dir}")
        warm_stats = ws.warm_start(cfg.warm_dir, cfg.warmstart, verbose=verbose)
    timings["warm_start"] = time.perf_counter() - t0

    base = os.path.join(cfg.warm_dir, ws.BASE_DIR)
    tokenizer = AutoTokenizer.from_pretrained(base)
    heldout = load_file(os.path.join(cfg.warm_dir, ws.DATA_DIR, "heldout.jsonl"), "heldout")
    ks = default_ks(cfg.eval_n)
    evals: dict[str, list[dict]] = {"base": []}
    runs: dict[str, list[list[dict]]] = {}
    with GraderPool(0) as pool:
        for seed in cfg.seeds:
            sdir = os.path.join(cfg.out_dir, f"seed{seed}")
            t = time.perf_counter()
            evals["base"].append(evaluate_checkpoint(base, tokenizer, heldout, cfg, os.path.join(sdir, "eval", "base"),
                                                     seed, pool))
            timings[f"seed{seed}/eval_base"] = time.perf_counter() - t
            log(f"seed {seed} base: pass@1 {evals['base'][-1]['pass_at_k']['1']:.3f} "
                f"pass@{ks[-1]} {evals['base'][-1]['pass_at_k'][str(ks[-1])]:.3f}")
            for algo in cfg.algorithms:
                rdir = os.path.join(sdir, algo)
                c = rl_config(algo, cfg.warm_dir, rdir, seed=seed, total_steps=cfg.total_steps, lr=cfg.lr,
                              prompt_batch_size=cfg.prompt_batch_size, rollout_n=cfg.rollout_n,
                              num_mini_batches=cfg.num_mini_batches, eval_every=cfg.eval_every,
                              eval_n=cfg.eval_problems)
                t = time.perf_counter()
                res = run(c, tokenizer=tokenizer)
                timings[f"seed{seed}/train_{algo}"] = time.perf_counter() - t
                runs.setdefault(algo, []).append(read_metrics(os.path.join(rdir, "metrics.jsonl")))
                t = time.perf_counter()
                evals.setdefault(algo, []).append(evaluate_checkpoint(
                    res.final_export, tokenizer, heldout, cfg, os.path.join(sdir, "eval", algo), seed, pool))
                timings[f"seed{seed}/eval_{algo}"] = time.perf_counter() - t
                e = evals[algo][-1]
                log(f"seed {seed} {algo}: pass@1 {e['pass_at_k']['1']:.3f} pass@{ks[-1]} "
                    f"{e['pass_at_k'][str(ks[-1])]:.3f} token entropy {e['token_entropy']:.3f} "
                    f"(train {timings[f'seed{seed}/train_{algo}']:.0f}s)")
    report = os.path.join(cfg.out_dir, "report")
    timings["total"] = time.perf_counter() - t0
    summary = write_report(report, aggregate(evals, ks), runs, ks, cfg, timings, warm_stats)
    log(f"report: {os.path.abspath(report)} ({timings['total']:.0f}s)")
    return summary
