"""simko on qwen3: the NSR paper's Qwen3-4B setup with the simko remedy preset (docs/objectives.md "Remedies");
see rlvr_jax/config/presets.py."""
from rlvr_jax.config.presets import experiment


def get_config():
    return experiment("simko", "qwen3")
