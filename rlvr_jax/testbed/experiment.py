r"""The testbed experiment: PSR, NSR, W-REINFORCE (lambda = 0.1), GRPO and GRPO-N from one warm-started base.

Pipeline (``run_experiment``):

1. the base checkpoint and the disjoint puzzle sets (:mod:`rlvr_jax.testbed.warmstart`; reused when the
   warm-start directory is complete);
2. for each algorithm, the real trainer (:func:`rlvr_jax.train.run`) on the RL puzzles with the in-process
   JAX engine, config :func:`rl_config` (the papers' preset for the algorithm from
   :mod:`rlvr_jax.config.presets`, with testbed sizes), exporting ``final_hf``;
3. the evaluator (:func:`rlvr_jax.evaluation.runner.evaluate`) with ``n`` samples per held-out puzzle
   (k = 1, 2, 4, ..., n) for the base and every trained policy (``<out>/seed<s>/eval/<policy>``);
4. the report directory (:mod:`rlvr_jax.testbed.report`).

Several seeds (``seeds=(0, 1, 2)``) repeat steps 2-3 with ``train.seed`` and the evaluation seed changed
(same base model) and the report gives mean and standard deviation over seeds, and every seed.

Exact evaluation (``exact_eval``, :mod:`rlvr_jax.testbed.exact_runs`): the base and every run's checkpoints
(every ``traj_every`` steps and the last) get every candidate answer's probability by teacher forcing, so
pass@k to k = 1024, answer entropy and KL(base || policy) are known without sampling noise, along training
too; ``sampled_eval`` keeps (or skips) the sampling evaluator of step 3.

Bases as seeds (``bases=(0, 1, 2)``): each base seed b draws its own warm start (``warmstart.seed = b``, the
puzzle split kept: ``warmstart.split_seed``) into ``<out>/base<b>/warmstart`` and the whole pipeline runs on it
under ``<out>/base<b>`` (its RL seeds inside); ``<out>/report`` then aggregates the exact results over every
(base, seed) run (:mod:`rlvr_jax.testbed.exact_report`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from rlvr_jax.testbed import report as R
from rlvr_jax.testbed import warmstart as ws

ALGORITHMS = ("psr", "nsr", "w_reinforce", "grpo", "grpo_n")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One testbed experiment. RL sizes (see docs/testbed.md for why): 32 prompts x 8 rollouts, 2 mini-batches
    (the paper: 4), AdamW lr ``lr`` (the paper's 1e-6 is for 1.5-8B models; a 0.1M-parameter model trained from
    a warm start at lr 5e-3 needs a step size about that of its warm-start tail to move in 40 steps). The
    evaluation samples as the NSR paper does (T = 0.6, top-p 0.95), n = ``eval_n``."""

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
    eval_temperature: float = 0.6
    eval_top_p: float = 0.95
    eval_every: int = 10
    bases: tuple[int, ...] = ()      # warm-start seeds, one base each under <out>/base<b>; () = the one in warm_dir
    sampled_eval: bool = True        # the sampling evaluator (n = eval_n) on the base and every trained policy
    exact_eval: bool = True          # exact answer probabilities of the base and every checkpoint (exact_runs)
    traj_every: int = 10             # RL steps between checkpoints evaluated exactly (the trajectory); 0: last only
    warmstart: ws.WarmStartConfig = ws.WarmStartConfig()

    def __post_init__(self):
        from rlvr_jax.config import presets  # any preset trains here, the remedies and schedules included
        known = tuple(presets.ALGORITHMS) + tuple(presets.SCHEDULES)
        unknown = [a for a in self.algorithms if a not in known]
        if unknown or not self.algorithms:
            raise ValueError(f"ExperimentConfig.algorithms must be a non-empty subset of {known}, got "
                             f"{self.algorithms}")
        if not self.seeds:
            raise ValueError("ExperimentConfig.seeds must name at least one seed")
        if self.eval_n < 1 or self.eval_problems < 1 or self.total_steps < 1:
            raise ValueError(f"ExperimentConfig.eval_n, eval_problems, total_steps must be >= 1, got "
                             f"{self.eval_n}, {self.eval_problems}, {self.total_steps}")
        for name, ok, rule in (("lr", self.lr > 0, "> 0"), ("eval_temperature", self.eval_temperature > 0, "> 0"),
                               ("eval_top_p", 0 < self.eval_top_p <= 1, "in (0, 1]"),
                               ("prompt_batch_size", self.prompt_batch_size >= 1, ">= 1"),
                               ("rollout_n", self.rollout_n >= 1, ">= 1"),
                               ("num_mini_batches", self.num_mini_batches >= 1, ">= 1")):
            if not ok:
                raise ValueError(f"ExperimentConfig.{name} must be {rule}, got {getattr(self, name)}")
        if self.traj_every < 0:
            raise ValueError(f"ExperimentConfig.traj_every must be >= 0, got {self.traj_every}")
        if len(set(self.bases)) != len(self.bases) or any(int(b) < 0 for b in self.bases):
            raise ValueError(f"ExperimentConfig.bases must be distinct seeds >= 0, got {self.bases}")
        if not (self.sampled_eval or self.exact_eval):
            raise ValueError("ExperimentConfig.sampled_eval and exact_eval are both off: nothing would be evaluated")
        if (self.prompt_batch_size * self.rollout_n) % self.num_mini_batches:
            raise ValueError(f"ExperimentConfig.num_mini_batches {self.num_mini_batches} must divide "
                             f"prompt_batch_size x rollout_n = {self.prompt_batch_size * self.rollout_n}")

    @classmethod
    def quick(cls, **kw) -> "ExperimentConfig":
        """The CI mode: fewer steps, a smaller evaluation (still n=64, k up to 64)."""
        base = dict(total_steps=8, eval_problems=24, eval_every=4, traj_every=4,
                    warmstart=dataclasses.replace(ws.WarmStartConfig(), steps=150))
        base.update(kw)
        return cls(**base)


