"""The RL trainer: ``python -m rlvr_jax.train --config=configs/nsr_qwen3.py [--config.a.b=value ...]``.

One RL step (verl's order; ``rlvr_jax.trainer.rl_step.rl_step`` marks each number on its line):
  1. sample ``prompt_batch_size`` prompts (resumable, seeded order) and generate ``rollout.n`` rollouts each
     with the configured engine (in-process JAX sampler or vLLM server);
  2. grade them (math equivalence / Reasoning Gym scorer in a worker pool) into rewards in {-1,+1} (or {0,1});
  3. old-policy (and reference) log-probs recomputed by the learner;
  4. advantages (``rlvr_jax.trainer.update_plan``): from correctness (PSR / NSR / W-REINFORCE / REINFORCE, +1 / -1
     whatever the reward format), group-normalised (GRPO, DAPO, GSPO, -N variants) or GAE on a critic (PPO,
     KL penalty folded into the reward, whitened over the batch with ``algo.whiten_advantages``);
     the rollout engine's own log-probs give the mismatch metrics ``rollout_corr/*`` and, with
     ``algo.rollout_correction``, truncated importance weights or rejected sequences (rlvr_jax.trainer.rollout_correction);
  5. the rows the objective learns from (``rlvr_jax.objectives.selection``: PSR the correct ones, NSR the
     incorrect ones), counted in ``train/kept_samples``; with ``algo.sample_selection="drop"`` only they enter
     the mini-batches (the NSR paper's released code), with ``"mask"`` all rows do;
  6. ``ppo_epochs`` passes over the mini-batches (``train.shuffle_minibatches``: permuted; the papers: not),
     one exact accumulated AdamW update each (``rlvr_jax.trainer.learner``), the critic first for PPO;
  7. weights synced to the engine; metrics (``rl_step.step_metrics``), held-out greedy evaluation and
     checkpoints (:func:`run`'s loop below).

Layout: ``rlvr_jax.trainer.run_setup.setup`` builds the components and resumes (a ``Run``), ``rlvr_jax.trainer.rl_step`` has the
phases and the metrics, this module the loop, the final export and the CLI; docs/architecture.md has the map.

Reproducibility: the prompt order, the sampling seed of step s and any mini-batch shuffles are functions of
(``train.seed``, s) only, and the data position, parameters and optimizer state are checkpointed, so a run
resumed from step s continues bit-identically. A first SIGTERM/SIGINT checkpoints the last completed step and
exits (a JAX-sampler generation in flight stops at its next compiled chunk), a second aborts at once.
Multi-host: every process runs the same loop on the same host data (identical seeds); arrays are global over
the mesh; process 0 writes logs, all processes take part in (orbax) checkpointing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

from rlvr_jax.rollout.stop import GenerationStopped
from rlvr_jax.trainer.checkpointing import PreemptionGuard, atomic_directory
from rlvr_jax.trainer.faults import fault_point
from rlvr_jax.trainer.rl_step import NonFiniteError, evaluate, held_out_eval, rl_step  # noqa: F401  (re-exported)
from rlvr_jax.trainer.run_setup import (STEP_SEED_STRIDE, Run, build_engine, clone_model,  # noqa: F401
                                encode_dataset, load_tokenizer, sampling_params, save, setup)
from rlvr_jax.trainer.update_plan import minibatch_rows  # noqa: F401  (re-exported for tests)


@dataclasses.dataclass
class RunResult:
    steps_done: int
    out_dir: str
    last_metrics: dict
    preempted: bool
    final_export: str | None


def run(cfg, *, tokenizer=None, guard: PreemptionGuard | None = None, stop_after: int | None = None) -> RunResult:
    """Trains per ``cfg`` (validated first). ``stop_after``: return after this many steps of this call (as if
    preempted, with a checkpoint) - used by tests and for chunked jobs. Without ``guard`` a
    :class:`PreemptionGuard` is installed before any start-up work."""
    if guard is not None:
        return _run(cfg, tokenizer=tokenizer, guard=guard, stop_after=stop_after)
    with PreemptionGuard() as own:
        return _run(cfg, tokenizer=tokenizer, guard=own, stop_after=stop_after)


def _run(cfg, *, tokenizer, guard: PreemptionGuard, stop_after: int | None) -> RunResult:
    with contextlib.ExitStack() as stack:  # the one teardown: every component setup() built, in reverse
        run_ = setup(cfg, stack, tokenizer)
        step, metrics = run_.start, {}
        preempted = guard.requested_anywhere()  # a signal during start-up: stop before any step (nothing to save)
        while step < run_.total_steps and not preempted:
            try:
                metrics = rl_step(run_, step).metrics  # steps 1.-7. of the module docstring
            except GenerationStopped:  # a signal cut its generation short: the step is redone on resume
                metrics, preempted = {}, True
                break
            step += 1
            if run_.eval_sets and step % int(cfg.logging.eval_every) == 0:
                with contextlib.suppress(GenerationStopped):  # a stop skips the held-out evaluation
                    metrics.update(evaluate(run_, step))
            if step % int(cfg.logging.every) == 0 or step == run_.total_steps:
                run_.writer.write(step, metrics)
            run_.progress.update(metrics)
            save(run_, step, force=False)
            if guard.requested_anywhere() or (stop_after is not None and step - run_.start >= stop_after):
                preempted = step < run_.total_steps
                break
        if step > run_.start:  # nothing to save when stopped during start-up
            save(run_, step, force=True)
        final = export_final(run_, step) if not preempted and cfg.train.export_final else None
        return RunResult(step, run_.out_dir, metrics, preempted, final)


def export_final(run_: Run, step: int) -> str:
    """The final policy as a Hugging Face directory ``<out_dir>/final_hf`` (atomic: a kill leaves the old
    export or none, never half of one), with the tokenizer when the run has one on disk."""
    from rlvr_jax.models import save_hf
    cfg = run_.cfg
    final = os.path.join(run_.out_dir, "final_hf")
    fault_point("export", step)
    with atomic_directory(final, run_.is_main) as tmp:
        save_hf(run_.learner.policy_model(), tmp, source_dir=cfg.model.hf_path or None)
        if run_.is_main and (cfg.model.tokenizer_path or cfg.model.hf_path):
            run_.tokenizer.save_pretrained(tmp)
    return final


def main(argv):
    """The CLI's job: announces the run, trains, returns the closing summary (printed by ``run_cli``)."""
    del argv
    from absl import flags

    from rlvr_jax.cli.outputs import train_summary
    from rlvr_jax.config import validate_config
    cfg = flags.FLAGS.config
    validate_config(cfg, check_files=True)  # a bad value: one line before anything is announced (run() checks
    #                                         the mesh against the devices after the distributed start-up)
    print(f"[train] {cfg.algo.name} on {cfg.data.train}: {int(cfg.train.total_steps)} steps, {cfg.rollout.engine} "
          f"rollouts -> {cfg.logging.out_dir}", flush=True)
    result = run(cfg)
    return train_summary(cfg, result.steps_done, result.last_metrics, result.preempted, result.final_export)


