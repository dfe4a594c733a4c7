"""gspo_n on Qwen3-4B (non-thinking); hyper-parameters of the two-stage paper's Appendix C.2 (presets.py)."""
from rlvr_jax.config.presets import experiment


def get_config():
    return experiment("gspo_n", "qwen3")
