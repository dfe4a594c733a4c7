"""grpo_gated on qwen3: the NSR paper's Qwen3-4B setup with the grpo_gated remedy preset (docs/objectives.md "Remedies");
see rlvr_jax/config/presets.py."""
from rlvr_jax.config.presets import experiment


def get_config():
    return experiment("grpo_gated", "qwen3")