def _log_path() -> str:
    """``<out_dir>/log.txt`` (``log.<i>.txt`` on process i > 0 of a multi-process run)."""
    from absl import flags
    cfg = flags.FLAGS.config
    pid = int(cfg.distributed.process_id)
    return os.path.join(cfg.logging.out_dir, "log.txt" if pid <= 0 else f"log.{pid}.txt")


def cli() -> None:
    """The ``rlvr-train`` console script and ``python -m rlvr_jax.train``: ``--config=configs/x.py`` plus
    ``--config.a.b=value`` overrides (a misspelled field names the valid ones, before any start-up); ``--help``
    lists every field with its default; rlvr_jax.cli adds ``--log_level``, the log file and the summary."""
    from absl import flags
    from ml_collections import config_flags

    from rlvr_jax.cli import HelpConfig, run_cli
    from rlvr_jax.config.base import get_base_config
    from rlvr_jax.config.overrides import exit_on_unknown_overrides
    exit_on_unknown_overrides()
    config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:arg])",
                                    lock_config=True)
    flags.mark_flags_as_required(["config"])
    run_cli(main, usage=__doc__.split("\n\n")[0], log_path=_log_path,
            help_config=HelpConfig(get_base_config, comments_from=(get_base_config,)))


if __name__ == "__main__":
    cli()
