"""The trainer's parts; the loop and its CLI are :mod:`rlvr_jax.train` (``python -m rlvr_jax.train``).

* :mod:`.run_setup`: start-up (validation, mesh, sharding rules, tokenizer, data, model, learner, engine, grader
  pool, checkpointer, writer, rollout pipeline) and resume: a ``Run``;
* :mod:`.rl_step`: one RL step as named, timed phases (rollout, reward, old log-probs, advantages, update, sync)
  and its metrics;
* :mod:`.learner`, :mod:`.trainable`, :mod:`.update_plan`: policy / critic log-probs and updates, exact
  micro-batch accumulation and AdamW, a step's advantages, sample selection and mini-batches;
* :mod:`.offpolicy`, :mod:`.rollout_correction`: one-step off-policy rollouts; the rollout-learner mismatch and
  its correction;
* :mod:`.checkpointing`, :mod:`.integrity`, :mod:`.faults`, :mod:`.logging_utils`: orbax checkpoints with
  checksums and SIGTERM handling; deterministic fault injection; JSONL / TensorBoard / progress.

Nothing here is imported by the model, rollout, rewards or data packages: they are the trainer's inputs.
"""