def rl_config(algo: str, warm_dir: str, out_dir: str, exp: ExperimentConfig = ExperimentConfig(), seed: int = 0):
    """The trainer config of one testbed run: the base config with the papers' ``algo`` preset
    (:func:`rlvr_jax.config.presets.set_algorithm`) and the testbed sizes of ``exp`` (tiny model, short
    answers)."""
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
    c.rollout.n = exp.rollout_n
    c.rollout.max_new_tokens = ws.max_new_tokens(exp.warmstart)
    c.train.seed = seed
    c.train.total_steps = exp.total_steps
    c.train.prompt_batch_size = exp.prompt_batch_size
    c.train.num_mini_batches = exp.num_mini_batches  # 2 updates per step, the second off-policy (paper: 4)
    c.train.micro_batch_size = exp.prompt_batch_size * exp.rollout_n // exp.num_mini_batches
    c.train.length_bucket = 16
    c.optim.lr = exp.lr
    if exp.exact_eval and exp.traj_every > 0:   # the trajectory's checkpoints (and always the last)
        c.checkpoint.every = exp.traj_every
        c.checkpoint.keep = exp.total_steps // exp.traj_every + 2
    else:
        c.checkpoint.every = 10 ** 6  # one checkpoint, at the end
        c.checkpoint.keep = 1
    c.checkpoint.resume = False
    c.logging.out_dir = out_dir
    c.logging.tensorboard = False
    c.logging.progress = False
    c.logging.eval_every = exp.eval_every
    c.logging.eval_n = exp.eval_problems
    c.logging.eval_datasets = (os.path.join(data, "heldout.jsonl"),)
    return c


