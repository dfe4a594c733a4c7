"""The tiny CPU testbed's RL config (rlvr_jax.testbed): ``--config=configs/testbed.py:nsr[,WARM_DIR]``.

The algorithm is one of psr, nsr, w_reinforce, grpo, grpo_n (any rlvr_jax.config.presets setup works); WARM_DIR
is the warm-start directory (default runs/testbed/warmstart), made by
``python -m rlvr_jax.testbed.warmstart --out runs/testbed/warmstart``. ``make demo`` builds the same configs
(rlvr_jax.testbed.experiment.rl_config, with the sizes of configs/demo.py) for all five and evaluates them.
"""
from rlvr_jax.testbed.experiment import rl_config


def get_config(arg: str = "nsr"):
    algo, _, warm_dir = (arg or "nsr").partition(",")
    return rl_config(algo, warm_dir or "runs/testbed/warmstart", f"runs/testbed/train_{algo}")
