"""Sample selection: "drop" (the NSR paper's released trainer removes the rows PSR / NSR do not learn from) against
an independent reference that removes the rows by hand and runs the plain token-mean loss; "mask" (Eq. 3/4
literally) and the factor f between them; updates per step from the kept rows; both reward formats."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rlvr_jax.config.presets import experiment, preset_hparams
from rlvr_jax.batch import TrainBatch  # noqa: E402
from rlvr_jax.trainer.learner import (Learner, LearnerOptions, make_optimizer, make_schedule, pack_sequences, pad_rows,
                              sequence_logprobs, take_rows)
from rlvr_jax.models import Decoder, get_preset
from rlvr_jax.objectives import get_objective, kept_rows, loss_denominator
from rlvr_jax.objectives.advantages import correctness_advantages
from rlvr_jax.sharding import make_mesh
from rlvr_jax.trainer.update_plan import (bucket_rows, compute_advantages, drop_minibatch_rows, minibatch_rows,
                                  num_updates_per_epoch)

EPS, ENT = 0.2, 1e-3


def _ref_token_mean_loss(logp, old_logp, ent, mask, adv, rows):
    """Independent reference: keep ``rows`` (numpy fancy indexing), then
    L = (1/|K|) sum_{i in rows, t} m [ -min(r A, clip(r, 1-eps, 1+eps) A) - c H ]."""
    lp, old, h, m, a = logp[rows], old_logp[rows], ent[rows], mask[rows], adv[rows]
    r = jnp.exp(lp - old)
    surrogate = jnp.minimum(r * a, jnp.clip(r, 1 - EPS, 1 + EPS) * a)
    per_tok = -surrogate - ENT * h
    return jnp.sum(per_tok * m) / jnp.sum(m)


def _toy(seed, b=12, t=6, v=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, t, v))
    y = rng.integers(0, v, size=(b, t))
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float64)
    old = np.take_along_axis(jax.nn.log_softmax(z), y[..., None], -1)[..., 0] + rng.normal(size=(b, t)) * 0.3
    correct = rng.random(b) < 0.4
    return z, y, mask, old, correct


def _logp_ent(z, y):
    lsm = jax.nn.log_softmax(z)
    return jnp.take_along_axis(lsm, y[..., None], -1)[..., 0], -jnp.sum(jnp.exp(lsm) * lsm, -1)


@pytest.mark.usefixtures("float64_module")
@pytest.mark.parametrize("algo", ["psr", "nsr"])
def test_drop_equals_rows_removed_by_hand_then_plain_token_mean(algo):
    """float64, a softmax policy with free logits: the trainer's drop path (correctness advantages -> kept_rows ->
    drop_minibatch_rows -> objective -> loss_sum / denominator) has the reference's loss and gradient on every
    mini-batch, and the mini-batches are ceil(kept / rows per mini-batch)."""
    z, y, mask, old, correct = _toy(3)
    n, mb_rows = 3, 3  # 4 prompts x 3 rollouts; mini-batches of 1 prompt's worth of rows
    adv = np.asarray(correctness_advantages(correct, mask))
    kept = kept_rows(algo, adv, mask)
    np.testing.assert_array_equal(kept, correct if algo == "psr" else ~correct)
    mbs = drop_minibatch_rows(kept, n, mb_rows, None)
    assert len(mbs) == math.ceil(kept.sum() / mb_rows) >= 2
    np.testing.assert_array_equal(np.concatenate(mbs), np.flatnonzero(kept))
    hp = preset_hparams(algo).replace(entropy_coef=ENT, log_ratio_clamp=None)
    assert hp.agg_mode == "token-mean" and hp.eps_high == EPS
    for rows in mbs:
        def ours(zz):
            lp, h = _logp_ent(zz[rows], y[rows])
            b = dict(logp=lp, old_logp=jnp.asarray(old[rows]), entropy=h, mask=jnp.asarray(mask[rows]),
                     advantages=jnp.asarray(adv[rows]))
            out = get_objective(algo)(b, hp)
            return out.loss_sum / loss_denominator(mask[rows], hp.agg_mode, dtype=jnp.float64)

        def ref(zz):
            lp, h = _logp_ent(zz, y)
            return _ref_token_mean_loss(lp, jnp.asarray(old), h, jnp.asarray(mask), jnp.asarray(adv), rows)

        np.testing.assert_allclose(ours(jnp.asarray(z)), ref(jnp.asarray(z)), rtol=1e-13)
        np.testing.assert_allclose(jax.grad(ours)(jnp.asarray(z)), jax.grad(ref)(jnp.asarray(z)), rtol=1e-11,
                                   atol=1e-15)


@pytest.mark.usefixtures("float64_module")
def test_mask_is_eq3_literally_and_f_times_drop():
    """"mask": all rows in one mini-batch, PSR's surrogate over all valid tokens: the policy-gradient term is
    f = kept tokens / all tokens times drop's, and the entropy bonus reaches the dropped rows too."""
    z, y, mask, old, correct = _toy(5)
    adv = np.asarray(correctness_advantages(correct, mask))
    kept = kept_rows("psr", adv, mask)
    f = mask[kept].sum() / mask.sum()
    assert 0 < f < 1
    all_rows = minibatch_rows(4, 3, 1, None)[0]
    np.testing.assert_array_equal(all_rows, np.arange(12))

    def loss(zz, rows, ent_coef):
        hp = preset_hparams("psr").replace(entropy_coef=ent_coef, log_ratio_clamp=None)
        lp, h = _logp_ent(zz[rows], y[rows])
        b = dict(logp=lp, old_logp=jnp.asarray(old[rows]), entropy=h, mask=jnp.asarray(mask[rows]),
                 advantages=jnp.asarray(adv[rows]))
        out = get_objective("psr")(b, hp)
        return out.loss_sum / loss_denominator(mask[rows], "token-mean", dtype=jnp.float64)

    zz = jnp.asarray(z)
    g_mask = jax.grad(loss)(zz, all_rows, 0.0)
    g_drop = jax.grad(loss)(zz, np.flatnonzero(kept), 0.0)
    np.testing.assert_allclose(g_mask, f * g_drop, rtol=1e-12, atol=1e-16)
    # Eq. 3 literally, by hand: (1/|N|) sum_{kept} l_t - (c/|N|) sum_{all} H_t
    lp, h = _logp_ent(zz, y)
    r = jnp.exp(lp - old)
    pg = -jnp.minimum(r, jnp.clip(r, 1 - EPS, 1 + EPS))  # A = +1 on the kept rows
    literal = (jnp.sum(pg * mask * kept[:, None]) - ENT * jnp.sum(h * mask)) / mask.sum()
    np.testing.assert_allclose(loss(zz, all_rows, ENT), literal, rtol=1e-13)
    # the entropy bonus of "mask" has gradient on dropped rows, "drop"'s has none there
    g_ent_mask = jax.grad(loss)(zz, all_rows, ENT) - g_mask
    assert float(jnp.abs(g_ent_mask[~kept]).max()) > 1e-6
    g_ent_drop = jax.grad(loss)(zz, np.flatnonzero(kept), ENT) - g_drop
    assert float(jnp.abs(g_ent_drop[~kept]).max()) == 0.0


