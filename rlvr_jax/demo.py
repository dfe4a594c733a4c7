"""``make demo``: the project's main job on its embedded default.

Until the tiny CPU testbed lands (issue 7), the embedded default is the toy probability-mass bandit of the
two-stage dynamics paper (Algorithm 1): all five algorithms, sampled and expected updates, with their plots.
"""
from __future__ import annotations

import argparse
import os
import sys

from rlvr_jax import toy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo", help="report directory")
    args = p.parse_args(argv)
    toy.main(["toy", "--demo", "--out", os.path.join(args.out, "toy_sampled")])
    toy.main(["toy", "--demo", "--expected", "--out", os.path.join(args.out, "toy_expected")])
    print(f"demo report: {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