def _eval_config(cfg: ExperimentConfig, seed: int):
    from rlvr_jax.evaluation.config import EvalConfig

    return EvalConfig(n=cfg.eval_n, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p, top_k=-1,
                      max_new_tokens=ws.max_new_tokens(cfg.warmstart), seed=seed, template="plain", greedy=True,
                      max_problems=cfg.eval_problems, prompt_batch_size=max(1, 256 // cfg.eval_n), grade_workers=0)


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


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[testbed] {msg}", flush=True)


def ensure_warm_start(cfg: ExperimentConfig, verbose: bool = True) -> dict:
    """The warm start's stats; the warm start is made into ``cfg.warm_dir`` unless a complete one is there (a
    complete one is reused as it is: ``cfg.warmstart`` applies only when one is made)."""
    if ws.is_complete(cfg.warm_dir):
        _log(verbose, f"reusing the warm start in {cfg.warm_dir}")
        with open(os.path.join(cfg.warm_dir, "warmstart.json")) as f:
            return json.load(f)
    _log(verbose, f"warm start -> {cfg.warm_dir}")
    return ws.warm_start(cfg.warm_dir, cfg.warmstart, verbose=verbose)


def base_config(cfg: ExperimentConfig, base: int) -> ExperimentConfig:
    """The one-base experiment of base seed ``base`` in a ``bases`` study: warm start seed ``base`` (the puzzle
    split of ``warmstart.split_seed``, or of ``warmstart.seed`` when that is -1) in ``<out>/base<b>/warmstart``,
    runs under ``<out>/base<b>``."""
    w = cfg.warmstart
    split = w.split_seed if w.split_seed >= 0 else w.seed
    out = os.path.join(cfg.out_dir, f"base{base}")
    return dataclasses.replace(cfg, bases=(), out_dir=out, warm_dir=os.path.join(out, "warmstart"),
                               warmstart=dataclasses.replace(w, seed=int(base), split_seed=int(split)))


def run_seed(cfg: ExperimentConfig, seed: int, tokenizer, heldout, pool, evals: dict, runs: dict, timings: dict,
             verbose: bool = True, exact: dict | None = None) -> None:
    """Steps 2-3 of the pipeline for one seed; appends to ``evals[policy]`` / ``runs[algo]`` / ``timings``.
    ``exact``: ``{"cands", "base_rec", "base_probs"}`` of the base (exact evaluation of every run), or None."""
    from rlvr_jax.testbed import exact_runs
    from rlvr_jax.train import run

    sdir = os.path.join(cfg.out_dir, f"seed{seed}")
    base = os.path.join(cfg.warm_dir, ws.BASE_DIR)
    kmax = str(cfg.eval_n)
    if cfg.sampled_eval:
        t = time.perf_counter()
        evals.setdefault("base", []).append(evaluate_checkpoint(base, tokenizer, heldout, cfg,
                                                                os.path.join(sdir, "eval", "base"), seed, pool))
        timings[f"seed{seed}/eval_base"] = time.perf_counter() - t
        e = evals["base"][-1]
        _log(verbose, f"seed {seed} base: pass@1 {e['pass_at_k']['1']:.3f} pass@{kmax} {e['pass_at_k'][kmax]:.3f}")
    for algo in cfg.algorithms:
        rdir = os.path.join(sdir, algo)
        t = time.perf_counter()
        res = run(rl_config(algo, cfg.warm_dir, rdir, cfg, seed=seed), tokenizer=tokenizer)
        timings[f"seed{seed}/train_{algo}"] = time.perf_counter() - t
        runs.setdefault(algo, []).append(R.read_metrics(os.path.join(rdir, "metrics.jsonl")))
        msg = f"seed {seed} {algo}: (train {timings[f'seed{seed}/train_{algo}']:.0f}s)"
        if cfg.sampled_eval:
            t = time.perf_counter()
            evals.setdefault(algo, []).append(evaluate_checkpoint(
                res.final_export, tokenizer, heldout, cfg, os.path.join(sdir, "eval", algo), seed, pool))
            timings[f"seed{seed}/eval_{algo}"] = time.perf_counter() - t
            e = evals[algo][-1]
            msg += (f" sampled pass@1 {e['pass_at_k']['1']:.3f} pass@{kmax} {e['pass_at_k'][kmax]:.3f} "
                    f"token entropy {e['token_entropy']:.3f}")
        if exact is not None:
            t = time.perf_counter()
            rec = exact_runs.evaluate_run(rdir, algo, exact["cands"], tokenizer, exact["base_rec"],
                                          exact["base_probs"], sdir)
            timings[f"seed{seed}/exact_{algo}"] = time.perf_counter() - t
            last = rec["trajectory"][-1]
            msg += (f" exact pass@1 {last['eval']['pass@1']:.3f} pass@1024 {last['eval']['pass@1024']:.3f} "
                    f"KL {last['train']['kl_base_policy']:.3f} ({len(rec['steps']) - 1} checkpoints, "
                    f"{timings[f'seed{seed}/exact_{algo}']:.0f}s)")
        _log(verbose, msg)


def policy_properties(cfg: ExperimentConfig, heldout, policies, runs: dict) -> dict:
    """Per policy and seed, the measured properties (:func:`rlvr_jax.testbed.properties.measure`:
    near misses, distinct answers, pass@k on the rare-only / other puzzles) from the evaluation records, and
    the largest training fully-solved ratio of any run."""
    from rlvr_jax.evaluation import records as rec
    from rlvr_jax.testbed import properties as P

    problems = list(heldout)[:cfg.eval_problems]
    out = {}
    for policy in policies:
        for seed in cfg.seeds:
            path = os.path.join(cfg.out_dir, f"seed{seed}", "eval", policy, "heldout", "samples.jsonl")
            out.setdefault(policy, {})[str(seed)] = P.measure(
                rec.read_records(path), problems, cfg.eval_n, cfg.warmstart.rare_strategies)
    fully = [R.metric(r, "train/fully_solved_ratio") for rs in runs.values() for rows in rs for r in rows]
    fully = [v for v in fully if v is not None]
    return {"policies": out, "train_fully_solved_max": max(fully) if fully else None}


def rebuild_report(cfg: ExperimentConfig) -> dict:
    """Writes ``<out>/report`` again from what a finished :func:`run_experiment` left on disk (evaluation
    summaries and records, training metrics, the warm start's stats; timings from the previous report if
    there is one), e.g. after the report code changed; returns the summary dict."""
    from rlvr_jax.data import load_file
    from rlvr_jax.evaluation.config import default_ks

    evals: dict[str, list[dict]] = {}
    runs: dict[str, list[list[dict]]] = {}
    for seed in cfg.seeds:
        sdir = os.path.join(cfg.out_dir, f"seed{seed}")
        for policy in ("base",) + tuple(cfg.algorithms):
            with open(os.path.join(sdir, "eval", policy, "summary.json")) as f:
                evals.setdefault(policy, []).append(json.load(f)["heldout"])
        for algo in cfg.algorithms:
            runs.setdefault(algo, []).append(R.read_metrics(os.path.join(sdir, algo, "metrics.jsonl")))
    with open(os.path.join(cfg.warm_dir, "warmstart.json")) as f:
        warm_stats = json.load(f)
    report = os.path.join(cfg.out_dir, "report")
    timings = {}
    if os.path.exists(os.path.join(report, "summary.json")):
        with open(os.path.join(report, "summary.json")) as f:
            timings = json.load(f).get("timings_s", {})
    heldout = load_file(os.path.join(cfg.warm_dir, ws.DATA_DIR, "heldout.jsonl"), "heldout")
    props = policy_properties(cfg, heldout, evals, runs)
    return R.write_report(report, evals, runs, default_ks(cfg.eval_n), cfg, timings, warm_stats, props)


def run_experiment(cfg: ExperimentConfig, verbose: bool = True) -> dict:
    """Runs the whole pipeline (module docstring) and returns the summary dict (the sampled report's when
    ``sampled_eval``, else the exact report's). With ``bases``, one pipeline per base (:func:`base_config`) and
    the exact report over all of them in ``<out>/report``."""
    from rlvr_jax.testbed import exact_report

    if cfg.bases:
        t0 = time.perf_counter()
        timings = {}
        for b in cfg.bases:
            sub = base_config(cfg, b)
            _log(verbose, f"base {b} -> {sub.out_dir}")
            run_one_base(sub, verbose)
            with open(os.path.join(sub.out_dir, "timings.json")) as f:
                timings.update({f"base{b}/{k}": v for k, v in json.load(f).items()})
        timings["total"] = time.perf_counter() - t0
        summary = exact_report.write(cfg.out_dir, timings=timings) if cfg.exact_eval else {"timings_s": timings}
        _log(verbose, f"report: {os.path.abspath(os.path.join(cfg.out_dir, 'report'))} ({timings['total']:.0f}s)")
        return summary
    return run_one_base(cfg, verbose)


def run_one_base(cfg: ExperimentConfig, verbose: bool = True) -> dict:
    """The pipeline on one base (``cfg.warm_dir``): warm start, RL runs of every seed, their evaluations and
    ``<out>/report``; the timings also in ``<out>/timings.json``."""
    from transformers import AutoTokenizer

    from rlvr_jax.data import load_file
    from rlvr_jax.evaluation.config import default_ks
    from rlvr_jax.rewards import GraderPool
    from rlvr_jax.testbed import exact_report, exact_runs
    from rlvr_jax.testbed.exact import load_candidates

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    warm_stats = ensure_warm_start(cfg, verbose)
    timings["warm_start"] = time.perf_counter() - t0
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(cfg.warm_dir, ws.BASE_DIR))
    heldout = load_file(os.path.join(cfg.warm_dir, ws.DATA_DIR, "heldout.jsonl"), "heldout")
    exact = None
    if cfg.exact_eval:
        t = time.perf_counter()
        _, cands = load_candidates(cfg.warm_dir, cfg.eval_problems)
        base_rec, base_probs = exact_runs.evaluate_base(os.path.join(cfg.warm_dir, ws.BASE_DIR), cands, tokenizer,
                                                        cfg.out_dir)
        exact = {"cands": cands, "base_rec": base_rec, "base_probs": base_probs}
        timings["exact_base"] = time.perf_counter() - t
        b = base_rec["final"]
        _log(verbose, f"base exact: pass@1 {b['eval']['pass_at_k'][0]:.3f} pass@1024 {b['eval']['pass_at_k'][-1]:.3f}"
                      f" (top-p 1.0: {b['eval_no_top_p']['pass_at_k'][-1]:.3f}), {cands.num_puzzles} puzzles, "
                      f"{len(cands.texts)} candidates")
    evals: dict[str, list[dict]] = {}
    runs: dict[str, list[list[dict]]] = {}
    with GraderPool(0) as pool:
        for seed in cfg.seeds:
            run_seed(cfg, seed, tokenizer, heldout, pool, evals, runs, timings, verbose, exact)
    report = os.path.join(cfg.out_dir, "report")
    timings["total"] = time.perf_counter() - t0
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "timings.json"), "w") as f:
        json.dump(timings, f, indent=1)
    summary = None
    if cfg.sampled_eval:
        props = policy_properties(cfg, heldout, evals, runs)
        summary = R.write_report(report, evals, runs, default_ks(cfg.eval_n), cfg, timings, warm_stats, props)
    if cfg.exact_eval:
        ex = exact_report.write(cfg.out_dir, timings=timings)
        summary = summary if summary is not None else ex
    _log(verbose, f"report: {os.path.abspath(report)} ({timings['total']:.0f}s)")
    return summary
