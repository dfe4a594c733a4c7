"""Start-up of a training run: ``setup(cfg, stack) -> Run`` builds every component once and resumes.

``Run`` holds what the RL step's phases (rlvr_jax.trainer.rl_step) read and the little state they carry from step to
step (the non-finite update count and, off-policy, the behaviour parameters). Every component that must be
closed is registered on the caller's ``contextlib.ExitStack`` the moment it exists, so one ``with`` block
(rlvr_jax.train) tears down whatever was built, in reverse order, however the run ends.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rlvr_jax.trainer.checkpointing import Checkpointer
from rlvr_jax.config import as_plain, resolve_mesh_shape, validate_config
from rlvr_jax.config.checks import check_prompt_budget
from rlvr_jax.trainer.faults import fault_point
from rlvr_jax.trainer.learner import Learner, LearnerOptions
from rlvr_jax.trainer.logging_utils import MetricsWriter, Progress
from rlvr_jax.trainer.offpolicy import RolloutPipeline
from rlvr_jax.trainer.run_identity import check_same_run
from rlvr_jax.rollout import SamplingParams

STEP_SEED_STRIDE = 1_000_003


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------
def clone_model(model: nnx.Module) -> nnx.Module:
    """A deep copy with its own buffers (so donating one model's arrays never deletes the other's)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def load_tokenizer(cfg):
    """The tokenizer at model.tokenizer_path (else hf_path); ``builtin:bytes`` is built offline."""
    from rlvr_jax.data.byte_tokenizer import load_tokenizer_path
    return load_tokenizer_path(cfg.model.tokenizer_path or cfg.model.hf_path)


def build_engine(cfg, model, mesh, stop_ids: Sequence[int], pad_id: int, out_dir: str, rules=None):
    """The rollout engine of ``rollout.engine``: the in-process JAX sampler or a vLLM server (started here
    from ``model.hf_path`` or an export of the preset's random init, or attached at ``rollout.vllm.url``)."""
    r = cfg.rollout
    if r.engine == "jax":
        from rlvr_jax.rollout.jax_sampler import JaxSampler
        rows = int(cfg.train.prompt_batch_size) * int(r.n)
        j = r.get("jax") or {}
        sched = dict(scheduler=j["scheduler"], decode_steps=int(j["decode_steps"]),
                     refill_rows=int(j["refill_rows"]) or None) if j else {}
        return JaxSampler(model, pad_id=pad_id, eos_token_ids=stop_ids, max_batch_size=min(rows, 256),
                          max_prompt_len=int(cfg.data.max_prompt_len),
                          max_new_tokens_limit=int(r.max_new_tokens), mesh=mesh, rules=rules, **sched)
    from rlvr_jax.rollout.vllm_engine import VLLMEngine
    from rlvr_jax.rollout.vllm_launch import engine_options  # the same options as `python -m ...vllm_launch`
    if r.vllm.url:
        return VLLMEngine(**engine_options(cfg, out_dir, None))
    from rlvr_jax.models import save_hf
    init_dir = cfg.model.hf_path
    if not init_dir:  # a preset model: export its random init so the server starts from the same weights
        init_dir = os.path.join(r.sync_dir or os.path.join(out_dir, "weights"), "init")
        if jax.process_index() == 0:
            save_hf(model, init_dir)
            if cfg.model.tokenizer_path:
                load_tokenizer(cfg).save_pretrained(init_dir)
    return VLLMEngine(**engine_options(cfg, out_dir, init_dir))


def encode_dataset(ds, cfg, tokenizer) -> tuple[list, list[list[int]], int]:
    """Problems whose prompt fits ``data.max_prompt_len`` and their token ids; returns the number dropped."""
    from rlvr_jax.data.templates import encode_fitting
    keep, ids, dropped = encode_fitting(ds, cfg.data.template, tokenizer, int(cfg.data.max_prompt_len),
                                        name=getattr(ds, "name", None) or str(cfg.data.train))
    if not keep:
        raise ValueError(f"no prompt of {cfg.data.train!r} fits data.max_prompt_len={cfg.data.max_prompt_len}")
    return keep, ids, dropped


