"""The toy bandit (Algorithm 1 of the two-stage paper): the expected mode against Theorem 1 and a brute-force
enumeration of the sampled update, the sampled mode's average against the expected update, and the CLI outputs."""
import contextlib
import csv
import itertools
import math

import jax
import numpy as np
import pytest

from rlvr_jax import toy
from rlvr_jax.objectives.closed_form import expected_logit_update


@contextlib.contextmanager
def x64():
    """float64 inside the block only (restores the previous setting)."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


def brute_force_expected_step(pi, rewards, algo, group, lam=0.1):
    """E[g / G] by enumerating all V^G ordered groups of Algorithm 1 (plain Python floats)."""
    v = len(pi)
    spec = toy.algo_spec(algo, lam)
    out = np.zeros(v)
    for actions in itertools.product(range(v), repeat=group):
        prob = math.prod(pi[a] for a in actions)
        mean = sum(rewards[a] for a in actions) / group
        for a in actions:
            raw = rewards[a] - mean if spec[0] else (1.0 if rewards[a] > 0 else -1.0)
            adv = spec[1] * raw if raw > 0 else (spec[2] * raw if raw < 0 else 0.0)
            out += prob * adv * (np.eye(v)[a] - pi) / group
    return out


@pytest.mark.parametrize("group", [2, 3])
def test_expected_mode_is_theorem1_and_exact_expectation(group):
    z0 = np.array(toy.DEFAULT_INIT_LOGITS)
    r = np.array(toy.DEFAULT_REWARDS)
    lr = 0.1
    for algo in toy.ALGOS:
        traj = toy.run_toy(algo, steps=1, lr=lr, group=group, expected=True, optimizer="sgd")
        traj2 = toy.run_toy(algo, steps=1, lr=lr, group=group, expected=True, optimizer="sgd", seed=123)
        assert np.array_equal(traj, traj2)  # deterministic, seed-independent
        pi0 = np.exp(z0) / np.exp(z0).sum()
        step = brute_force_expected_step(pi0, r, algo, group)
        z1 = z0 + lr * step
        np.testing.assert_allclose(traj[1], np.exp(z1) / np.exp(z1).sum(), rtol=2e-6, err_msg=algo)
        # Theorem 1 with the per-action expected advantage, in float64.
        with x64():
            abar = np.asarray(toy.expected_advantages(np.asarray(pi0), np.asarray(r), toy.algo_spec(algo), group))
            np.testing.assert_allclose(np.asarray(expected_logit_update(pi0, abar)), step, rtol=1e-12, atol=1e-15)
    # GRPO: Abar(v) = (G - 1)/G (r(v) - E_pi r).
    with x64():
        abar = np.asarray(toy.expected_advantages(pi0, r, toy.algo_spec("grpo"), group))
    np.testing.assert_allclose(abar, (group - 1) / group * (r - pi0 @ r), rtol=1e-12)


def test_sampled_mode_averages_to_expected_update():
    """One sampled sgd step from z0, averaged over 4000 seeds, is within 5 standard errors of E[dz]."""
    z0 = np.array(toy.DEFAULT_INIT_LOGITS)
    lr, seeds = 0.1, np.arange(4000)
    for algo in ("grpo", "grpo_n", "w_reinforce"):
        trajs = toy.run_toy_seeds(algo, steps=1, lr=lr, group=2, seeds=seeds, optimizer="sgd")
        dz = np.log(trajs[:, 1]) - np.log(trajs[:, 0])  # logit change up to a common shift
        dz -= dz.mean(axis=1, keepdims=True)
        want = lr * brute_force_expected_step(np.exp(z0) / np.exp(z0).sum(), toy.DEFAULT_REWARDS, algo, 2)
        want -= want.mean()
        se = dz.std(axis=0) / math.sqrt(len(seeds))
        assert np.all(np.abs(dz.mean(axis=0) - want) <= 5 * se + 1e-6), (algo, dz.mean(0), want, se)


def test_two_stage_dynamics_of_grpo_expected():
    """GRPO first exploits a1 (pi(a1) rises, a3 falls), then mass shifts to the better, rarely sampled a2."""
    traj = toy.run_toy("grpo", steps=2500, expected=True)
    peak = int(np.argmax(traj[:, 0]))
    assert traj[peak, 0] > 0.85 and 100 < peak < 1500
    assert traj[peak, 2] < 0.05 and traj[-1, 1] > 0.95
    assert traj[0, 1] < 0.06


def test_cli_writes_csv_and_png(tmp_path):
    out = tmp_path / "one"
    assert toy.main(["toy", "--algo", "nsr", "--steps", "20", "--out", str(out), "--rewards", "1,0,0,0.5",
                     "--init_logits", "0,0,1,-1"]) == 0
    with open(out / "trajectory.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "pi_0", "pi_1", "pi_2", "pi_3"]
    assert len(rows) == 22 and [r[0] for r in rows[1:3]] == ["0", "1"]
    pi0 = np.array([float(x) for x in rows[1][1:]])
    np.testing.assert_allclose(pi0, np.exp([0, 0, 1, -1]) / np.exp([0, 0, 1, -1]).sum(), rtol=1e-6)
    assert all(abs(sum(float(x) for x in r[1:]) - 1) < 1e-5 for r in rows[1:])
    assert (out / "probabilities.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    multi = tmp_path / "multi"
    assert toy.main(["toy", "--algo", "grpo,psr", "--steps", "5", "--expected", "--optimizer", "adam",
                     "--out", str(multi)]) == 0
    for algo in ("grpo", "psr"):
        assert (multi / algo / "trajectory.csv").exists()
    assert (multi / "comparison.png").stat().st_size > 1000


def test_invalid_arguments():
    with pytest.raises(ValueError, match="'ppo'"):
        toy.run_toy("ppo", steps=1)
    with pytest.raises(ValueError, match="init_logits"):
        toy.run_toy("grpo", steps=1, init_logits=(0.0, 1.0), rewards=(1.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="'rmsprop'"):
        toy.run_toy("grpo", steps=1, optimizer="rmsprop")
