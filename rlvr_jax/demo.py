"""``make demo``: the embedded default, the tiny CPU testbed (:mod:`rlvr_jax.testbed`, docs/testbed.md).

Warm-starts a tiny Qwen3 on Countdown puzzles whose answers write out their arithmetic (or reuses
``<out>/warmstart``), trains it with PSR, NSR, W-REINFORCE, GRPO and GRPO-N through the real trainer,
evaluates pass@k (n=64) on held-out puzzles and writes ``<out>/report``. Commands::

    python -m rlvr_jax.demo                          # make demo: one seed -> runs/demo/report
    python -m rlvr_jax.demo --quick --out DIR        # the CI mode (tests/test_testbed.py)
    python -m rlvr_jax.demo --seeds 0,1,2            # the 3-seed study
    python -m rlvr_jax.demo --sweep prior            # the prior-strength sweep -> <out>/sweep/report
    python -m rlvr_jax.demo --config=configs/demo.py:study --config.lr=1e-4   # any field, ConfigDict style
    python -m rlvr_jax.demo --toy                    # the two-stage paper's toy bandit instead

Settings are the ConfigDict of :mod:`rlvr_jax.testbed.config` (``configs/demo.py:<mode>`` with ``mode`` one of
demo, quick, study, sweep); ``--quick`` / ``--seeds`` / ``--out`` / ``--warm_dir`` are shortcuts applied on top.
Compiled XLA programs are cached under ``<out>/.jax_cache`` (``--nocompile_cache`` turns that off). Console
script: ``rlvr-demo = rlvr_jax.demo:cli``.
"""
from __future__ import annotations

import dataclasses
import os

from absl import flags

FLAGS = flags.FLAGS


def enable_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in ``path``, for every program (they are all small here)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def define_flags() -> None:
    """The demo's flags (idempotent: a second call, e.g. from a test importing the module, is a no-op)."""
    if "quick" in FLAGS:
        return
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "testbed config, configs/demo.py[:demo|quick|study|sweep]",
                                    lock_config=True)
    flags.DEFINE_bool("quick", False, "CI mode: shorter warm start, RL and evaluation (= configs/demo.py:quick)")
    flags.DEFINE_enum("sweep", None, ["prior"], "run the prior-strength sweep instead of one experiment")
    flags.DEFINE_string("seeds", None, "comma-separated RL / evaluation seeds, e.g. 0,1,2")
    flags.DEFINE_string("out", "runs/demo", "output directory (report in <out>/report)")
    flags.DEFINE_string("warm_dir", None, "existing warm-start directory (default <out>/warmstart)")
    flags.DEFINE_bool("compile_cache", True, "cache compiled XLA programs under <out>/.jax_cache")
    flags.DEFINE_bool("toy", False, "run the toy bandit demo instead")


def resolve(config, quick: bool, seeds: str | None, out: str, warm_dir: str | None):
    """``(ExperimentConfig, SweepConfig)`` from the ``--config`` dict (or the default mode) and the shortcut
    flags; a :class:`rlvr_jax.config.validate.ConfigError` names a bad field before anything runs."""
    from rlvr_jax.config.validate import ConfigError
    from rlvr_jax.testbed.config import from_config, get_config

    if config is not None and quick:
        raise ConfigError("quick", "--quick picks a config itself; use --config=configs/demo.py:quick instead")
    exp, sweep = from_config(config if config is not None else get_config("quick" if quick else "demo"))
    kw = dict(out_dir=out, warm_dir=warm_dir or os.path.join(out, "warmstart"))
    if seeds:
        try:
            kw["seeds"] = tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise ConfigError("seeds", f"expected comma-separated integers, got {seeds!r}") from None
    return dataclasses.replace(exp, **kw), sweep


def main(argv):
    """The CLI's job (the toy bandit, the prior sweep or one experiment); returns the closing summary."""
    del argv
    from rlvr_jax.cli import Summary
    from rlvr_jax.cli.outputs import demo_summary
    if FLAGS.toy:
        from rlvr_jax import toy

        toy.main(["toy", "--demo", "--out", os.path.join(FLAGS.out, "toy_sampled")])
        toy.main(["toy", "--demo", "--expected", "--out", os.path.join(FLAGS.out, "toy_expected")])
        s = Summary(f"toy demo done in {FLAGS.out}")
        for d in ("toy_sampled", "toy_expected"):
            s.add(f"{d} plot", os.path.join(FLAGS.out, d, "comparison.png"))
        return s
    exp, sweep = resolve(FLAGS.config, FLAGS.quick, FLAGS.seeds, FLAGS.out, FLAGS.warm_dir)
    if FLAGS.compile_cache:
        enable_compilation_cache(os.path.join(FLAGS.out, ".jax_cache"))
    if FLAGS.sweep == "prior":
        from rlvr_jax.testbed.sweep import run_sweep

        run_sweep(exp, sweep)
        return demo_summary(FLAGS.out, os.path.join(FLAGS.out, "sweep", "report"), "demo sweep done")
    from rlvr_jax.testbed.experiment import run_experiment

    run_experiment(exp)
    return demo_summary(FLAGS.out, os.path.join(FLAGS.out, "report"), "demo done", exp.warm_dir)


def cli() -> None:
    """Console-script entry point (``rlvr-demo``): defines the flags and runs :func:`main` through
    :func:`rlvr_jax.cli.run_cli` (quiet logs, ``<out>/log.txt``, the summary, ``--help`` with the fields)."""
    from rlvr_jax.cli import HelpConfig, run_cli
    from rlvr_jax.config.overrides import exit_on_unknown_overrides
    from rlvr_jax.testbed.config import get_config

    exit_on_unknown_overrides()
    define_flags()
    run_cli(main, usage=__doc__, log_path=lambda: os.path.join(FLAGS.out, "log.txt"),
            help_config=HelpConfig(lambda: get_config("demo"), comments_from=(get_config,),
                                   label="configs/demo.py:demo"))


if __name__ == "__main__":
    cli()
