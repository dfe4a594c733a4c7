"""Child processes of tests/faults/test_faults_signals.py.

``python signal_job.py xla``: a PreemptionGuard around a compiled XLA loop of about a minute; prints ``ready``
first (the main thread is then inside XLA, where Python runs no signal handler).
``python signal_job.py train OUT DATA_DIR TOKENIZER_DIR``: the tiny run of preempt_job.py as PSR with long
generations (1,536 new tokens, ``decode_steps`` 32; step 0's capped at 8 tokens); one second into step 1's generation the process sends
itself SIGTERM and prints ``signal_sent_at=<time.time()>``.
"""
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def xla():
    import jax
    import jax.numpy as jnp

    from rlvr_jax.trainer.checkpointing import PreemptionGuard

    @jax.jit
    def spin(x):
        return jax.lax.fori_loop(0, 20_000_000, lambda i, v: jnp.sin(v) * 1.0000001 + 1e-9 * i, x)

    with PreemptionGuard():
        spin.lower(jnp.ones(16)).compile()
        print("ready", flush=True)
        spin(jnp.ones(16)).block_until_ready()
    print("the XLA loop finished", flush=True)


def train(out, data_dir, tok_dir):
    sys.path.insert(0, HERE)
    from preempt_job import tiny_config

    from rlvr_jax.rollout.jax_sampler import JaxSampler
    from rlvr_jax.rollout.stop import GenerationStopped
    from rlvr_jax.train import run

    from rlvr_jax.config.presets import set_algorithm
    c = tiny_config(out, data_dir, tok_dir, total_steps=3)
    set_algorithm(c, "psr")  # a random policy solves nothing: no update to compile, the step is quick
    c.rollout.max_new_tokens = 1536
    c.rollout.jax.decode_steps = 32
    c.logging.tensorboard = False
    inner, calls = JaxSampler.generate, []

    def generate(self, prompts, *a, **kw):
        calls.append(1)
        if len(calls) == 1:  # step 0: short (same compiled program), so the run reaches step 1 quickly
            kw["max_new_tokens_per_prompt"] = [8] * len(prompts)
        if len(calls) == 2:  # step 1's generation (step 0's was the first)
            def kill():
                time.sleep(1.0)
                print(f"signal_sent_at={time.time():.6f}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
            threading.Thread(target=kill, daemon=True).start()
        try:
            return inner(self, prompts, *a, **kw)
        except GenerationStopped:
            print(f"generation_stopped_at={time.time():.6f}", flush=True)  # cut short, not finished
            raise

    JaxSampler.generate = generate
    res = run(c)
    print(f"[signal_job] steps_done={res.steps_done} preempted={res.preempted}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    if sys.argv[1] == "xla":
        xla()
    else:
        train(*sys.argv[2:5])
