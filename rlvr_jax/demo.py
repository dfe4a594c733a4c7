"""``make demo``: the embedded default, the tiny CPU testbed (:mod:`rlvr_jax.testbed`).

Warm-starts a tiny Qwen3 on Countdown puzzles (or reuses ``<out>/warmstart``), trains it with PSR, NSR,
W-REINFORCE and GRPO using the real trainer, evaluates pass@k (n=64) on held-out puzzles and writes
``<out>/report`` (pass_at_k.md / .png, training_curves.png, summary.md / .json). About 3-5 minutes on two
CPU cores; ``--quick`` (CI) about 1.5 minutes. Results and their caveats: docs/testbed.md. ``--toy`` runs the former default instead: the two-stage
dynamics paper's probability-mass bandit (:mod:`rlvr_jax.toy`).

Compiled XLA programs are cached under ``<out>/.jax_cache`` (the runs share shapes, so later runs skip
most compilation); ``--no_compile_cache`` turns that off.
"""
from __future__ import annotations

import argparse
import os
import sys


def enable_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in ``path``, for every program (they are all small here)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output directory (report in <out>/report)")
    p.add_argument("--quick", action="store_true", help="CI mode: shorter warm start, RL and evaluation")
    p.add_argument("--seeds", default="0", help="comma-separated RL / evaluation seeds, e.g. 0,1,2")
    p.add_argument("--warm_dir", default=None, help="existing warm-start directory (default <out>/warmstart)")
    p.add_argument("--no_compile_cache", action="store_true")
    p.add_argument("--toy", action="store_true", help="run the toy bandit demo instead")
    args = p.parse_args(argv)
    if args.toy:
        from rlvr_jax import toy

        toy.main(["toy", "--demo", "--out", os.path.join(args.out, "toy_sampled")])
        toy.main(["toy", "--demo", "--expected", "--out", os.path.join(args.out, "toy_expected")])
        print(f"demo report: {os.path.abspath(args.out)}")
        return 0
    if not args.no_compile_cache:
        enable_compilation_cache(os.path.join(args.out, ".jax_cache"))
    from rlvr_jax.testbed.experiment import ExperimentConfig, run_experiment

    kw = dict(out_dir=args.out, warm_dir=args.warm_dir or os.path.join(args.out, "warmstart"),
              seeds=tuple(int(s) for s in args.seeds.split(",")))
    cfg = ExperimentConfig.quick(**kw) if args.quick else ExperimentConfig(**kw)
    run_experiment(cfg)
    print(f"demo report: {os.path.abspath(os.path.join(args.out, 'report'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