def sampling_params(cfg, stop_ids, step: int) -> SamplingParams:
    """Batch ``step``'s sampling parameters; the seed is a function of (train.seed, step) only."""
    r = cfg.rollout
    return SamplingParams(temperature=float(r.temperature), top_p=float(r.top_p), top_k=int(r.top_k),
                          max_new_tokens=int(r.max_new_tokens), stop_token_ids=tuple(stop_ids),
                          seed=int(cfg.train.seed) * STEP_SEED_STRIDE + step)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """Everything one training run uses, built by :func:`setup`; the last three fields change per step."""

    cfg: Any
    batching: Any                  # validate_config's resolved batch sizes
    is_main: bool
    out_dir: str
    tokenizer: Any
    stop_ids: tuple
    pad_id: int
    problems: list                 # the training problems whose prompt fits, and their token ids
    prompt_ids: list
    dropped_prompts: int
    eval_sets: list                # [(name, problems, prompt ids)]
    model_cfg: Any
    learner: Learner
    engine: Any
    pool: Any                      # the grader pool
    ckpt: Checkpointer
    writer: MetricsWriter
    sampler: Any                   # the resumable prompt order
    pipe: RolloutPipeline
    progress: Progress | None = None
    start: int = 0                 # the first step of this call (> 0 after a resume)
    nonfinite_run: int = 0         # consecutive skipped (non-finite) updates
    behaviour: Any = None          # off-policy: parameters of the version that generated the next batch
    phases: Any = None             # algo.schedule's phases (rlvr_jax.config.schedule), None without one
    phase_cfgs: Any = None         # one config per phase
    phase: int = -1                # the phase the learner's objective is set to (rl_step.activate_phase)

    @property
    def off_policy(self) -> int:
        return int(self.cfg.train.off_policy_steps)

    @property
    def total_steps(self) -> int:
        return int(self.cfg.train.total_steps)


def checkpoint_dir(cfg) -> str:
    """``checkpoint.dir``, default ``<out_dir>/checkpoints``."""
    return cfg.checkpoint.dir or os.path.join(cfg.logging.out_dir, "checkpoints")


def _start(cfg):
    """Distributed start-up, validation, the output directory and its config.json; returns the batching."""
    from rlvr_jax.sharding import initialize_distributed
    d = cfg.distributed
    initialize_distributed(d.coordinator or None, d.num_processes if d.num_processes > 0 else None,
                           d.process_id if d.process_id >= 0 else None)
    batching = validate_config(cfg, check_files=True, num_devices=jax.device_count())
    fault_point("startup", 0)
    os.makedirs(cfg.logging.out_dir, exist_ok=True)
    plain = as_plain(cfg)
    # Only the same run is resumed (a differing checkpoint stops here, before anything is built or written).
    check_same_run(cfg, plain, checkpoint_dir(cfg), cfg.logging.out_dir, jax.process_index() == 0)
    if jax.process_index() == 0:
        with open(os.path.join(cfg.logging.out_dir, "config.json"), "w") as f:
            json.dump(plain, f, indent=1, sort_keys=True)
    return batching


def _data(cfg, tokenizer, batching):
    """(problems, prompt ids, dropped count, prompt sampler, eval sets) of the config's datasets."""
    from rlvr_jax.data import PromptSampler, load_dataset
    from rlvr_jax.data.datasets import resolve_data_dir
    data_dir = resolve_data_dir(cfg.data.data_dir)
    problems, prompt_ids, dropped = encode_dataset(load_dataset(cfg.data.train, data_dir), cfg, tokenizer)
    sampler = PromptSampler(len(problems), batching.prompt_batch_size, seed=int(cfg.train.seed),
                            shuffle=bool(cfg.train.shuffle))
    eval_sets = []
    if cfg.logging.eval_every > 0:
        for name in cfg.logging.eval_datasets:
            eds = load_dataset(name, data_dir).take(int(cfg.logging.eval_n))
            ep, eids, _ = encode_dataset(eds, cfg, tokenizer)
            eval_sets.append((name, ep, eids))
    return problems, prompt_ids, dropped, sampler, eval_sets


