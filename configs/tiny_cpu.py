"""A tiny random model that trains on CPU in seconds: `--config=configs/tiny_cpu.py:nsr` picks the algorithm.

The algorithm is any of rlvr_jax.config.presets.ALGORITHMS (ppo, grpo, psr, nsr, w_reinforce, reinforce, dapo,
gspo, grpo_n, gspo_n, and the remedies grpo_unlikely, grpo_gated, nsr_gated, simko; default grpo) or a scheduled
algorithm of presets.SCHEDULES (nsr_warmup) with its preset; append `,vllm` to use the vLLM server engine instead
of the in-process JAX sampler (e.g. `configs/tiny_cpu.py:nsr,vllm`). The tokenizer is the built-in byte-level
one (`model.tokenizer_path="builtin:bytes"`, rlvr_jax.data.byte_tokenizer), so only the data directory is needed.
"""
from rlvr_jax.config.presets import experiment


def get_config(arg: str = "grpo"):
    algo, _, engine = (arg or "grpo").partition(",")
    c = experiment(algo, "tiny")
    c.logging.out_dir = f"runs/tiny_{algo}"
    if engine:
        c.rollout.engine = engine
    return c
