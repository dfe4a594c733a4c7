"""w_reinforce on qwen3: the NSR paper's setup (Sec. 3.1, Appendix D.1); see rlvr_jax/config/presets.py."""
from rlvr_jax.config.presets import experiment


def get_config():
    return experiment("w_reinforce", "qwen3")
