"""A bf16 vLLM server against the float32 learner (CPU): the mismatch is measured through the trainer's path
(engine log-probs -> rollout_logp_array, learner old log-probs -> mismatch_metrics) and is far above the float32
server's rounding; the correction's weights and rejections are the closed form. One server for the module."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_vllm_engine import LOGP_TOL, PROMPTS, policy, start_engine  # noqa: E402,F401  (policy: the module fixture)

from rlvr_jax.rollout.base import SamplingParams  # noqa: E402


@pytest.fixture(scope="module")
def bf16_engine(policy, tmp_path_factory):  # noqa: F811
    eng = start_engine(policy[0], tmp_path_factory, "bfloat16")
    yield eng
    eng.close()


@pytest.mark.vllm
@pytest.mark.xdist_group("vllm")
def test_bf16_server_vs_float32_learner_mismatch_and_correction(bf16_engine, policy):  # noqa: F811
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from rlvr_jax.trainer.learner import Learner, LearnerOptions, pack_sequences
    from rlvr_jax.objectives.types import ObjectiveHParams
    from rlvr_jax.trainer.rollout_correction import apply_correction, rollout_logp_array
    from rlvr_jax.sharding import make_mesh

    model = policy[1]
    n = 4
    outs = bf16_engine.generate(PROMPTS, n, SamplingParams(temperature=1.0, max_new_tokens=16, seed=7))
    comps = [c for row in outs for c in row]
    batch = pack_sequences([PROMPTS[c.prompt_index] for c in comps], [c.token_ids for c in comps], 8)
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:1])
    nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(mesh, PartitionSpec())))
    opts = LearnerOptions(objective="grpo", hp=ObjectiveHParams(), micro_batch_size=16, length_bucket=8,
                          logprob_chunk_size=8, lr=1e-3)
    batch = batch.replace(old_logp=Learner(model, opts, mesh).compute_logprobs(batch)[0])  # the float32 learner
    roll = rollout_logp_array(comps, batch.response_ids.shape)
    mask = batch.response_mask != 0
    d = np.abs(batch.old_logp - roll)[mask]

    tis, metrics = apply_correction(batch, roll, "token_tis", 2.0)
    print(f"\nbf16 vLLM vs float32 learner, {d.size} tokens: |dlogp| mean {d.mean():.2e} max {d.max():.2e}; "
          + ", ".join(f"{k.split('/')[1]} {v:.3e}" for k, v in metrics.items()))
    # Nonzero mismatch, well above the float32 server's bound (test_vllm_engine: max < 1e-3).
    assert d.max() > 5 * LOGP_TOL and d.mean() > LOGP_TOL
    assert metrics["rollout_corr/k3_kl"] > 1e-7 and metrics["rollout_corr/rollout_is_std"] > 1e-3
    # The weights are the closed form min(exp(old - rollout), C), computed here independently in float64.
    want = np.minimum(np.exp(batch.old_logp.astype(np.float64) - roll.astype(np.float64)), 2.0) * mask
    np.testing.assert_allclose(tis.rollout_is_weights, want, rtol=1e-6)
    assert np.all(tis.rollout_is_weights[~mask] == 0)
    # seq_mask with a cap inside the measured spread of geometric means rejects exactly the rows outside [1/C, C].
    log_g = np.array([(batch.old_logp[i] - roll[i])[mask[i]].mean() for i in range(len(comps))])
    cap = float(np.exp(np.median(np.abs(log_g))))
    rs, m_rs = apply_correction(batch, roll, "seq_mask", cap)
    dropped = np.abs(log_g) > np.log(cap)
    assert 0 < dropped.sum() < len(comps)
    np.testing.assert_array_equal(rs.response_mask.any(axis=1), ~dropped)
    assert m_rs["rollout_corr/rollout_rs_masked_fraction"] == pytest.approx(dropped.mean())
