"""The RL trainer: ``python -m rlvr_jax.train --config=configs/nsr_qwen3.py [--config.a.b=value ...]``.

One RL step (verl's order):
  1. sample ``prompt_batch_size`` prompts (resumable, seeded order) and generate ``rollout.n`` rollouts each
     with the configured engine (in-process JAX sampler or vLLM server);
  2. grade them (math equivalence / Reasoning Gym scorer in a worker pool) into rewards in {-1,+1} (or {0,1});
  3. old-policy (and reference) log-probs recomputed by the learner;
  4. advantages (``rlvr_jax.update_plan``): from correctness (PSR / NSR / W-REINFORCE / REINFORCE, +1 / -1
     whatever the reward format), group-normalised (GRPO, DAPO, GSPO, -N variants) or GAE on a critic (PPO,
     KL penalty folded into the reward, whitened over the batch with ``algo.whiten_advantages``);
     the rollout engine's own log-probs give the mismatch metrics ``rollout_corr/*`` and, with
     ``algo.rollout_correction``, truncated importance weights or rejected sequences (rlvr_jax.rollout_correction);
  5. the rows the objective learns from (``rlvr_jax.objectives.selection``: PSR the correct ones, NSR the
     incorrect ones), counted in ``train/kept_samples``; with ``algo.sample_selection="drop"`` only they enter
     the mini-batches (the NSR paper's released code), with ``"mask"`` all rows do;
  6. ``ppo_epochs`` passes over the mini-batches (``train.shuffle_minibatches``: permuted; the papers: not),
     one exact accumulated AdamW update each (``rlvr_jax.learner``), the critic first for PPO;
  7. weights synced to the engine; metrics, held-out greedy evaluation and checkpoints.

Reproducibility: the prompt order, the sampling seed of step s and any mini-batch shuffles are functions of
(``train.seed``, s) only, and the data position, parameters and optimizer state are checkpointed, so a run
resumed from step s continues bit-identically. SIGTERM/SIGINT checkpoint at the end of the current step.
Multi-host: every process runs the same loop on the same host data (identical seeds); arrays are global over
the mesh; process 0 writes logs, all processes take part in (orbax) checkpointing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvr_jax.checkpointing import Checkpointer, PreemptionGuard, atomic_directory
from rlvr_jax.config import as_plain, resolve_mesh_shape, validate_config
from rlvr_jax.config.checks import check_prompt_budget
from rlvr_jax.faults import fault_point
from rlvr_jax.learner import Learner, LearnerOptions, pack_sequences
from rlvr_jax.logging_utils import MetricsWriter, Progress, format_metric_line
from rlvr_jax.objectives import kept_rows
from rlvr_jax.offpolicy import RolloutPipeline
from rlvr_jax.rollout_correction import apply_correction, rollout_logp_array
from rlvr_jax.update_plan import (actor_minibatches, compute_advantages, minibatch_batch,  # noqa: F401
                                  minibatch_rows, selection_metrics)
from rlvr_jax.rollout import SamplingParams

STEP_SEED_STRIDE = 1_000_003


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer updates were skipped for a non-finite loss or gradient."""


