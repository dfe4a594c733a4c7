"""Toy probability-mass bandit: Algorithm 1 of "The Debate on RLVR Reasoning Capability Boundary"
(Sec. 3.2, Appendix C.1), for grpo, grpo_n, psr, nsr and w_reinforce.

A softmax policy pi = softmax(z) over V actions with fixed rewards r. Each step samples G actions
a_1..a_G ~ pi, gives each a (weighted) advantage A_i, and forms the relative policy gradient of Algorithm 1

    g[a_i] += (1 - pi[a_i]) A_i,    g[a_j] -= pi[a_j] A_i  (j != a_i),   i.e.  g = sum_i A_i (e_{a_i} - pi),

then updates z <- z + lr * g / G ('sgd') or takes an Adam step on the loss gradient -g / G ('adam').

Advantages per algorithm (this is the precise choice made here):
  grpo         A_i = r(a_i) - mean_j r(a_j)                         (group-relative, Algorithm 1)
  grpo_n       A_i = (r(a_i) - mean_j r(a_j)) * 1[A_i < 0]          (relative negatives only, Sec. 4)
  psr          A_i = +1 if r(a_i) > 0 else 0                        (NSR paper: raw reward R = +1 for correct
  nsr          A_i = -1 if r(a_i) <= 0 else 0                        answers (r > 0), R = -1 otherwise, no
  w_reinforce  A_i = lam if r(a_i) > 0 else -1                       baseline; PSR keeps R = +1, NSR R = -1)

Expected mode (--expected) replaces the sampled g / G by its exact expectation, Theorem 1:

    E[g / G]_v = pi_v [ (1 - pi_v) Abar(v) - sum_{u != v} pi_u Abar(u) ],
    Abar(v) = E[A_1 | a_1 = v],

where the expectation over the other G - 1 samples of the group is computed exactly by enumerating their
multinomial counts (for grpo, Abar(v) = (G - 1)/G (r(v) - E_pi r)). The run is then deterministic.

CLI: python -m rlvr_jax.toy --algo grpo,grpo_n --steps 300 --out runs/toy   (--demo runs all five algorithms)
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from rlvr_jax.objectives.closed_form import expected_logit_update

ALGOS = ("grpo", "grpo_n", "psr", "nsr", "w_reinforce")
OPTIMIZERS = ("sgd", "adam")
# The paper's toy (Sec. 3.2): a1 explored with positive reward, a2 rarely sampled with a higher reward,
# a3 explored with zero reward; G = 2, lr = 0.1. pi_0 = softmax(DEFAULT_INIT_LOGITS) ~ [0.60, 0.05, 0.35].
DEFAULT_REWARDS = (1.0, 1.5, 0.0)
DEFAULT_INIT_LOGITS = (math.log(0.60), math.log(0.05), math.log(0.35))


def algo_spec(algo: str, lam: float = 0.1) -> np.ndarray:
    """[relative, pos_weight, neg_weight] of ``algo`` (see module docstring)."""
    specs = {
        "grpo": (1.0, 1.0, 1.0),
        "grpo_n": (1.0, 0.0, 1.0),
        "psr": (0.0, 1.0, 0.0),
        "nsr": (0.0, 0.0, 1.0),
        "w_reinforce": (0.0, lam, 1.0),
    }
    if algo not in specs:
        raise ValueError(f"unknown toy algorithm {algo!r}; expected one of {ALGOS}")
    return np.asarray(specs[algo], np.float64)


def _weighted_advantage(r_self, group_mean, spec):
    """A for a sample with reward r_self in a group with mean reward group_mean, under spec."""
    relative, w_pos, w_neg = spec[0], spec[1], spec[2]
    raw = jnp.where(relative > 0, r_self - group_mean, jnp.where(r_self > 0, 1.0, -1.0))
    return jnp.where(raw > 0, w_pos * raw, jnp.where(raw < 0, w_neg * raw, 0.0))


def sampled_gradient(pi, actions, rewards, spec):
    """Algorithm 1's relative policy gradient g = sum_i A_i (e_{a_i} - pi) for sampled actions [G]."""
    r = rewards[actions]
    adv = _weighted_advantage(r, jnp.mean(r), spec)
    onehot = jax.nn.one_hot(actions, pi.shape[-1], dtype=pi.dtype)
    return jnp.sum(adv[:, None] * (onehot - pi[None, :]), axis=0)


def group_compositions(others: int, num_actions: int) -> np.ndarray:
    """All count vectors m in N^V with sum(m) = others ([M, V]), the outcomes of the other G - 1 samples."""
    rows = []
    for bars in itertools.combinations(range(others + num_actions - 1), num_actions - 1):
        edges = (-1,) + bars + (others + num_actions - 1,)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(num_actions)])
    return np.asarray(rows, np.int64).reshape(-1, num_actions)


