"""One tiny training run for the preemption tests, in this process or as a subprocess.

``python tests/faults/preempt_job.py OUT DATA_DIR TOKENIZER_DIR`` runs :func:`tiny_config` (faults come from the
``RLVR_FAULT_AT`` environment variable, see rlvr_jax/trainer/faults.py); the exit status is 0 when the run finished or
stopped cleanly.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOTAL_STEPS = 3


def tiny_config(out, data_dir, tok_dir, total_steps=TOTAL_STEPS):
    """``configs/tiny_cpu.py:nsr`` (a random policy: every reward is -1, so NSR updates every token) at the
    sizes of these tests, as ``--config.a.b=value`` overrides would set them."""
    from rlvr_jax.config.overrides import load_config_file
    c = load_config_file(os.path.join(ROOT, "configs", "tiny_cpu.py") + ":nsr")
    c.update_from_flattened_dict({
        "data.data_dir": str(data_dir), "model.tokenizer_path": str(tok_dir), "logging.out_dir": str(out),
        "logging.progress": False, "logging.tensorboard": True,  # the tiny preset turns it off; the tests read it
        "logging.eval_every": 0, "rollout.n": 4, "rollout.max_new_tokens": 8, "data.max_prompt_len": 160,
        "train.prompt_batch_size": 2, "train.mini_batch_size": 1, "train.micro_batch_size": 8,
        "train.total_steps": int(total_steps), "checkpoint.every": 1, "checkpoint.keep": 5})
    return c


def main(argv):
    from rlvr_jax.train import run
    res = run(tiny_config(*argv[1:4]))
    print(f"[preempt_job] steps_done={res.steps_done} preempted={res.preempted}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main(sys.argv)