@dataclasses.dataclass
class RunResult:
    steps_done: int
    out_dir: str
    last_metrics: dict
    preempted: bool
    final_export: str | None


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------
def clone_model(model: nnx.Module) -> nnx.Module:
    """A deep copy with its own buffers (so donating one model's arrays never deletes the other's)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def build_model(cfg, mesh, rules):
    """The policy (sharded on ``mesh``) and its ModelConfig, from ``model.hf_path`` or ``model.preset``."""
    from rlvr_jax.models import Decoder, get_preset, load_hf
    from rlvr_jax.sharding import shard_model
    m = cfg.model
    opts = dict(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attention_impl=m.attention_impl,
                decode_attention_impl=m.decode_attention_impl)
    if m.hf_path:
        model, mcfg = load_hf(m.hf_path, mesh=mesh, rules=rules, nonfinite=m.nonfinite_weights, **opts)
    else:
        mcfg = get_preset(m.preset, **opts)
        model = shard_model(Decoder(mcfg, rngs=nnx.Rngs(int(cfg.train.seed))), mesh, rules)
    return model, mcfg


def load_tokenizer(cfg):
    """The tokenizer at model.tokenizer_path (else hf_path); ``builtin:bytes`` is built offline."""
    from rlvr_jax.data.byte_tokenizer import load_tokenizer_path
    return load_tokenizer_path(cfg.model.tokenizer_path or cfg.model.hf_path)


def build_engine(cfg, model, mesh, stop_ids: Sequence[int], pad_id: int, out_dir: str):
    r = cfg.rollout
    if r.engine == "jax":
        from rlvr_jax.rollout.jax_sampler import JaxSampler
        rows = int(cfg.train.prompt_batch_size) * int(r.n)
        j = r.get("jax") or {}
        sched = dict(scheduler=j["scheduler"], decode_steps=int(j["decode_steps"]),
                     refill_rows=int(j["refill_rows"]) or None) if j else {}
        return JaxSampler(model, pad_id=pad_id, eos_token_ids=stop_ids, max_batch_size=min(rows, 256),
                          max_prompt_len=int(cfg.data.max_prompt_len),
                          max_new_tokens_limit=int(r.max_new_tokens), mesh=mesh, **sched)
    from rlvr_jax.rollout.vllm_engine import VLLMEngine
    v = r.vllm
    sync_root = r.sync_dir or os.path.join(out_dir, "weights")
    if v.url:
        return VLLMEngine(url=v.url, sync_root=sync_root)
    from rlvr_jax.models import save_hf
    init_dir = cfg.model.hf_path
    if not init_dir:  # a preset model: export its random init so the server starts from the same weights
        init_dir = os.path.join(sync_root, "init")
        if jax.process_index() == 0:
            save_hf(model, init_dir)
            if cfg.model.tokenizer_path:
                load_tokenizer(cfg).save_pretrained(init_dir)
    opts = dict(max_model_len=int(v.max_model_len), gpu_memory_utilization=float(v.gpu_memory_utilization),
                tensor_parallel_size=int(v.tensor_parallel_size), enforce_eager=bool(v.enforce_eager),
                seed=int(cfg.train.seed), startup_timeout_s=float(v.startup_timeout_s),
                log_path=os.path.join(out_dir, "vllm_server.log"),
                extra_args=tuple(str(v.extra_args).split()))
    if v.python:
        opts["python"] = v.python
    return VLLMEngine(init_dir, sync_root=sync_root, **opts)


def encode_dataset(ds, cfg, tokenizer) -> tuple[list, list[list[int]], int]:
    """Problems whose prompt fits ``data.max_prompt_len`` and their token ids; returns the number dropped."""
    from rlvr_jax.data import encode_prompt
    keep, ids, dropped = [], [], 0
    for p in ds:
        t = encode_prompt(p.problem, cfg.data.template, tokenizer)
        if len(t) > cfg.data.max_prompt_len:
            dropped += 1
            continue
        keep.append(p)
        ids.append(t)
    if not keep:
        raise ValueError(f"no prompt of {cfg.data.train!r} fits data.max_prompt_len={cfg.data.max_prompt_len}")
    return keep, ids, dropped


def held_out_eval(engine, learner: Learner, tokenizer, problems, prompt_ids, cfg, pool, stop_ids) -> dict:
    """Greedy accuracy and mean token entropy (raw distribution) of the policy on held-out problems."""
    max_new = int(cfg.logging.eval_max_new_tokens) or int(cfg.rollout.max_new_tokens)
    sp = SamplingParams(temperature=0.0, max_new_tokens=max_new, stop_token_ids=tuple(stop_ids))
    outs = engine.generate(prompt_ids, 1, sp)
    comps = [o[0] for o in outs]
    texts = tokenizer.batch_decode([c.token_ids for c in comps], skip_special_tokens=True)
    results = pool.grade_problems(problems, texts, timeout_s=float(cfg.data.grade_timeout_s))
    batch = pack_sequences(prompt_ids, [c.token_ids or [int(stop_ids[0]) if stop_ids else 0] for c in comps],
                           int(cfg.train.length_bucket))
    _, ent = learner.compute_logprobs(batch)
    m = batch["response_mask"]
    return {"eval/greedy_accuracy": float(np.mean([r.correct for r in results])),
            "eval/token_entropy": float((ent * m).sum() / max(m.sum(), 1)),
            "eval/response_length": float(np.mean([len(c.token_ids) for c in comps]))}


def sampling_params(cfg, stop_ids, step: int) -> SamplingParams:
    """Batch ``step``'s sampling parameters; the seed is a function of (train.seed, step) only."""
    r = cfg.rollout
    return SamplingParams(temperature=float(r.temperature), top_p=float(r.top_p), top_k=int(r.top_k),
                          max_new_tokens=int(r.max_new_tokens), stop_token_ids=tuple(stop_ids),
                          seed=int(cfg.train.seed) * STEP_SEED_STRIDE + step)