def expected_advantages(pi, rewards, spec, group: int):
    """Abar(v) = E[A_1 | a_1 = v] by exact enumeration over the other G - 1 samples' counts ([V])."""
    v = pi.shape[-1]
    comps = group_compositions(group - 1, v)
    log_coef = (math.lgamma(group) - np.sum([[math.lgamma(x + 1) for x in row] for row in comps], axis=1))
    counts = jnp.asarray(comps, pi.dtype)
    logp = jnp.asarray(log_coef, pi.dtype) + counts @ jnp.log(jnp.maximum(pi, 1e-300))
    prob = jnp.where(jnp.sum(counts, 1) == 0, 1.0, jnp.exp(logp))  # [M]
    other_sum = counts @ rewards  # [M]
    means = (rewards[:, None] + other_sum[None, :]) / group  # [V, M]
    adv = _weighted_advantage(rewards[:, None], means, spec)
    return jnp.sum(adv * prob[None, :], axis=1)


def expected_gradient(pi, rewards, spec, group: int):
    """E[g / G] = Theorem 1 with Abar (see module docstring)."""
    return expected_logit_update(pi, expected_advantages(pi, rewards, spec, group))


@partial(jax.jit, static_argnames=("steps", "group", "optimizer", "expected"))
def _simulate(z0, rewards, spec, lr, keys, *, steps: int, group: int, optimizer: str, expected: bool):
    """pi trajectories [S, steps + 1, V] for PRNG keys [S]."""
    opt = optax.adam(lr) if optimizer == "adam" else optax.sgd(lr)

    def one(key):
        def step(carry, k):
            z, opt_state = carry
            pi = jax.nn.softmax(z)
            if expected:
                g = expected_gradient(pi, rewards, spec, group)
            else:
                actions = jax.random.categorical(k, z, shape=(group,))
                g = sampled_gradient(pi, actions, rewards, spec) / group
            updates, opt_state = opt.update(-g, opt_state, z)
            z = optax.apply_updates(z, updates)
            return (z, opt_state), jax.nn.softmax(z)

        _, pis = jax.lax.scan(step, (z0, opt.init(z0)), jax.random.split(key, steps))
        return jnp.concatenate([jax.nn.softmax(z0)[None], pis], axis=0)

    return jax.vmap(one)(keys)


def run_toy_seeds(algo: str = "grpo", *, steps: int = 2500, lr: float = 0.1, group: int = 2,
                  init_logits=DEFAULT_INIT_LOGITS, rewards=DEFAULT_REWARDS, seeds=(0,), optimizer: str = "sgd",
                  expected: bool = False, lam: float = 0.1) -> np.ndarray:
    """Trajectories of pi for several seeds in one compiled call: array [len(seeds), steps + 1, V]."""
    z0 = np.asarray(init_logits, np.float64)
    r = np.asarray(rewards, np.float64)
    if z0.ndim != 1 or z0.shape != r.shape or z0.size < 2:
        raise ValueError(f"init_logits {tuple(z0)} and rewards {tuple(r)} must be equal-length lists of >= 2 values")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if steps < 0 or group < 1 or lr <= 0:
        raise ValueError(f"need steps >= 0, group >= 1, lr > 0; got steps={steps}, group={group}, lr={lr}")
    dtype = jnp.zeros(()).dtype  # float64 only under jax_enable_x64
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(np.asarray(seeds, np.int64) % (2**31), jnp.int32))
    out = _simulate(jnp.asarray(z0, dtype), jnp.asarray(r, dtype), jnp.asarray(algo_spec(algo, lam), dtype),
                    jnp.asarray(lr, dtype), keys, steps=int(steps), group=int(group), optimizer=optimizer,
                    expected=bool(expected))
    return np.asarray(out)


def run_toy(algo: str = "grpo", *, seed: int = 0, **kwargs) -> np.ndarray:
    """Trajectory of pi for one run: array [steps + 1, V], row 0 the initial policy."""
    return run_toy_seeds(algo, seeds=(seed,), **kwargs)[0]


