"""One RL step as phases: ``rl_step(run, step) -> StepResult``.

    rollout -> reward -> old_logprobs -> advantages -> update -> sync -> step_metrics

Each phase is a function of the :class:`~rlvr_jax.trainer.run_setup.Run` and what the phase before it returned; the
batch the learner trains on is one :class:`~rlvr_jax.batch.TrainBatch` that the phases fill in
(``pack_sequences`` -> ``old_logp``/``ref_logp`` -> ``advantages`` (+ critic values/returns) -> the rollout
correction). Phase wall times go through one :class:`PhaseTimer` into ``timing_s/<phase>``; the fault points
(rlvr_jax.trainer.faults) ``gen``, ``reward`` and ``update`` fire at the end of their phases.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax.batch import TrainBatch, pack_sequences, token_mean
from rlvr_jax.trainer.faults import fault_point
from rlvr_jax.objectives import kept_rows
from rlvr_jax.rewards.code_grader import code_status_counts
from rlvr_jax.trainer.offpolicy import RolloutBatch
from rlvr_jax.rollout import SamplingParams
from rlvr_jax.trainer.rollout_correction import apply_correction, rollout_logp_array
from rlvr_jax.trainer.update_plan import (actor_minibatches, compute_advantages, gate, minibatch_batch,
                                          selection_metrics)


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer updates were skipped for a non-finite loss or gradient."""


class PhaseTimer:
    """Wall seconds per phase: ``with timer("reward"): ...``; a name timed twice accumulates.
    :meth:`metrics` gives them as ``timing_s/<name>``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def metrics(self) -> dict[str, float]:
        return {f"timing_s/{k}": v for k, v in self.seconds.items()}


@dataclasses.dataclass
class Rollouts:
    """Phase 1's output: the engine's batch and its completions flattened to rows (row p*n + s)."""

    rb: RolloutBatch
    comps: list


@dataclasses.dataclass
class Graded:
    """Phase 2's output, one entry per row."""

    results: list          # GradeResult
    rewards: np.ndarray    # [N] float32
    correct: np.ndarray    # [N] bool


@dataclasses.dataclass
class Updates:
    """Phase 6's output: the metrics of every actor (and critic) update."""

    actor: list
    critic: list


@dataclasses.dataclass
class StepResult:
    step: int              # the step just done (0-based)
    metrics: dict
    batch: TrainBatch


# ------------------------------------------------------------------------------------------------
# The phases
# ------------------------------------------------------------------------------------------------
def rollout(run, step: int, timer: PhaseTimer) -> Rollouts:
    """1. prompts and rollouts: batch ``step`` from the pipeline (off-policy: launches batch step+1)."""
    rb, timing = run.pipe.batch_for_step(step, run.learner.policy_model, run.total_steps)
    for k, v in timing.items():
        timer.add(k, v)
    fault_point("gen", step)
    return Rollouts(rb, [c for o in rb.outs for c in o])


def reward(run, ro: Rollouts, step: int, timer: PhaseTimer) -> Graded:
    """2. rewards: every completion graded against its problem in the worker pool."""
    with timer("reward"):
        texts = run.tokenizer.batch_decode([c.token_ids for c in ro.comps], skip_special_tokens=True)
        n = run.batching.n
        results = run.pool.grade_problems([run.problems[i] for i in ro.rb.idx for _ in range(n)], texts,
                                          timeout_s=float(run.cfg.data.grade_timeout_s))
        graded = Graded(results, np.asarray([g.reward for g in results], np.float32),
                        np.asarray([g.correct for g in results], bool))
        fault_point("reward", step)
    return graded