@pytest.mark.usefixtures("float64_module")
@pytest.mark.parametrize("algo", ["psr", "nsr", "w_reinforce", "reinforce"])
def test_reward_formats_give_identical_advantages_and_gradients(algo):
    z, y, mask, old, correct = _toy(7)
    grads = []
    for fmt, rewards in (("pm1", np.where(correct, 1.0, -1.0)), ("01", correct.astype(np.float64))):
        cfg = experiment(algo, "tiny")
        cfg.data.reward_format, cfg.rollout.n = fmt, 3
        b = TrainBatch(prompt_ids=None, prompt_mask=None, response_ids=None, response_mask=mask)
        adv = compute_advantages(cfg, rewards, correct, b, learner=None)[0].advantages
        hp = preset_hparams(algo).replace(entropy_coef=0.0)
        rows = np.flatnonzero(kept_rows(algo, adv, mask)) if cfg.algo.sample_selection == "drop" else np.arange(12)

        def loss(zz):
            lp, h = _logp_ent(zz[rows], y[rows])
            b = dict(logp=lp, old_logp=jnp.asarray(old[rows]), entropy=h, mask=jnp.asarray(mask[rows]),
                     advantages=jnp.asarray(adv[rows]))
            out = get_objective(algo)(b, hp)
            return out.loss_sum / out.denom
        grads.append(np.asarray(jax.grad(loss)(jnp.asarray(z))))
    assert np.abs(grads[0]).max() > 1e-3
    np.testing.assert_array_equal(grads[0], grads[1])
    # the released code's advantages: PSR +1 on correct, NSR -1 on incorrect, W-REINFORCE lambda / -1
    if algo == "w_reinforce":
        lp = jnp.asarray(np.take_along_axis(jax.nn.log_softmax(z), y[..., None], -1)[..., 0])
        r = jnp.exp(lp - old)
        a = np.where(correct, 0.1, -1.0)[:, None]

        def ref(zz):
            lp2, _ = _logp_ent(zz, y)
            rr = jnp.exp(lp2 - old)
            return jnp.sum(-jnp.minimum(rr * a, jnp.clip(rr, 1 - EPS, 1 + EPS) * a) * mask) / mask.sum()
        assert r.shape == mask.shape
        # the trainer stores advantages in float32, so lambda = 0.1 carries float32 rounding (1.5e-8 relative)
        np.testing.assert_allclose(grads[0], jax.grad(ref)(jnp.asarray(z)), rtol=1e-7, atol=1e-15)


