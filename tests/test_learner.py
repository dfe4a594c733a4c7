"""Learner: exact micro-batch accumulation, non-finite skip, log-prob layout, critic update."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlvr_jax.trainer.learner import Learner, LearnerOptions, micro_batches, pack_sequences, sequence_logprobs
from rlvr_jax.models import Decoder, get_preset
from rlvr_jax.objectives.types import ObjectiveHParams
from jax.sharding import NamedSharding, PartitionSpec

from rlvr_jax.sharding import make_mesh

CFG = get_preset("tiny-qwen3", dtype="float32")


def _batch(rng, n=8):
    prompts = [list(rng.integers(3, 500, size=rng.integers(2, 9))) for _ in range(n)]
    responses = [list(rng.integers(3, 500, size=rng.integers(1, 12))) for _ in range(n)]
    b = pack_sequences(prompts, responses, length_bucket=8)
    return b.replace(advantages=(np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None] * b.response_mask
                                 ).astype(np.float32))


def _opts(objective="grpo", micro=8, **kw):
    hp = ObjectiveHParams(clip_eps_low=0.2, clip_eps_high=0.28, entropy_coef=1e-3,
                          agg_mode=kw.pop("agg_mode", "token-mean"), agg_max_len=16)
    return LearnerOptions(objective=objective, hp=hp, micro_batch_size=micro, length_bucket=8,
                          logprob_chunk_size=8, lr=1e-2, grad_clip=1.0, eps=1e-3, **kw)


def _learner(opts, mesh_shape=None, n_devices=1):
    mesh = make_mesh(mesh_shape or {"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:n_devices])
    return Learner(_replicate(Decoder(CFG, rngs=nnx.Rngs(0)), mesh), opts, mesh)


def _replicate(model, mesh):
    nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(mesh, PartitionSpec())))
    return model


def _jit_forward(model):
    g, s = nnx.split(model)
    f = jax.jit(lambda s, ids: nnx.merge(g, s)(ids))
    return lambda ids: f(s, ids)


def test_pack_sequences_layout_and_logprobs_match_full_forward():
    rng = np.random.default_rng(0)
    b = pack_sequences([[5, 6, 7], [9]], [[10, 11], [12, 13, 14]], length_bucket=4)
    assert b.prompt_ids.tolist() == [[0, 5, 6, 7], [0, 0, 0, 9]]
    assert b.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    model = Decoder(CFG, rngs=nnx.Rngs(1))
    g, s = nnx.split(model)
    logp, ent = jax.jit(lambda s, b: sequence_logprobs(nnx.merge(g, s), b, chunk_size=2))(
        s, jax.tree.map(jnp.asarray, b))
    forward = _jit_forward(model)
    # Reference: unpadded full forward of prompt + response, log-softmax gathered.
    for i, (p, r) in enumerate([([5, 6, 7], [10, 11]), ([9], [12, 13, 14])]):
        ids = jnp.asarray([p + r], jnp.int32)
        lp = jax.nn.log_softmax(forward(ids)[0], axis=-1)
        want = [float(lp[len(p) - 1 + j, t]) for j, t in enumerate(r)]
        np.testing.assert_allclose(np.asarray(logp[i, :len(r)]), want, rtol=1e-5, atol=1e-5)
        probs = jnp.exp(lp)
        want_h = [float(-(probs[len(p) - 1 + j] * lp[len(p) - 1 + j]).sum()) for j in range(len(r))]
        np.testing.assert_allclose(np.asarray(ent[i, :len(r)]), want_h, rtol=1e-5, atol=1e-5)
    del rng


@pytest.mark.parametrize("agg_mode", ["seq-mean-token-mean"])
def test_accumulation_equals_one_big_batch(agg_mode):
    rng = np.random.default_rng(1)
    batch = _batch(rng, n=8)
    results = []
    # one micro-batch of 8 on one device vs 4 micro-batches of 2 sharded over fsdp=2
    for micro, ndev in ((8, 1), (2, 2)):
        lr = _learner(_opts(micro=micro, agg_mode=agg_mode), {"data": 1, "fsdp": -1, "tp": 1}, ndev)
        old = lr.compute_logprobs(batch)[0] - 0.1 * batch.response_mask  # off-policy: ratios != 1
        batch = batch.replace(old_logp=old)
        m = lr.update(batch)
        results.append((jax.tree.map(np.asarray, lr.policy.state["params"]), m))
    (p1, m1), (p2, m2) = results
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert abs(m1["actor/loss"] - m2["actor/loss"]) < 1e-5 * max(1, abs(m1["actor/loss"]))
    assert abs(m1["actor/grad_norm"] - m2["actor/grad_norm"]) < 1e-4 * m1["actor/grad_norm"]
    assert m1["actor/grad_norm"] > 0 and m1["actor/skipped"] == 0
    # the update changed the parameters
    p0 = jax.tree.leaves(nnx.state(Decoder(CFG, rngs=nnx.Rngs(0)), nnx.Param))
    assert max(float(np.abs(a - np.asarray(b)).max()) for a, b in zip(jax.tree.leaves(p1), p0)) > 1e-4


def test_nonfinite_update_is_skipped_and_counted():
    rng = np.random.default_rng(2)
    batch = _batch(rng, n=4)
    lr = _learner(_opts(micro=4))
    batch = batch.replace(old_logp=lr.compute_logprobs(batch)[0])
    before = jax.tree.map(np.asarray, lr.train_state())
    bad = batch.replace(advantages=np.where(batch.response_mask != 0, np.nan, 0.0).astype(np.float32))
    m = lr.update(bad)
    assert m["actor/skipped"] == 1.0 and not np.isfinite(m["actor/grad_norm"])
    after = jax.tree.map(np.asarray, lr.train_state())
    assert int(after["policy"]["skipped"]) == 1 and int(after["policy"]["step"]) == 0
    for a, b in zip(jax.tree.leaves(before["policy"]["params"]), jax.tree.leaves(after["policy"]["params"])):
        np.testing.assert_array_equal(a, b)
    m = lr.update(batch)  # a finite batch afterwards still trains
    assert m["actor/skipped"] == 0.0 and int(lr.policy.state["step"]) == 1


def test_reference_and_critic():
    rng = np.random.default_rng(3)
    batch = _batch(rng, n=4)
    opts = dataclasses.replace(_opts("ppo", micro=4), use_reference=True, use_critic=True, critic_lr=1e-2)
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:1])
    lr = Learner(_replicate(Decoder(CFG, rngs=nnx.Rngs(0)), mesh), opts, mesh,
                 critic_backbone=_replicate(Decoder(CFG, rngs=nnx.Rngs(0)), mesh))
    old, _ = lr.compute_logprobs(batch)
    ref, _ = lr.compute_logprobs(batch, reference=True)
    np.testing.assert_array_equal(old, ref)
    v0 = lr.compute_values(batch)
    assert np.all(v0 == 0)  # zero-initialised value head
    batch = batch.replace(old_logp=old, ref_logp=ref, old_values=v0, returns=batch.advantages)
    cm = lr.update_critic(batch)
    assert cm["critic/vf_loss"] == pytest.approx(0.5, rel=1e-6)  # 0.5 * mean(A^2) with A = +-1
    assert np.abs(lr.compute_values(batch)).max() > 0
    lr.update(batch)
    new, _ = lr.compute_logprobs(batch)
    assert np.abs(new - old).max() > 0
    np.testing.assert_array_equal(lr.compute_logprobs(batch, reference=True)[0], ref)  # reference is frozen


def test_micro_batches_pad_with_inert_rows():
    b = pack_sequences([[1, 2]] * 3, [[3]] * 3, length_bucket=4)
    mbs = micro_batches(b, 2)
    assert len(mbs) == 2 and mbs[1].response_mask[1].sum() == 0 and mbs[1].prompt_mask[1].sum() == 1


def _masked_layout_logprobs(model, b):
    """Reference: the padded layout ``[left pads | prompt | response | pads]`` with an explicit padding
    mask (the learner's layout before right alignment), log-softmax gathered in float32."""
    P, R = b.prompt_ids.shape[1], b.response_ids.shape[1]
    ids = jnp.concatenate([b.prompt_ids, b.response_ids], axis=1)
    mask = jnp.concatenate([b.prompt_mask, (b.response_mask != 0).astype(jnp.int32)], axis=1)
    h = model.hidden(ids, attention_mask=mask)[:, P - 1:P - 1 + R]
    z = model.logits_from_hidden(h)
    lp = jax.nn.log_softmax(z, axis=-1)
    return jnp.take_along_axis(lp, b.response_ids[..., None], axis=-1)[..., 0]


def test_right_aligned_causal_layout_equals_padding_mask_layout_values_and_gradients():
    """The learner's rotated, mask-free causal layout gives the same log-probs and the same parameter
    gradients (on real tokens) as the left-padded layout with an explicit padding mask."""
    rng = np.random.default_rng(5)
    b = jax.tree.map(jnp.asarray, _batch(rng, n=6))
    model = Decoder(CFG, rngs=nnx.Rngs(2))
    g, s = nnx.split(model)
    m = b.response_mask

    def new(s):
        return jnp.sum(sequence_logprobs(nnx.merge(g, s), b, chunk_size=4)[0] * m)

    def ref(s):
        return jnp.sum(_masked_layout_logprobs(nnx.merge(g, s), b) * m)

    (v_new, g_new), (v_ref, g_ref) = jax.jit(jax.value_and_grad(new))(s), jax.jit(jax.value_and_grad(ref))(s)
    assert abs(float(v_new) - float(v_ref)) <= 1e-5 * abs(float(v_ref))
    lp_new = sequence_logprobs(model, b, chunk_size=4)[0]
    lp_ref = _masked_layout_logprobs(model, b)
    np.testing.assert_allclose(np.where(m != 0, lp_new, 0), np.where(m != 0, lp_ref, 0), rtol=2e-5, atol=2e-5)
    worst = max(float(jnp.max(jnp.abs(a - c)) / (jnp.max(jnp.abs(c)) + 1e-30))
                for a, c in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)))
    assert worst < 1e-4, worst