def old_logprobs(run, ro: Rollouts, step: int, timer: PhaseTimer) -> tuple[TrainBatch, np.ndarray]:
    """3. the packed batch with the old-policy (and reference) log-probs; returns it and the old entropy."""
    with timer("old_log_prob"):
        n, learner = run.batching.n, run.learner
        row_prompts = [ro.rb.prompts[r // n] for r in range(len(ro.comps))]
        responses = [c.token_ids if c.token_ids else [run.pad_id] for c in ro.comps]
        batch = pack_sequences(row_prompts, responses, int(run.cfg.train.length_bucket), run.pad_id)
        empty = np.asarray([not c.token_ids for c in ro.comps])  # an empty completion has no token to train on
        batch = batch.replace(response_mask=np.where(empty[:, None], 0, batch.response_mask).astype(np.float32))
        # the PPO ratio's old policy is the version that generated the batch (rlvr_jax.trainer.offpolicy)
        old_logp, old_ent = learner.compute_logprobs(batch, params=run.behaviour if ro.rb.version != step else None)
        if run.off_policy:
            run.behaviour = jax.tree.map(jnp.copy, learner.policy.state["params"])  # v_step: generates batch step+1
        ref_logp = learner.compute_logprobs(batch, reference=True)[0] if learner.ref_params is not None else None
    return batch.replace(old_logp=old_logp, ref_logp=ref_logp), old_ent


def activate_phase(run, step: int):
    """The config step ``step`` trains with: ``run.cfg``, or with ``algo.schedule`` its phase's
    (rlvr_jax.config.schedule, chosen by the step number alone, so a resumed run continues in the same phase);
    a phase change switches the learner's objective."""
    if not run.phases:
        return run.cfg
    from rlvr_jax.config.schedule import phase_at
    from rlvr_jax.objectives import hparams_from_config
    k = phase_at(run.phases, step)
    cfg = run.phase_cfgs[k]
    if k != run.phase:
        run.learner.set_objective(cfg.algo.name, hparams_from_config(cfg))
        run.phase = k
    return cfg


def advantages(run, batch: TrainBatch, graded: Graded, ro: Rollouts, timer: PhaseTimer, cfg=None
               ) -> tuple[TrainBatch, np.ndarray, dict]:
    """4.-5. advantages (update_plan), the rollout correction, the rows the objective learns from and the
    zero-success gate; ``cfg``: the step's config (its phase's, ``activate_phase``; default ``run.cfg``)."""
    cfg = run.cfg if cfg is None else cfg
    with timer("adv"):
        a = cfg.algo
        batch, metrics = compute_advantages(cfg, graded.rewards, graded.correct, batch, run.learner)
        batch, corr = apply_correction(batch, rollout_logp_array(ro.comps, batch.response_mask.shape),
                                       a.rollout_correction, float(a.rollout_correction_cap))
        kept = kept_rows(a.name, batch.advantages, batch.response_mask)  # what the gradient uses
        batch, kept, gated = gate(cfg, graded.correct, batch, kept)
    return batch, kept, {**metrics, **corr, **gated}


def update(run, batch: TrainBatch, kept: np.ndarray, step: int, timer: PhaseTimer, cfg=None) -> Updates:
    """6. ``ppo_epochs`` x mini-batches (of the kept rows only with sample_selection="drop"), the critic first;
    raises NonFiniteError after ``train.max_nonfinite_in_a_row`` skipped updates in a row. ``cfg``: the step's
    config (default ``run.cfg``)."""
    cfg, learner, batching = run.cfg if cfg is None else cfg, run.learner, run.batching
    out = Updates([], [])
    with timer("update_actor"):
        for epoch in range(batching.ppo_epochs):
            for rows in actor_minibatches(cfg, batching, kept, step, epoch):
                mb = minibatch_batch(cfg, batching, batch, rows)
                if learner.critic is not None:
                    out.critic.append(learner.update_critic(mb))
                m = learner.update(mb)
                out.actor.append(m)
                run.nonfinite_run = run.nonfinite_run + 1 if m["actor/skipped"] else 0
                if run.nonfinite_run >= int(cfg.train.max_nonfinite_in_a_row):
                    raise NonFiniteError(
                        f"{run.nonfinite_run} consecutive updates had a non-finite loss or gradient (step {step}); "
                        f"train.max_nonfinite_in_a_row={cfg.train.max_nonfinite_in_a_row}")
    fault_point("update", step)
    return out


def sync(run, step: int, timer: PhaseTimer) -> None:
    """7. the new weights to the engine (one-step off-policy syncs at the start of the next step instead)."""
    if not run.off_policy:
        timer.add("sync_weights", run.pipe.sync(run.learner.policy_model(), step + 1))


def rl_step(run, step: int) -> StepResult:
    """RL step ``step`` (0-based): the numbered steps of rlvr_jax.train's docstring, then its metrics."""
    timer = PhaseTimer()
    cfg = activate_phase(run, step)  # algo.schedule: this step's phase
    with timer("step"):
        ro = rollout(run, step, timer)                                       # 1.
        graded = reward(run, ro, step, timer)                                # 2.
        batch, old_ent = old_logprobs(run, ro, step, timer)                  # 3.
        valid = batch.response_mask  # the metrics count the tokens before seq_mask rejects rows
        batch, kept, extra = advantages(run, batch, graded, ro, timer, cfg)  # 4. + 5.
        upd = update(run, batch, kept, step, timer, cfg)                     # 6.
        sync(run, step, timer)                                               # 7.
    if run.phases:
        extra["train/phase"] = run.phase
    metrics = step_metrics(run, step, ro, graded, batch, valid, old_ent, kept, extra, upd, timer)
    return StepResult(step, metrics, batch)


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def _mfu(model_cfg, tokens: int, seq_len: int, seconds: float, passes: float) -> float | None:
    from rlvr_jax.bench.flops import peak_bf16_flops, train_flops_per_token
    peak = peak_bf16_flops(jax.devices()[0].device_kind)
    if peak is None or seconds <= 0:
        return None
    return passes * train_flops_per_token(model_cfg, seq_len) * tokens / (seconds * peak * jax.device_count())


def _mean_dicts(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in (rows[0] if rows else ())}


def step_metrics(run, step: int, ro: Rollouts, graded: Graded, batch: TrainBatch, valid_mask, old_ent, kept,
                 extra: dict, upd: Updates, timer: PhaseTimer) -> dict[str, Any]:
    """The step's logged metrics (verl's names where verl has them); token counts over ``valid_mask`` (the
    response mask before the rollout correction)."""
    mask, comps, rewards, correct = valid_mask, ro.comps, graded.rewards, graded.correct
    lengths = np.asarray([len(c.token_ids) for c in comps])
    m = _mean_dicts(upd.actor)
    m["actor/skipped"] = float(sum(u["actor/skipped"] for u in upd.actor))
    m.update(selection_metrics(kept, mask, len(upd.actor)))
    m.update(_mean_dicts(upd.critic))
    m.update(extra)
    m.update({
        "critic/score/mean": float(rewards.mean()), "critic/score/max": float(rewards.max()),
        "critic/score/min": float(rewards.min()),
        "train/correct_ratio": float(correct.mean()),
        "train/fully_solved_ratio": float(correct.reshape(-1, run.batching.n).all(axis=1).mean()),
        "train/rollout_entropy": token_mean(old_ent, mask),
        "train/no_answer_ratio": float(np.mean([g.status == "no_answer" for g in graded.results])),
        "train/dropped_long_prompts": run.dropped_prompts,
        "response_length/mean": float(lengths.mean()), "response_length/max": int(lengths.max()),
        "response_length/clip_ratio": float(np.mean([c.finish_reason == "length" for c in comps])),
        "prompt_length/mean": float(np.mean([len(p) for p in ro.rb.prompts])),
        "train/epoch": run.sampler.epoch, "train/nonfinite_in_a_row": run.nonfinite_run,
        "rollout/engine_restarts": int(getattr(run.engine, "restarts", 0)),  # cumulative, vLLM only
        "rollout/version": ro.rb.version, "rollout/staleness": step - ro.rb.version,
    })
    m.update(code_status_counts([run.problems[i] for i in ro.rb.idx for _ in range(run.batching.n)],
                                graded.results))  # reward/code_status/<status>, code problems only
    m.update(timer.metrics())
    if hasattr(run.engine, "metrics"):  # the vLLM engine: per-replica prompts, tokens, busy seconds, restarts
        m.update(run.engine.metrics())
    tokens = int(batch.prompt_mask.sum() + mask.sum())
    m["perf/total_num_tokens"] = tokens
    m["perf/throughput"] = tokens / timer.seconds["step"] / jax.device_count()
    seq_len = batch.prompt_ids.shape[1] + batch.response_ids.shape[1]
    mfu = _mfu(run.model_cfg, tokens * run.batching.ppo_epochs, seq_len, timer.seconds["update_actor"], 1.0)
    if mfu is not None:
        m["perf/mfu/actor"] = mfu
    return m


# ------------------------------------------------------------------------------------------------
# Held-out evaluation
# ------------------------------------------------------------------------------------------------
def held_out_eval(engine, learner, tokenizer, problems, prompt_ids, cfg, pool, stop_ids) -> dict:
    """Greedy accuracy and mean token entropy (raw distribution) of the policy on held-out problems."""
    max_new = int(cfg.logging.eval_max_new_tokens) or int(cfg.rollout.max_new_tokens)
    sp = SamplingParams(temperature=0.0, max_new_tokens=max_new, stop_token_ids=tuple(stop_ids))
    comps = [o[0] for o in engine.generate(prompt_ids, 1, sp)]
    texts = tokenizer.batch_decode([c.token_ids for c in comps], skip_special_tokens=True)
    results = pool.grade_problems(problems, texts, timeout_s=float(cfg.data.grade_timeout_s))
    batch = pack_sequences(prompt_ids, [c.token_ids or [int(stop_ids[0]) if stop_ids else 0] for c in comps],
                           int(cfg.train.length_bucket))
    _, ent = learner.compute_logprobs(batch)
    return {"eval/greedy_accuracy": float(np.mean([r.correct for r in results])),
            "eval/token_entropy": token_mean(ent, batch.response_mask),
            "eval/response_length": float(np.mean([len(c.token_ids) for c in comps]))}


def evaluate(run, step: int) -> dict:
    """The held-out evaluation after ``step`` steps on every eval set (``eval/<name>/*``, ``timing_s/eval``)."""
    t0 = time.perf_counter()
    run.pipe.drain()  # the engine serves the eval with the current weights, nothing else in flight
    run.pipe.sync(run.learner.policy_model(), step)
    out = {}
    for name, ep, eids in run.eval_sets:
        em = held_out_eval(run.engine, run.learner, run.tokenizer, ep, eids, run.cfg, run.pool, run.stop_ids)
        out.update({k.replace("eval/", f"eval/{name}/"): v for k, v in em.items()})
    out["timing_s/eval"] = time.perf_counter() - t0
    return out