def test_updates_per_step_follow_the_kept_rows():
    class B:  # Batching of 4 prompts x 4 rollouts, 2 mini-batches of 2 prompts (8 rows)
        prompt_batch_size, n, num_mini_batches, mini_batch_prompts = 4, 4, 2, 2
    kept = np.zeros(16, bool)
    for k, expected in ((0, 0), (1, 1), (8, 1), (9, 2), (16, 2)):
        kept[:] = False
        kept[np.random.default_rng(k).permutation(16)[:k]] = True
        mbs = drop_minibatch_rows(kept, 4, 8, None)
        assert len(mbs) == expected == num_updates_per_epoch("drop", k, B)
        assert num_updates_per_epoch("mask", k, B) == 2
        if mbs:
            assert [len(m) for m in mbs] == [8] * (k // 8) + ([k % 8] if k % 8 else [])
            np.testing.assert_array_equal(np.concatenate(mbs), np.flatnonzero(kept))
    # shape buckets of a drop mini-batch (micro-batches of 2, full mini-batch 16 rows = 8 micro-batches)
    assert [bucket_rows(k, 2, 16) for k in (1, 2, 3, 5, 8, 9, 16)] == [2, 2, 4, 8, 8, 16, 16]
    assert bucket_rows(7, 4, 10) == 8 and bucket_rows(9, 4, 10) == 12  # capped at the full mini-batch
    shuffled = drop_minibatch_rows(np.ones(16, bool), 4, 8, np.random.default_rng(0))
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(16))
    assert all(len(set(m // 4)) == 2 for m in shuffled)  # whole prompts stay together


# ---- the real learner (float32): one update on the drop mini-batch = the reference's update ----
CFG = get_preset("tiny-qwen3", dtype="float32")


def _replicated_model(mesh):
    model = Decoder(CFG, rngs=nnx.Rngs(0))
    nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(mesh, PartitionSpec())))
    return model


def test_learner_drop_update_equals_reference_update(micro=2, ndev=2):
    """PSR, 5 of 8 rows correct: the trainer's drop mini-batch through Learner.update (padded with zero-weight rows
    to the trainer's shape bucket, 4 micro-batches of 2 over a 2-device mesh: 5 rows -> 8) gives the parameters of a hand-written reference:
    rows removed by hand, plain token-mean loss with the entropy bonus on kept tokens, jax.grad, the same
    clip + AdamW."""
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, 500, size=rng.integers(2, 7))) for _ in range(8)]
    responses = [list(rng.integers(3, 500, size=rng.integers(1, 10))) for _ in range(8)]
    batch = pack_sequences(prompts, responses, length_bucket=8)
    correct = np.array([1, 0, 1, 1, 0, 0, 1, 1], bool)
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:ndev])
    hp = preset_hparams("psr").replace(entropy_coef=ENT)
    opts = LearnerOptions(objective="psr", hp=hp, micro_batch_size=micro, length_bucket=8, logprob_chunk_size=8,
                          lr=1e-2, grad_clip=1.0, eps=1e-3)
    learner = Learner(_replicated_model(mesh), opts, mesh)
    p0 = jax.tree.map(np.asarray, learner.policy.state["params"])
    old = learner.compute_logprobs(batch)[0] - 0.1 * batch.response_mask  # off-policy: ratios != 1
    adv = np.asarray(correctness_advantages(correct, batch.response_mask), np.float32)
    batch = batch.replace(old_logp=old, advantages=adv)
    kept = kept_rows("psr", batch.advantages, batch.response_mask)
    (rows,) = drop_minibatch_rows(kept, 4, 8, None)
    assert len(rows) == 5 and bucket_rows(5, micro, 8) == 8  # the trainer's shape bucket: 3 zero-weight rows
    m = learner.update(pad_rows(take_rows(batch, rows), bucket_rows(5, micro, 8)))
    assert m["actor/kept_token_frac"] == 1.0 and m["actor/skipped"] == 0

    keep = np.flatnonzero(correct)  # by hand
    ref_b = jax.tree.map(lambda v: jnp.asarray(v[keep]), batch)
    model = Decoder(CFG, rngs=nnx.Rngs(0))
    g, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        lp, h = sequence_logprobs(nnx.merge(g, p, rest), ref_b, chunk_size=8)
        return _ref_token_mean_loss(lp, ref_b.old_logp, h, ref_b.response_mask, ref_b.advantages,
                                    np.arange(len(keep)))
    grads = jax.jit(jax.grad(loss))(params)
    tx = make_optimizer(make_schedule(1e-2, 0, 1), 0.01, 0.9, 0.999, 1e-3, 1.0)
    upd, _ = tx.update(grads, tx.init(params), params)
    expected = jax.tree.map(lambda a, b: np.asarray(a + b), params, upd)
    got = jax.tree.map(np.asarray, learner.policy.state["params"])
    for a, b, c in zip(jax.tree.leaves(got), jax.tree.leaves(expected), jax.tree.leaves(p0)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert max(float(np.abs(a - c).max()) for a, c in zip(jax.tree.leaves(got), jax.tree.leaves(p0))) > 1e-4