def test_bf16_compute_runs_every_learner_matmul_in_bf16():
    """With float32 master weights and bf16 compute, no matmul of the log-prob pass or its gradient (LM
    head included) has a float32 operand: the unembedding is cast to the compute dtype, and accumulation
    stays float32 through ``preferred_element_type``. Traced as for GPU / TPU (on XLA:CPU the same bf16
    operands are widened to float32 before each matmul, rlvr_jax.models.precision: checked last)."""
    from rlvr_jax.models import precision
    cfg = get_preset("tiny-qwen3", dtype="bfloat16", param_dtype="float32")
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    g, s = nnx.split(model)
    b = jax.tree.map(jnp.asarray, _batch(np.random.default_rng(0), n=4))
    def fn():  # a new function per trace (make_jaxpr caches traces by function)
        return jax.grad(lambda s: jnp.sum(sequence_logprobs(nnx.merge(g, s), b, chunk_size=8)[0]))

    from rlvr_jax.bench.census import dot_products
    with precision.traced_for("gpu"):
        dots = [d[:3] for d in dot_products(jax.make_jaxpr(fn())(s))]
    cpu_dots = [d[:3] for d in dot_products(jax.make_jaxpr(fn())(s))]
    assert cpu_dots and all(d[:2] == ("float32", "float32") for d in cpu_dots), cpu_dots[:3]
    assert len(dots) >= 7 * cfg.num_layers, f"found only {len(dots)} dots"
    # jax.nn.dot_product_attention's XLA implementation keeps float32 scores/probabilities (its own
    # business, and replaced by one fused kernel with attention_impl='cudnn'); every projection and the
    # LM head (dims hidden / intermediate / vocab) must be bf16 x bf16 in the forward and backward passes.
    proj = {cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size}
    f32 = [d for d in dots if "float32" in d[:2] and proj & set(d[2])]
    assert not f32, f"float32 matmul operands: {f32[:5]}"
    assert any(cfg.vocab_size in d[2] for d in dots), "no LM-head dot found"


