"""Rollout-learner mismatch metrics and correction (rlvr_jax.trainer.rollout_correction): hand-computed metrics, weights
and rejections; the learner with ``none`` is bit-identical to the learner without rollout log-probs, and
token_tis weights change the update exactly as weighting the tokens does; config validation."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.dirname(__file__))
from test_learner import CFG, _batch, _opts, _replicate  # noqa: E402

from rlvr_jax.batch import TrainBatch  # noqa: E402
from rlvr_jax.config import ConfigError, validate_config  # noqa: E402
from rlvr_jax.config.presets import experiment  # noqa: E402
from rlvr_jax.trainer.learner import Learner  # noqa: E402
from rlvr_jax.models import Decoder  # noqa: E402
from rlvr_jax.rollout.base import Completion  # noqa: E402
from rlvr_jax.trainer.rollout_correction import (apply_correction, mismatch_metrics, rollout_logp_array,  # noqa: E402
                                         seq_mask_keep, token_tis_weights)
from rlvr_jax.sharding import make_mesh  # noqa: E402

# Two sequences: row 0 has 3 tokens, row 1 has 2 (one pad).
OLD = np.array([[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]], np.float32)
ROLL = np.array([[-1.0, -2.5, -0.1], [-1.2, -3.0, 9.0]], np.float32)  # pad entry is garbage on purpose
MASK = np.array([[1, 1, 1], [1, 1, 0]], np.float32)


def test_mismatch_metrics_by_hand():
    lr = [0.0, 0.5, -0.4, 1.0, 0.0]  # old - rollout at the 5 valid tokens
    m = mismatch_metrics(OLD, ROLL, MASK, cap=2.0)
    rho = np.exp(lr)
    assert m["rollout_corr/kl"] == pytest.approx(-np.mean(lr))
    assert m["rollout_corr/k3_kl"] == pytest.approx(np.mean(rho - 1 - np.asarray(lr)))
    assert m["rollout_corr/chi2_token"] == pytest.approx(np.mean(rho ** 2) - 1)
    assert m["rollout_corr/rollout_is_mean"] == pytest.approx(rho.mean())
    assert m["rollout_corr/rollout_is_max"] == pytest.approx(np.e) and m["rollout_corr/rollout_is_min"] == \
        pytest.approx(np.exp(-0.4))
    assert m["rollout_corr/rollout_is_ratio_fraction_high"] == pytest.approx(1 / 5)  # e > 2
    assert m["rollout_corr/rollout_is_ratio_fraction_low"] == 0.0  # exp(-0.4) = 0.67 > 1/2
    ppl_old = np.mean([np.exp(3.5 / 3), np.exp(3.2 / 2)])
    assert m["rollout_corr/training_ppl"] == pytest.approx(ppl_old)
    assert m["rollout_corr/rollout_ppl"] == pytest.approx(np.mean([np.exp(3.6 / 3), np.exp(4.2 / 2)]))
    assert m["rollout_corr/log_ppl_abs_diff"] == pytest.approx(np.mean([0.1 / 3, 0.5]))
    pd = np.abs(np.exp([-1.0, -2.0, -0.5, -0.2, -3.0]) - np.exp([-1.0, -2.5, -0.1, -1.2, -3.0]))
    assert m["rollout_corr/probs_diff_mean"] == pytest.approx(pd.mean(), rel=1e-6)
    assert m["rollout_corr/probs_diff_max"] == pytest.approx(pd.max(), rel=1e-6)
    same = mismatch_metrics(OLD, OLD, MASK)
    assert same["rollout_corr/kl"] == 0 and same["rollout_corr/k3_kl"] == 0 and same["rollout_corr/chi2_token"] == 0


def test_weights_and_rejection_by_hand():
    w = token_tis_weights(OLD, ROLL, MASK, cap=2.0)
    np.testing.assert_allclose(w, [[1.0, np.exp(0.5), np.exp(-0.4)], [2.0, 1.0, 0.0]], rtol=1e-6)
    # geometric means: row 0 exp(0.1/3) (kept for any C > 1.034), row 1 exp(0.5) = 1.65
    assert seq_mask_keep(OLD, ROLL, MASK, cap=2.0).tolist() == [True, True]
    assert seq_mask_keep(OLD, ROLL, MASK, cap=1.5).tolist() == [True, False]
    assert seq_mask_keep(OLD, ROLL, MASK, cap=1.01).tolist() == [False, False]
    assert seq_mask_keep(ROLL * MASK, OLD * MASK, MASK, cap=1.5).tolist() == [True, False]  # 1/g below 1/C
    comps = [Completion(0, 0, [5, 6, 7], list(ROLL[0]), "length"), Completion(0, 1, [8, 9], list(ROLL[1, :2]), "stop")]
    np.testing.assert_array_equal(rollout_logp_array(comps, (2, 4)), np.concatenate(
        [ROLL * MASK, np.zeros((2, 1), np.float32)], axis=1))


def test_apply_correction_modes():
    base = TrainBatch(prompt_ids=None, prompt_mask=None, response_ids=None, response_mask=MASK, old_logp=OLD)
    b, _ = apply_correction(base, ROLL, "none", 2.0)
    assert b is base and b.response_mask is MASK
    b, _ = apply_correction(base, ROLL, "token_tis", 2.0)
    np.testing.assert_array_equal(b.rollout_is_weights, token_tis_weights(OLD, ROLL, MASK, 2.0))
    b, m = apply_correction(base, ROLL, "seq_mask", 1.5)
    np.testing.assert_array_equal(b.response_mask, [[1, 1, 1], [0, 0, 0]])
    assert m["rollout_corr/rollout_rs_masked_fraction"] == 0.5 and b.rollout_is_weights is None
    np.testing.assert_array_equal(MASK, [[1, 1, 1], [1, 1, 0]])  # the caller's mask is not modified
    with pytest.raises(ValueError, match="token_tis"):
        apply_correction(base, ROLL, "tis", 2.0)


def _fresh_update(lr, init):
    """Resets ``lr`` to the state ``init`` and updates on ``batch``: (params, metrics)."""
    def go(batch):
        lr.policy.state = jax.tree.map(jnp.copy, init)
        m = lr.update(batch)
        return jax.tree.map(np.asarray, lr.policy.state["params"]), m
    return go


def test_learner_none_is_bit_identical_and_weights_act_per_token():
    """``none`` (no weight key) and all-one weights give bit-identical updates (x * 1.0 is exact); zero weights
    on a row equal masking that row's policy-gradient term, i.e. the update of a batch whose advantages are 0
    there (the entropy bonus still acts on it in both)."""
    rng = np.random.default_rng(3)
    batch = _batch(rng, n=8)
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:1])
    lr = Learner(_replicate(Decoder(CFG, rngs=nnx.Rngs(0)), mesh), _opts(), mesh)
    batch = batch.replace(old_logp=lr.compute_logprobs(batch)[0] - 0.05 * batch.response_mask)
    _updated_params = _fresh_update(lr, jax.tree.map(jnp.copy, lr.policy.state))
    plain, m0 = _updated_params(batch)
    b_none, _ = apply_correction(batch, batch.old_logp + 0.3 * batch.response_mask, "none", 2.0)
    ones = batch.replace(rollout_is_weights=batch.response_mask.astype(np.float32))
    for b in (b_none, ones):
        p, m = _updated_params(b)
        for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(p)):
            np.testing.assert_array_equal(x, y)
        assert m["actor/loss"] == m0["actor/loss"]
    w = batch.response_mask.copy()
    w[:4] = 0.0
    zero_adv = batch.replace(advantages=batch.advantages * (w != 0))
    pw, mw = _updated_params(batch.replace(rollout_is_weights=w))
    pz, mz = _updated_params(zero_adv)
    for x, y in zip(jax.tree.leaves(pw), jax.tree.leaves(pz)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert mw["actor/loss"] == pytest.approx(mz["actor/loss"], rel=1e-6)
    assert max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(pw), jax.tree.leaves(plain))) > 1e-5


def test_config_validation():
    c = experiment("grpo", "tiny")
    assert c.algo.rollout_correction == "none" and c.algo.rollout_correction_cap == 2.0
    c.algo.rollout_correction = "tis"
    with pytest.raises(ConfigError) as e:
        validate_config(c, check_files=False, num_devices=8)
    assert e.value.field == "algo.rollout_correction" and "token_tis" in str(e.value)
    c.algo.rollout_correction = "seq_mask"
    c.algo.rollout_correction_cap = 1.0
    with pytest.raises(ConfigError) as e:
        validate_config(c, check_files=False, num_devices=8)
    assert e.value.field == "algo.rollout_correction_cap"
