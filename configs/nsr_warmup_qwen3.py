"""nsr_warmup on qwen3: the NSR paper's Qwen3-4B setup with the nsr_warmup remedy preset (docs/objectives.md "Remedies");
see rlvr_jax/config/presets.py."""
from rlvr_jax.config.presets import experiment


def get_config():
    return experiment("nsr_warmup", "qwen3")
