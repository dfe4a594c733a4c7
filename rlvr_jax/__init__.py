"""rlvr_jax: reinforcement learning with verifiable rewards for LLMs in JAX/Flax."""

__version__ = "0.1.0"
