"""The testbed / demo settings: ``python -m rlvr_jax.demo --config=configs/demo.py:<mode>``.

Modes: ``demo`` (default, ``make demo``: one seed), ``quick`` (the CI mode), ``study`` (seeds 0, 1, 2),
``sweep`` (the settings ``--sweep prior`` uses; its base strengths are ``sweep.warmstart_steps``), ``bases``
(bases as seeds: 3 warm starts, every method, exact evaluation). Every field is
overridable, e.g. ``--config.lr=1e-4 --config.warmstart.steps=600 --config.sweep.warmstart_steps=100,300,900``.
The defaults live in rlvr_jax.testbed (ExperimentConfig, WarmStartConfig, SweepConfig); docs/testbed.md says why.
"""
from rlvr_jax.testbed.config import get_config as _get_config


def get_config(arg: str = "demo"):
    return _get_config(arg or "demo")
