"""The evaluator's config: `python -m rlvr_jax.evaluate --config=configs/eval.py:qwen3 --config.checkpoint=...`.

The argument is a sampling preset (qwen25math: n=256, T=0.6, top-p 0.95; qwen3: n=64, T=0.7, top-p 0.8, top-k 20)
or empty for the defaults; every field is listed in rlvr_jax/evaluation/cli_config.py.
"""
from rlvr_jax.evaluation.cli_config import get_config  # noqa: F401
