"""GRPO on Llama-3.2-3B-Instruct: the two-stage paper's Appendix C.2 (KL 1e-3 in the loss, entropy 1e-4, 4k)."""
from rlvr_jax.config.presets import experiment


def get_config():
    return experiment("grpo", "llama32")
