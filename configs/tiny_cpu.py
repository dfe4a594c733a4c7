"""A tiny random model that trains on CPU in seconds: `--config=configs/tiny_cpu.py:nsr` picks the algorithm.

The algorithm string is any of rlvr_jax.config.presets.ALGORITHMS (default grpo); append `,vllm` to use the
vLLM server engine instead of the in-process JAX sampler (e.g. `configs/tiny_cpu.py:nsr,vllm`).
"""
from rlvr_jax.config.presets import experiment


def get_config(arg: str = "grpo"):
    algo, _, engine = (arg or "grpo").partition(",")
    c = experiment(algo, "tiny")
    c.logging.out_dir = f"runs/tiny_{algo}"
    if engine:
        c.rollout.engine = engine
    return c