def _mfu(model_cfg, tokens: int, seq_len: int, seconds: float, passes: float) -> float | None:
    from rlvr_jax.bench.flops import peak_bf16_flops, train_flops_per_token
    peak = peak_bf16_flops(jax.devices()[0].device_kind)
    if peak is None or seconds <= 0:
        return None
    return passes * train_flops_per_token(model_cfg, seq_len) * tokens / (seconds * peak * jax.device_count())


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def run(cfg, *, tokenizer=None, guard: PreemptionGuard | None = None, stop_after: int | None = None) -> RunResult:
    """Trains per ``cfg`` (validated first). ``stop_after``: return after this many steps of this call (as if
    preempted, with a checkpoint) - used by tests and for chunked jobs. Without ``guard`` a
    :class:`PreemptionGuard` is installed before any start-up work."""
    if guard is not None:
        return _run(cfg, tokenizer=tokenizer, guard=guard, stop_after=stop_after)
    with PreemptionGuard() as own:
        return _run(cfg, tokenizer=tokenizer, guard=own, stop_after=stop_after)


def _run(cfg, *, tokenizer, guard: PreemptionGuard, stop_after: int | None) -> RunResult:
    from rlvr_jax.data import PromptSampler, load_dataset, stop_token_ids
    from rlvr_jax.rewards import GraderPool
    from rlvr_jax.sharding import initialize_distributed, make_mesh

    d = cfg.distributed
    initialize_distributed(d.coordinator or None, d.num_processes if d.num_processes > 0 else None,
                           d.process_id if d.process_id >= 0 else None)
    batching = validate_config(cfg, check_files=True, num_devices=jax.device_count())
    fault_point("startup", 0)
    is_main = jax.process_index() == 0
    out_dir = cfg.logging.out_dir
    os.makedirs(out_dir, exist_ok=True)
    if is_main:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(as_plain(cfg), f, indent=1, sort_keys=True)

    mesh = make_mesh(resolve_mesh_shape(cfg.mesh.shape, jax.device_count()))
    rules = tuple(tuple(r) for r in cfg.mesh.rules) or None
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
    stop_ids = tuple(stop_token_ids(tokenizer))
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids or (0,))[0])
    check_prompt_budget(cfg, tokenizer)

    train_ds = load_dataset(cfg.data.train, cfg.data.data_dir)
    problems, prompt_ids, dropped = encode_dataset(train_ds, cfg, tokenizer)
    sampler = PromptSampler(len(problems), batching.prompt_batch_size, seed=int(cfg.train.seed),
                            shuffle=bool(cfg.train.shuffle))
    eval_sets = []
    if cfg.logging.eval_every > 0:
        for name in cfg.logging.eval_datasets:
            eds = load_dataset(name, cfg.data.data_dir).take(int(cfg.logging.eval_n))
            ep, eids, _ = encode_dataset(eds, cfg, tokenizer)
            eval_sets.append((name, ep, eids))

    model, model_cfg = build_model(cfg, mesh, rules)
    critic_backbone = clone_model(model) if cfg.algo.adv_estimator == "gae" else None
    total_updates = int(cfg.train.total_steps) * batching.updates_per_step
    learner = Learner(model, LearnerOptions.from_config(cfg, total_updates), mesh, rules,
                      critic_backbone=critic_backbone)
    engine = build_engine(cfg, clone_model(model) if cfg.rollout.engine == "jax" else model, mesh, stop_ids,
                          pad_id, out_dir)
    pool = GraderPool(int(cfg.data.grade_workers), float(cfg.data.grade_timeout_s),
                      reward_format=cfg.data.reward_format)
    ckpt = Checkpointer(cfg.checkpoint.dir or os.path.join(out_dir, "checkpoints"), int(cfg.checkpoint.keep),
                        int(cfg.checkpoint.every))
    writer = MetricsWriter(out_dir, bool(cfg.logging.jsonl), bool(cfg.logging.tensorboard), is_main)
    off_policy = int(cfg.train.off_policy_steps)
    pipe = RolloutPipeline(engine, sampler, prompt_ids, batching.n, lambda s: sampling_params(cfg, stop_ids, s),
                           off_policy, background=cfg.rollout.engine == "vllm")
    behaviour = None  # off-policy: the parameters of the version that generated the next batch (rlvr_jax.offpolicy)

    def ckpt_state():
        s = learner.train_state()
        if off_policy:
            s = dict(s, behaviour_params=behaviour if behaviour is not None else learner.policy.state["params"])
        return s

    start = 0
    nonfinite_run = 0
    restored = ckpt.restore_newest_good(ckpt_state()) if cfg.checkpoint.resume else None
    if restored is None and cfg.checkpoint.init_from:
        init = Checkpointer(cfg.checkpoint.init_from)
        state, _ = init.restore(learner.train_state())
        learner.load_train_state(state)
        pipe.sync(learner.policy_model(), 0)
        init.close()
    if restored is not None:
        state, meta, _ = restored
        del restored
        learner.load_train_state(state)
        sampler.load_state_dict(meta["data_position"])
        start, nonfinite_run = int(meta["step"]), int(meta.get("nonfinite_in_a_row", 0))
        if off_policy:  # batch `start` is regenerated by the version before it, as in the uninterrupted run
            behaviour = state["behaviour_params"]
            pipe.sync(learner.policy.module(behaviour), start - 1)
        else:
            pipe.sync(learner.policy_model(), start)
        if is_main:
            print(f"[train] resumed from step {start} in {ckpt.directory}", flush=True)
    if writer.resume_at(start) and is_main:
        print(f"[train] dropped {writer.dropped_lines} metrics.jsonl line(s) logged after step {start}", flush=True)

    algo = cfg.algo.name
    n = batching.n
    progress = Progress(int(cfg.train.total_steps), start, enabled=bool(cfg.logging.progress) and is_main)
    metrics: dict[str, Any] = {}
    preempted = guard.requested_anywhere()  # a signal during start-up: stop before any step (nothing to save)
    step = start

    if pipe.engine_version is None:
        if cfg.rollout.engine == "vllm" and cfg.rollout.vllm.url:  # an attached server may hold any weights
            pipe.sync(learner.policy_model(), 0)
        else:
            pipe.engine_version = 0  # the engine was built from the initial weights

    def save(step_done: int, force: bool) -> bool:
        meta = {"data_position": pipe.data_position(step_done), "nonfinite_in_a_row": nonfinite_run,
                "rng": {"seed": int(cfg.train.seed), "step": step_done}, "config": as_plain(cfg)}
        fault_point("save", step_done)
        saved = ckpt.save(step_done, ckpt_state(), meta, force=force)
        fault_point("saved", step_done)
        return saved

    try:
        while step < int(cfg.train.total_steps) and not preempted:
            t_step = time.perf_counter()
            timing: dict[str, float] = {}
            # 1. prompts and rollouts
            rb, timing_gen = pipe.batch_for_step(step, learner.policy_model, int(cfg.train.total_steps))
            timing.update(timing_gen)
            idx, prompts, outs = rb.idx, rb.prompts, rb.outs
            comps = [c for o in outs for c in o]  # row p*n + s
            fault_point("gen", step)
            # 2. rewards
            t0 = time.perf_counter()
            texts = tokenizer.batch_decode([c.token_ids for c in comps], skip_special_tokens=True)
            graded = pool.grade_problems([problems[i] for i in idx for _ in range(n)], texts,
                                         timeout_s=float(cfg.data.grade_timeout_s))
            rewards = np.asarray([g.reward for g in graded], np.float32)
            fault_point("reward", step)
            timing["reward"] = time.perf_counter() - t0
            # 3. old / reference log-probs, advantages
            t0 = time.perf_counter()
            row_prompts = [prompts[r // n] for r in range(len(comps))]
            responses = [c.token_ids if c.token_ids else [pad_id] for c in comps]
            batch = pack_sequences(row_prompts, responses, int(cfg.train.length_bucket), pad_id)
            for r, c in enumerate(comps):  # an empty completion has no token to train on
                if not c.token_ids:
                    batch["response_mask"][r] = 0
            # the PPO ratio's old policy is the version that generated the batch (rlvr_jax.offpolicy)
            batch["old_logp"], old_ent = learner.compute_logprobs(
                batch, params=behaviour if rb.version != step else None)
            if off_policy:
                behaviour = jax.tree.map(jnp.copy, learner.policy.state["params"])  # v_step: generates batch step+1
            if learner.ref_params is not None:
                batch["ref_logp"], _ = learner.compute_logprobs(batch, reference=True)
            timing["old_log_prob"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            correct = np.asarray([g.correct for g in graded], bool)
            batch["advantages"], adv_metrics = compute_advantages(cfg, rewards, correct, batch, learner)
            valid_mask = batch["response_mask"]
            corr_metrics = apply_correction(batch, rollout_logp_array(comps, valid_mask.shape),
                                            cfg.algo.rollout_correction, float(cfg.algo.rollout_correction_cap))
            kept = kept_rows(algo, batch["advantages"], batch["response_mask"])  # what the gradient uses
            timing["adv"] = time.perf_counter() - t0
            # 4. updates: ppo_epochs x mini-batches (of the kept rows only with sample_selection="drop")
            t0 = time.perf_counter()
            upd: list[dict] = []
            crit: list[dict] = []
            for epoch in range(batching.ppo_epochs):
                for rows in actor_minibatches(cfg, batching, kept, step, epoch):
                    mb = minibatch_batch(cfg, batching, batch, rows)
                    if learner.critic is not None:
                        crit.append(learner.update_critic(mb))
                    m = learner.update(mb)
                    upd.append(m)
                    nonfinite_run = nonfinite_run + 1 if m["actor/skipped"] else 0
                    if nonfinite_run >= int(cfg.train.max_nonfinite_in_a_row):
                        raise NonFiniteError(
                            f"{nonfinite_run} consecutive updates had a non-finite loss or gradient (step {step}); "
                            f"train.max_nonfinite_in_a_row={cfg.train.max_nonfinite_in_a_row}")
            timing["update_actor"] = time.perf_counter() - t0
            fault_point("update", step)
            # 5. weight sync
            if not off_policy:  # one-step off-policy syncs at the start of the next step (rollouts_for_step)
                timing["sync_weights"] = pipe.sync(learner.policy_model(), step + 1)

            # metrics
            mask = valid_mask
            lengths = np.asarray([len(c.token_ids) for c in comps])
            metrics = {k: float(np.mean([u[k] for u in upd])) for k in (upd[0] if upd else ())}
            metrics["actor/skipped"] = float(sum(u["actor/skipped"] for u in upd))
            metrics.update(selection_metrics(kept, mask, len(upd)))
            if crit:
                metrics.update({k: float(np.mean([c[k] for c in crit])) for k in crit[0]})
            metrics.update(adv_metrics)
            metrics.update(corr_metrics)
            metrics.update({
                "critic/score/mean": float(rewards.mean()), "critic/score/max": float(rewards.max()),
                "critic/score/min": float(rewards.min()),
                "train/correct_ratio": float(correct.mean()),
                "train/fully_solved_ratio": float(correct.reshape(-1, n).all(axis=1).mean()),
                "train/rollout_entropy": float((old_ent * mask).sum() / max(mask.sum(), 1)),
                "train/no_answer_ratio": float(np.mean([g.status == "no_answer" for g in graded])),
                "train/dropped_long_prompts": dropped,
                "response_length/mean": float(lengths.mean()), "response_length/max": int(lengths.max()),
                "response_length/clip_ratio": float(np.mean([c.finish_reason == "length" for c in comps])),
                "prompt_length/mean": float(np.mean([len(p) for p in prompts])),
                "train/epoch": sampler.epoch, "train/nonfinite_in_a_row": nonfinite_run,
                "rollout/engine_restarts": int(getattr(engine, "restarts", 0)),  # cumulative, vLLM only
                "rollout/version": rb.version, "rollout/staleness": step - rb.version,
            })
            timing["step"] = time.perf_counter() - t_step
            metrics.update({f"timing_s/{k}": v for k, v in timing.items()})
            tokens = int(batch["prompt_mask"].sum() + mask.sum())
            metrics["perf/total_num_tokens"] = tokens
            metrics["perf/throughput"] = tokens / timing["step"] / jax.device_count()
            seq_len = batch["prompt_ids"].shape[1] + batch["response_ids"].shape[1]
            mfu = _mfu(model_cfg, tokens * batching.ppo_epochs, seq_len, timing["update_actor"], 1.0)
            if mfu is not None:
                metrics["perf/mfu/actor"] = mfu
            step += 1
            if eval_sets and step % int(cfg.logging.eval_every) == 0:
                t0 = time.perf_counter()
                pipe.drain()  # the engine serves the eval with the current weights, nothing else in flight
                pipe.sync(learner.policy_model(), step)
                for name, ep, eids in eval_sets:
                    em = held_out_eval(engine, learner, tokenizer, ep, eids, cfg, pool, stop_ids)
                    metrics.update({k.replace("eval/", f"eval/{name}/"): v for k, v in em.items()})
                metrics["timing_s/eval"] = time.perf_counter() - t0
            if step % int(cfg.logging.every) == 0 or step == int(cfg.train.total_steps):
                writer.write(step, metrics)
            progress.update(metrics)
            save(step, force=False)
            if guard.requested_anywhere() or (stop_after is not None and step - start >= stop_after):
                preempted = step < int(cfg.train.total_steps)
                break
        if step > start:  # nothing to save when stopped during start-up
            save(step, force=True)
        final = None
        if not preempted and cfg.train.export_final:
            from rlvr_jax.models import save_hf
            final = os.path.join(out_dir, "final_hf")
            fault_point("export", step)
            with atomic_directory(final, is_main) as tmp:  # a kill leaves the old export or none, never half
                save_hf(learner.policy_model(), tmp, source_dir=cfg.model.hf_path or None)
                if is_main and (cfg.model.tokenizer_path or cfg.model.hf_path):
                    tokenizer.save_pretrained(tmp)
        if is_main and metrics:
            print(format_metric_line(step, metrics), flush=True)
        return RunResult(step, out_dir, metrics, preempted, final)
    finally:
        progress.close()
        writer.close()
        ckpt.close()
        pool.close()
        pipe.close()
        engine.close()


def main(argv):
    del argv
    from absl import flags
    result = run(flags.FLAGS.config)
    if result.preempted:
        print(f"[train] stopped at step {result.steps_done} (checkpoint saved); rerun the same command to resume")


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    from rlvr_jax.config.overrides import exit_on_unknown_overrides
    exit_on_unknown_overrides()  # a misspelled --config.a.b names the valid fields, before any start-up
    config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:arg])",
                                    lock_config=True)
    flags.mark_flags_as_required(["config"])
    app.run(main)
