"""The RL step's phases (rlvr_jax.trainer.rl_step) on a tiny run: each produces what the next consumes; the phase timer;
the typed batch helpers; PPO's value clip (algo.value_clip) against a hand computation."""
import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_train import tiny  # noqa: E402  (env: the shared fixture in conftest.py)

from rlvr_jax.trainer import rl_step as phases  # noqa: E402
from rlvr_jax.batch import TrainBatch, micro_batches, pack_sequences, pad_rows, take_rows, token_mean  # noqa: E402
from rlvr_jax.config import ConfigError, validate_config  # noqa: E402
from rlvr_jax.config.presets import experiment  # noqa: E402
from rlvr_jax.trainer.learner import LearnerOptions, value_loss  # noqa: E402
from rlvr_jax.trainer.run_setup import setup  # noqa: E402


def test_phase_timer_names_accumulation_and_exceptions():
    t = phases.PhaseTimer()
    with t("reward"):
        pass
    t.add("gen", 1.5)
    t.add("gen", 0.25)
    with pytest.raises(KeyError):
        with t("adv"):
            raise KeyError("boom")  # a phase that fails is still timed
    assert list(t.seconds) == ["reward", "gen", "adv"]
    assert t.seconds["gen"] == 1.75 and t.seconds["reward"] >= 0 and t.seconds["adv"] >= 0
    assert t.metrics() == {"timing_s/reward": t.seconds["reward"], "timing_s/gen": 1.75,
                           "timing_s/adv": t.seconds["adv"]}


def test_train_batch_helpers():
    b = pack_sequences([[5, 6, 7], [9], [4, 4]], [[10, 11], [12, 13, 14], [1]], length_bucket=4, pad_id=2)
    assert b.prompt_ids.tolist() == [[2, 5, 6, 7], [2, 2, 2, 9], [2, 2, 4, 4]]
    assert b.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    b = b.replace(advantages=np.arange(12, dtype=np.float32).reshape(3, 4))
    t = take_rows(b, [2, 0])
    assert t.prompt_ids.tolist() == [[2, 2, 4, 4], [2, 5, 6, 7]] and t.advantages[0].tolist() == [8, 9, 10, 11]
    assert t.old_logp is None  # unset fields stay unset
    p = pad_rows(b, 4)  # one inert row: masks 0 except one pad prompt token, advantages 0
    assert p.num_rows == 4 and p.response_mask[3].sum() == 0 and p.prompt_mask[3].tolist() == [0, 0, 0, 1]
    assert p.advantages[3].tolist() == [0, 0, 0, 0] and p.prompt_ids[3].tolist() == [0, 0, 0, 0]
    mbs = micro_batches(b, 2)
    assert [m.num_rows for m in mbs] == [2, 2] and mbs[1].response_mask[1].sum() == 0
    assert b.only("advantages").advantages is b.advantages and b.only().advantages is None
    assert token_mean(b.advantages, b.response_mask) == pytest.approx((0 + 1 + 4 + 5 + 6 + 8) / 6)
    d = TrainBatch.of({"prompt_ids": 1, "prompt_mask": 2, "response_ids": 3, "response_mask": 4})
    assert d.response_mask == 4 and d.returns is None
    with pytest.raises(KeyError, match="advantage"):
        TrainBatch.of({"prompt_ids": 1, "prompt_mask": 2, "response_ids": 3, "response_mask": 4, "advantage": 0})
    leaves = jax.tree.leaves(b)  # a pytree: only the set fields are leaves
    assert len(leaves) == 5