def setup(cfg, stack: contextlib.ExitStack, tokenizer=None) -> Run:
    """Validates ``cfg``, builds the components (each closed by ``stack``), enters the mesh's sharding rules
    for the whole run (``stack`` leaves them) and resumes from the newest good checkpoint."""
    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.rewards import GraderPool
    from rlvr_jax.models import build_model
    from rlvr_jax.sharding import config_rules, make_mesh, use_rules

    batching = _start(cfg)
    is_main, out_dir = jax.process_index() == 0, cfg.logging.out_dir
    mesh = make_mesh(resolve_mesh_shape(cfg.mesh.shape, jax.device_count()))
    rules = config_rules(cfg)
    stack.enter_context(use_rules(rules))  # activations follow the same rules as parameters and batches
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
    stop_ids = tuple(stop_token_ids(tokenizer))
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids or (0,))[0])
    check_prompt_budget(cfg, tokenizer)
    problems, prompt_ids, dropped, sampler, eval_sets = _data(cfg, tokenizer, batching)

    model, model_cfg = build_model(cfg, mesh, rules)
    critic_backbone = clone_model(model) if cfg.algo.adv_estimator == "gae" else None
    total_updates = int(cfg.train.total_steps) * batching.updates_per_step
    from rlvr_jax.config.schedule import phase_configs, phases_of
    phases, phase_cfgs = phases_of(cfg), phase_configs(cfg)  # [cfg] without algo.schedule
    learner = Learner(model, LearnerOptions.from_config(phase_cfgs[0], total_updates), mesh, rules,
                      critic_backbone=critic_backbone)
    engine = build_engine(cfg, clone_model(model) if cfg.rollout.engine == "jax" else model, mesh, stop_ids,
                          pad_id, out_dir, rules)
    stack.callback(engine.close)
    pool = GraderPool(int(cfg.data.grade_workers), float(cfg.data.grade_timeout_s),
                      reward_format=cfg.data.reward_format)
    stack.callback(pool.close)
    ckpt = Checkpointer(checkpoint_dir(cfg), int(cfg.checkpoint.keep),
                        int(cfg.checkpoint.every))
    stack.callback(ckpt.close)
    writer = MetricsWriter(out_dir, bool(cfg.logging.jsonl), bool(cfg.logging.tensorboard), is_main)
    stack.callback(writer.close)
    pipe = RolloutPipeline(engine, sampler, prompt_ids, batching.n, lambda s: sampling_params(cfg, stop_ids, s),
                           int(cfg.train.off_policy_steps), background=cfg.rollout.engine == "vllm")
    stack.callback(pipe.close)
    run = Run(cfg, batching, is_main, out_dir, tokenizer, stop_ids, pad_id, problems, prompt_ids, dropped,
              eval_sets, model_cfg, learner, engine, pool, ckpt, writer, sampler, pipe, phases=phases,
              phase_cfgs=phase_cfgs, phase=0)
    resume(run)
    run.progress = Progress(run.total_steps, run.start, enabled=bool(cfg.logging.progress) and is_main)
    stack.callback(run.progress.close)
    return run


# ------------------------------------------------------------------------------------------------
# Checkpoint state, resume and save
# ------------------------------------------------------------------------------------------------
def checkpoint_state(run: Run) -> dict:
    """The checkpointed arrays: the learner's state and, off-policy, the behaviour parameters."""
    s = run.learner.train_state()
    if run.off_policy:
        s = dict(s, behaviour_params=(run.behaviour if run.behaviour is not None
                                      else run.learner.policy.state["params"]))
    return s


def resume(run: Run) -> None:
    """Restores the newest good checkpoint (``checkpoint.resume``) or initialises from ``checkpoint.init_from``,
    and brings the engine to the weights of the version that generates the first batch."""
    cfg, learner, pipe = run.cfg, run.learner, run.pipe
    restored = run.ckpt.restore_newest_good(checkpoint_state(run)) if cfg.checkpoint.resume else None
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
        run.sampler.load_state_dict(meta["data_position"])
        run.start, run.nonfinite_run = int(meta["step"]), int(meta.get("nonfinite_in_a_row", 0))
        if run.off_policy:  # batch `start` is regenerated by the version before it, as in the uninterrupted run
            run.behaviour = state["behaviour_params"]
            pipe.sync(learner.policy.module(run.behaviour), run.start - 1)
        else:
            pipe.sync(learner.policy_model(), run.start)
        if run.is_main:
            print(f"[train] resumed from step {run.start} in {run.ckpt.directory}", flush=True)
    if run.writer.resume_at(run.start) and run.is_main:
        print(f"[train] dropped {run.writer.dropped_lines} metrics.jsonl line(s) logged after step {run.start}",
              flush=True)
    if pipe.engine_version is None:
        if cfg.rollout.engine == "vllm" and cfg.rollout.vllm.url:  # an attached server may hold any weights
            pipe.sync(learner.policy_model(), 0)
        else:
            pipe.engine_version = 0  # the engine was built from the initial weights


def save(run: Run, step_done: int, force: bool) -> bool:
    """Checkpoints the state after ``step_done`` steps (every ``checkpoint.every`` steps, or now if ``force``)."""
    meta = {"data_position": run.pipe.data_position(step_done), "nonfinite_in_a_row": run.nonfinite_run,
            "rng": {"seed": int(run.cfg.train.seed), "step": step_done}, "config": as_plain(run.cfg)}
    fault_point("save", step_done)
    saved = run.ckpt.save(step_done, checkpoint_state(run), meta, force=force)
    fault_point("saved", step_done)
    return saved
