"""The embedded default: a tiny CPU testbed (Countdown puzzles, a warm-started tiny Qwen3, PSR / NSR /
W-REINFORCE / GRPO with the real trainer, pass@k evaluation). Entry point: ``python -m rlvr_jax.demo``."""