def test_bf16_first_moment_option():
    opts = _opts(mu_dtype="bfloat16")
    learner = _learner(opts)
    dtypes = {x.dtype for x in jax.tree.leaves(learner.policy.state["opt_state"]) if x.ndim >= 2}
    assert jnp.dtype("bfloat16") in dtypes and jnp.dtype("float32") in dtypes  # mu bf16, nu float32
    b = _batch(np.random.default_rng(3))
    b = b.replace(old_logp=learner.compute_logprobs(b)[0])
    before = jax.tree.map(np.asarray, learner.policy.state["params"])
    metrics = learner.update(b)
    assert np.isfinite(metrics["actor/grad_norm"]) and metrics["actor/skipped"] == 0
    moved = [float(np.abs(np.asarray(a) - c).max()) for a, c in
             zip(jax.tree.leaves(learner.policy.state["params"]), jax.tree.leaves(before))]
    assert max(moved) > 0


def test_bf16_on_cpu_matches_float32():
    """Issue 27 finding 1: on XLA:CPU bf16 compute widens its operands to float32 before each matmul
    (rlvr_jax.models.precision); the log-probs and the policy-gradient of a bf16 model equal the float32 model's
    within bf16 tolerance. (That a bf16 training update runs on one CPU device, which died with "Unsupported
    element type for DotThunk::Execute: BF16 x BF16 = F32", is the README's "main job on CPU" command in
    tests/test_doc_commands.py.)"""
    b = jax.tree.map(jnp.asarray, _batch(np.random.default_rng(7), n=8))
    out = {}
    for dt in ("float32", "bfloat16"):
        g, s = nnx.split(Decoder(get_preset("tiny-qwen3", dtype=dt, param_dtype="float32"), rngs=nnx.Rngs(0)))

        def loss(s):
            logp, ent = sequence_logprobs(nnx.merge(g, s), b, chunk_size=16)
            return jnp.sum((logp * b.advantages + 1e-3 * ent) * b.response_mask), logp

        (value, logp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(s)
        out[dt] = (float(value), np.asarray(logp), jax.tree.leaves(grads))
    (v32, lp32, g32), (v16, lp16, g16) = out["float32"], out["bfloat16"]
    m = np.asarray(b.response_mask) != 0
    assert np.abs(lp16 - lp32)[m].max() < 0.05 and abs(v16 - v32) <= 1e-2 * abs(v32)  # log-probs about -6.2
    norm = lambda gs: float(np.sqrt(sum(float(jnp.sum(jnp.square(x.astype(jnp.float32)))) for x in gs)))  # noqa
    assert abs(norm(g16) - norm(g32)) <= 3e-2 * norm(g32)
    cos = sum(float(jnp.vdot(a.astype(jnp.float32), c)) for a, c in zip(g16, g32)) / (norm(g16) * norm(g32))
    assert cos > 0.99, cos
