"""One tiny training run for the preemption tests, in this process or as a subprocess.

``python tests/faults/preempt_job.py OUT DATA_DIR TOKENIZER_DIR`` runs :func:`tiny_config` (faults come from the
``RLVR_FAULT_AT`` environment variable, see rlvr_jax/faults.py); the exit status is 0 when the run finished or
stopped cleanly.
"""
import os
import sys

TOTAL_STEPS = 3


def tiny_config(out, data_dir, tok_dir, total_steps=TOTAL_STEPS):
    from rlvr_jax.config.presets import experiment
    c = experiment("nsr", "tiny")  # a random policy: every reward is -1, so NSR updates every token
    c.data.data_dir = str(data_dir)
    c.model.tokenizer_path = str(tok_dir)
    c.logging.out_dir = str(out)
    c.logging.progress = False
    c.logging.tensorboard = True  # the tiny preset turns it off; the tests check its points
    c.logging.eval_every = 0
    c.rollout.n = 4
    c.rollout.max_new_tokens = 8
    c.data.max_prompt_len = 160
    c.train.prompt_batch_size = 2
    c.train.mini_batch_size = 1
    c.train.micro_batch_size = 8
    c.train.total_steps = int(total_steps)
    c.checkpoint.every = 1
    c.checkpoint.keep = 5
    return c


def main(argv):
    from rlvr_jax.train import run
    res = run(tiny_config(*argv[1:4]))
    print(f"[preempt_job] steps_done={res.steps_done} preempted={res.preempted}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    main(sys.argv)