def test_value_loss_against_hand_computation():
    """c = 0.5, V_old = 0: token 0 unclipped branch (V-G)^2 = 0.25; token 1 clipped branch
    (0 + clip(1, +-0.5) - 1)^2 = 0.25 > (1-1)^2 = 0; token 2 unclipped (-1-1)^2 = 4 > (-0.5-1)^2; token 3 masked."""
    v = jnp.array([[1.0, 1.0, -1.0, 7.0]])
    old = jnp.zeros((1, 4))
    g = jnp.array([[0.5, 1.0, 1.0, -3.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    s, m = value_loss(v, old, g, mask, 0.5)
    assert float(s) == pytest.approx(0.5 * (0.25 + 0.25 + 4.0))
    assert float(m["vf_clipfrac"]) == 1.0 and float(m["n_tokens"]) == 3.0 and float(m["vpred"]) == 1.0
    # d/dV: the active branch's (V - G) where unclipped, 0 where the clipped branch is saturated
    grad = jax.grad(lambda x: value_loss(x, old, g, mask, 0.5)[0])(v)
    np.testing.assert_allclose(grad, [[0.5, 0.0, -2.0, 0.0]])
    # c = 0: the unclipped loss 0.5 (V - G)^2, no clipped token
    s0, m0 = value_loss(v, old, g, mask, 0.0)
    assert float(s0) == pytest.approx(0.5 * (0.25 + 0.0 + 4.0)) and float(m0["vf_clipfrac"]) == 0.0
    # a wide clip never binds: the same as unclipped
    assert float(value_loss(v, old, g, mask, 10.0)[0]) == pytest.approx(float(s0))


def test_value_clip_config_field():
    cfg = experiment("ppo", "tiny")
    assert cfg.algo.value_clip == 0.5
    cfg.algo.value_clip = 0.2
    assert LearnerOptions.from_config(cfg, 1).value_clip == 0.2
    cfg.algo.value_clip = -1.0
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert e.value.field == "algo.value_clip"


def test_phases_feed_each_other_on_a_tiny_run(env, tmp_path):  # noqa: F811
    """psr on 2 prompts x 4 rollouts: rollout -> reward -> old_logprobs -> advantages -> update -> sync, each
    checked against the learner / grader / selection rule it stands for."""
    cfg = tiny(env, "psr", tmp_path / "phases", total_steps=1)
    with contextlib.ExitStack() as stack:
        run = setup(cfg, stack, env["tok"])
        assert run.start == 0 and run.pipe.engine_version == 0
        t = phases.PhaseTimer()
        ro = phases.rollout(run, 0, t)
        assert len(ro.comps) == 8 and ro.rb.version == 0 and {"gen", "gen_exposed", "gen_hidden"} <= set(t.seconds)
        graded = phases.reward(run, ro, 0, t)
        assert graded.rewards.shape == (8,) and graded.correct.dtype == bool
        np.testing.assert_array_equal(graded.rewards > 0, graded.correct)
        batch, ent = phases.old_logprobs(run, ro, 0, t)
        assert batch.num_rows == 8 and batch.advantages is None and batch.ref_logp is None  # psr: no reference
        lengths = [len(c.token_ids) for c in ro.comps]
        assert batch.response_mask.sum(axis=1).tolist() == lengths
        np.testing.assert_array_equal(batch.old_logp, run.learner.compute_logprobs(batch)[0])
        batch, kept, extra = phases.advantages(run, batch, graded, ro, t)
        np.testing.assert_array_equal(batch.advantages, np.where(graded.correct, 1.0, -1.0)[:, None]
                                      * batch.response_mask)
        np.testing.assert_array_equal(kept, graded.correct & (batch.response_mask.sum(axis=1) > 0))
        assert "rollout_corr/kl" in extra and "critic/advantages/mean" in extra
        before = jax.tree.map(np.asarray, run.learner.policy.state["params"])
        upd = phases.update(run, batch, kept, 0, t)
        assert len(upd.actor) == (0 if not kept.any() else -(-int(kept.sum()) // 4)) and upd.critic == []
        moved = max(float(np.abs(a - np.asarray(b)).max()) for a, b in
                    zip(jax.tree.leaves(before), jax.tree.leaves(run.learner.policy.state["params"])))
        assert (moved > 0) == bool(upd.actor)
        phases.sync(run, 0, t)
        assert run.pipe.engine_version == 1
        assert list(t.seconds) == ["gen", "gen_exposed", "gen_hidden", "reward", "old_log_prob", "adv",
                                   "update_actor", "sync_weights"]
        res = phases.rl_step(run, 1)  # the whole step, as the trainer runs it
        assert res.step == 1 and res.batch.advantages is not None
        assert res.metrics["train/kept_samples"] == int(kept_rows_of(res.batch)) and "timing_s/step" in res.metrics


def kept_rows_of(batch: TrainBatch) -> int:
    return int(((batch.advantages > 0) & (batch.response_mask != 0)).any(axis=1).sum())


def test_train_module_defines_no_flags_and_cli_parses_the_command_line():
    """Importing rlvr_jax.train defines no absl flag (cli() does); ``python -m rlvr_jax.train`` goes through
    cli(): a misspelled override is refused before any start-up, naming the field."""
    import subprocess

    from absl import flags

    import rlvr_jax.train as train
    assert "config" not in flags.FLAGS and callable(train.cli)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-m", "rlvr_jax.train", "--config=configs/tiny_cpu.py:nsr",
                        "--config.algo.value_clipp=0.3"], cwd=root, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=root))
    assert p.returncode != 0 and "value_clipp" in p.stdout + p.stderr, p.stdout + p.stderr