def write_trajectory_csv(path: str, traj: np.ndarray) -> None:
    """CSV with header step,pi_0,...,pi_{V-1} and one row per step (row 0 = initial policy)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [f"pi_{v}" for v in range(traj.shape[1])])
        for step, row in enumerate(traj):
            w.writerow([step] + [f"{p:.8g}" for p in row])


def plot_trajectories(path: str, trajs: dict[str, np.ndarray], rewards, title: str = "") -> None:
    """One panel per algorithm with pi(a_v) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(trajs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False, sharey=True)
    for ax, (algo, traj) in zip(axes.flat, trajs.items()):
        for v in range(traj.shape[1]):
            ax.plot(np.arange(traj.shape[0]), traj[:, v], label=f"$a_{v + 1}$ (r={rewards[v]:g})")
        ax.set_title(algo)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel(r"$\pi(a)$")
    axes[0, 0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _float_list(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--{name} must be a comma-separated list of numbers, got {text!r}") from None


def make_flags() -> flags.FlagValues:
    """The CLI's flags, in their own FlagValues so importing this module never touches absl's global FLAGS."""
    fv = flags.FlagValues()
    flags.DEFINE_string("algo", "grpo", f"comma-separated list from {ALGOS}", flag_values=fv)
    flags.DEFINE_integer("steps", 2500, "optimisation steps", flag_values=fv)
    flags.DEFINE_float("lr", 0.1, "learning rate eta", flag_values=fv)
    flags.DEFINE_integer("group", 2, "actions sampled per step (G)", flag_values=fv)
    flags.DEFINE_string("init_logits", ",".join(f"{x:.6f}" for x in DEFAULT_INIT_LOGITS),
                        "comma-separated initial logits z", flag_values=fv)
    flags.DEFINE_string("rewards", ",".join(f"{x:g}" for x in DEFAULT_REWARDS), "comma-separated rewards r",
                        flag_values=fv)
    flags.DEFINE_float("lam", 0.1, "W-REINFORCE weight on positive samples", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "PRNG seed of the sampled actions", flag_values=fv)
    flags.DEFINE_enum("optimizer", "sgd", list(OPTIMIZERS), "z += lr g/G (sgd) or an Adam step on -g/G",
                      flag_values=fv)
    flags.DEFINE_bool("expected", False, "use the exact expected update (Theorem 1): deterministic",
                      flag_values=fv)
    flags.DEFINE_bool("demo", False, "run all five algorithms (grpo, grpo_n, psr, nsr, w_reinforce)",
                      flag_values=fv)
    flags.DEFINE_string("out", "runs/toy", "output directory", flag_values=fv)
    return fv


def run_cli(algos, *, out: str, steps: int, lr: float, group: int, init_logits, rewards, lam: float, seed: int,
            optimizer: str, expected: bool) -> dict[str, np.ndarray]:
    """Runs the algorithms and writes the CSV(s), the PNG and config.json under ``out``."""
    os.makedirs(out, exist_ok=True)
    trajs = {}
    for algo in algos:
        trajs[algo] = run_toy(algo, seed=seed, steps=steps, lr=lr, group=group, init_logits=init_logits,
                              rewards=rewards, optimizer=optimizer, expected=expected, lam=lam)
        if len(algos) == 1:
            write_trajectory_csv(os.path.join(out, "trajectory.csv"), trajs[algo])
        else:
            os.makedirs(os.path.join(out, algo), exist_ok=True)
            write_trajectory_csv(os.path.join(out, algo, "trajectory.csv"), trajs[algo])
    mode = "expected update (Theorem 1)" if expected else f"sampled, seed {seed}"
    title = f"toy bandit: G={group}, lr={lr:g}, {optimizer}, {mode}"
    png = "probabilities.png" if len(algos) == 1 else "comparison.png"
    plot_trajectories(os.path.join(out, png), trajs, rewards, title)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(algos=list(algos), steps=steps, lr=lr, group=group, init_logits=list(init_logits),
                       rewards=list(rewards), lam=lam, seed=seed, optimizer=optimizer, expected=expected,
                       final_pi={a: t[-1].tolist() for a, t in trajs.items()}), f, indent=1)
    return trajs


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    fv = make_flags()
    if any(a in ("-h", "--help", "-help") for a in argv[1:]):
        print(__doc__)
        print(fv.get_help())
        return 0
    fv(argv)
    algos = list(ALGOS) if fv.demo else [a.strip() for a in fv.algo.split(",") if a.strip()]
    for a in algos:
        algo_spec(a)  # validates the name
    trajs = run_cli(algos, out=fv.out, steps=fv.steps, lr=fv.lr, group=fv.group,
                    init_logits=_float_list(fv.init_logits, "init_logits"),
                    rewards=_float_list(fv.rewards, "rewards"), lam=fv.lam, seed=fv.seed,
                    optimizer=fv.optimizer, expected=fv.expected)
    for algo, t in trajs.items():
        fmt = lambda row: "[" + ", ".join(f"{p:.3f}" for p in row) + "]"  # noqa: E731
        print(f"{algo:12s} pi_0={fmt(t[0])} pi_final={fmt(t[-1])}")
    print(f"wrote {fv.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
