"""Parity of the NNX decoder with transformers (float32, eager attention) on tiny random checkpoints.

Error measure: max |jax - torch| / max |torch| over the compared entries (real tokens only for padded
batches); the bound is 1e-5. Hidden states: transformers returns (embeddings, layer 1..L-1 outputs,
final-normed layer L output); ours are residual-stream states, so the last is compared after final_norm.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from helpers_models import load_torch_model, make_tiny_hf_model
from rlvr_jax.models import ModelConfig, load_hf, token_logprobs
from rlvr_jax.models.decoder import default_positions
from rlvr_jax.models.layers import rope_inv_freq

TOL = 1e-5

CASES = {
    "qwen3_tied": ("qwen3", {}),
    "qwen3_untied_odd": ("qwen3", dict(tie_word_embeddings=False, hidden_size=96, intermediate_size=200,
                                        vocab_size=301, num_attention_heads=3, num_key_value_heads=1,
                                        num_hidden_layers=3, rope_theta=5e6)),
    "qwen2_bias": ("qwen2", dict(hidden_size=192, num_attention_heads=3, num_key_value_heads=1,
                                 intermediate_size=160, rope_theta=20000.0)),
    "llama_rope_scaling": ("llama", {}),
}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    out = {}
    for name, (fam, ov) in CASES.items():
        path = make_tiny_hf_model(root, fam, seed=len(out), **ov)
        out[name] = (path, load_torch_model(path), *load_hf(path))
    return out


def _torch_forward(tm, ids, mask=None):
    kw = {}
    if mask is not None:
        kw["attention_mask"] = torch.tensor(mask)
        kw["position_ids"] = torch.tensor(np.asarray(default_positions(jnp.asarray(mask))))
    with torch.no_grad():
        out = tm(torch.tensor(ids), output_hidden_states=True, **kw)
    return out.logits.numpy(), [h.numpy() for h in out.hidden_states]


def _batches(vocab, seed=0):
    rs = np.random.RandomState(seed)
    lengths = [9, 6, 3]
    T = max(lengths)
    rows = [rs.randint(3, vocab, n) for n in lengths]
    ids = np.zeros((len(rows), T), np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = r
        mask[i, T - len(r):] = 1
    return rows, ids, mask


@pytest.mark.parametrize("case", list(CASES))
def test_unpadded_logits_and_hidden_states(models, case):
    path, tm, model, cfg = models[case]
    ids = np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 13))
    ref_logits, ref_h = _torch_forward(tm, ids)
    logits, hs = jax.jit(lambda x: model(x, return_hidden_states=True))(jnp.asarray(ids, jnp.int32))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 13, cfg.vocab_size)
    assert len(hs) == cfg.num_layers + 1 == len(ref_h)
    errs = [rel_err(h, r) for h, r in zip(hs[:-1], ref_h[:-1])]
    errs.append(rel_err(model.final_norm(hs[-1]), ref_h[-1]))
    err_logits = rel_err(logits, ref_logits)
    print(f"\n[parity {case}] unpadded logits rel err {err_logits:.2e}; hidden {['%.1e' % e for e in errs]}")
    assert err_logits < TOL
    assert max(errs) < TOL


@pytest.mark.parametrize("case", list(CASES))
def test_left_padded_batch(models, case):
    path, tm, model, cfg = models[case]
    rows, ids, mask = _batches(cfg.vocab_size, seed=2)
    fwd = jax.jit(lambda x, m: model(x, attention_mask=m, return_hidden_states=True))
    logits, hs = fwd(jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
    ref_logits, ref_h = _torch_forward(tm, ids, mask)
    real = mask.astype(bool)
    err = rel_err(np.asarray(logits)[real], ref_logits[real])
    herr = max(rel_err(np.asarray(h)[real], r[real]) for h, r in zip(hs[1:-1], ref_h[1:-1]))
    # Each padded row must equal the same row run alone, unpadded.
    row_err = 0.0
    alone_fwd = jax.jit(lambda x: model(x))
    for i, r in enumerate(rows):
        alone = alone_fwd(jnp.asarray(r[None], jnp.int32))
        row_err = max(row_err, rel_err(np.asarray(logits)[i, real[i]], alone[0]))
    print(f"\n[parity {case}] padded logits rel err vs torch {err:.2e}, hidden {herr:.2e}, vs unpadded {row_err:.2e}")
    assert err < TOL and herr < TOL and row_err < TOL


def test_explicit_positions_change_output(models):
    """The positions input is used: shifting all positions changes logits (RoPE is relative only in q.k,
    so the shift must be applied to a single token's position to matter)."""
    _, tm, model, cfg = models["qwen3_tied"]
    ids = jnp.asarray(np.random.RandomState(3).randint(0, cfg.vocab_size, (1, 6)), jnp.int32)
    pos = jnp.arange(6, dtype=jnp.int32)[None]
    fwd = jax.jit(lambda x, p: model(x, positions=p))
    base = fwd(ids, pos)
    np.testing.assert_allclose(base, jax.jit(lambda x: model(x))(ids), rtol=0, atol=0)
    moved = fwd(ids, pos.at[0, 0].set(40))
    assert float(jnp.abs(moved[0, 1:] - base[0, 1:]).max()) > 1e-3
    ref, _ = _torch_forward(tm, np.asarray(ids))
    with torch.no_grad():
        ref_moved = tm(torch.tensor(np.asarray(ids)), position_ids=torch.tensor(np.asarray(pos.at[0, 0].set(40)))).logits
    assert rel_err(moved, ref_moved.numpy()) < TOL


def test_llama3_rope_scaling_matches_transformers(models):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    _, tm, _, cfg = models["llama_rope_scaling"]
    ours = rope_inv_freq(cfg)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](tm.config, "cpu")
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
    plain = rope_inv_freq(cfg.replace(rope_scaling=None))
    assert np.abs(ours / plain - 1).max() > 0.5  # the scaling is active at these sizes


def test_config_reads_legacy_and_v5_rope_layouts(models):
    path, _, _, cfg = models["llama_rope_scaling"]
    import json

    d = json.loads((path / "config.json").read_text())
    assert "rope_parameters" in d
    legacy = {k: v for k, v in d.items() if k != "rope_parameters"}
    rp = dict(d["rope_parameters"])
    legacy["rope_theta"] = rp.pop("rope_theta")
    legacy["rope_scaling"] = {("type" if k == "rope_type" else k): v for k, v in rp.items()}
    c2 = ModelConfig.from_hf_dict(legacy)
    assert c2 == ModelConfig.from_hf_dict(d) == cfg.replace(dtype="float32", param_dtype="float32")
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling_dict["rope_type"] == "llama3"
    assert models["qwen3_untied_odd"][3].rope_theta == 5e6
    q2 = models["qwen2_bias"][3]
    assert q2.attention_bias and not q2.o_proj_bias and not q2.qk_norm and q2.head_dim == 64
    with pytest.raises(NotImplementedError, match="yarn"):
        ModelConfig.from_hf_dict({**d, "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1.0}})


def test_bfloat16_close_to_float32(models):
    path, _, model, cfg = models["qwen3_tied"]
    m16, c16 = load_hf(path, dtype="bfloat16")
    assert m16.layers[0].attn.q_proj.kernel[...].dtype == jnp.bfloat16
    ids = jnp.asarray(np.random.RandomState(4).randint(0, cfg.vocab_size, (2, 8)), jnp.int32)
    l32, l16 = jax.jit(lambda x: model(x))(ids), jax.jit(lambda x: m16(x))(ids)
    assert l16.dtype == jnp.float32
    err = rel_err(l16, l32)
    print(f"\n[parity] bf16 vs f32 logits rel err {err:.2e}")
    assert 0 < err < 5e-2


def test_remat_same_gradients(models):
    from flax import nnx

    path, _, model, cfg = models["qwen2_bias"]
    remat_model, _ = load_hf(path, remat="full")
    ids = jnp.asarray(np.random.RandomState(5).randint(0, cfg.vocab_size, (2, 7)), jnp.int32)

    def loss(m):
        lp, _ = token_logprobs(m.hidden(ids[:, :-1]), m.unembed_matrix(), ids[:, 1:])
        return -lp.mean()

    g1 = nnx.jit(nnx.grad(loss))(model)
    g2 = nnx.jit(nnx.grad(loss))(remat_model)
    leaves1, leaves2 = jax.tree.leaves(g1), jax.tree.leaves(g2)
    assert len(leaves1) == len(leaves2) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    for a, b in zip(leaves1, leaves2):
        assert np.abs(np.asarray(b)).max() > 0
        assert rel_err(a, b) < 1e-5


def _naive(h, w, y):
    z = jnp.einsum("bth,hv->btv", h, w)
    logp_all = jax.nn.log_softmax(z, -1)
    lp = jnp.take_along_axis(logp_all, y[..., None], -1)[..., 0]
    ent = -(jnp.exp(logp_all) * logp_all).sum(-1)
    return lp, ent


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_token_logprobs_matches_naive_and_gradient(chunk):
    rs = np.random.RandomState(6)
    h = jnp.asarray(rs.randn(2, 7, 16), jnp.float32)
    w = jnp.asarray(rs.randn(16, 50), jnp.float32)
    y = jnp.asarray(rs.randint(0, 50, (2, 7)), jnp.int32)
    lp, ent = jax.jit(lambda h, w, y: token_logprobs(h, w, y, chunk_size=chunk))(h, w, y)
    rlp, rent = _naive(h, w, y)
    np.testing.assert_allclose(lp, rlp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, rent, rtol=1e-5, atol=1e-5)
    coef = jnp.asarray(rs.randn(2, 7), jnp.float32)

    def f(fn):
        return lambda h, w: (fn(h, w, y)[0] * coef).sum() + 0.3 * fn(h, w, y)[1].sum()

    ga = jax.jit(jax.grad(f(lambda h, w, y: token_logprobs(h, w, y, chunk_size=chunk)), argnums=(0, 1)))(h, w)
    gb = jax.jit(jax.grad(f(_naive), argnums=(0, 1)))(h, w)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_token_logprobs_rejects_bad_shapes():
    with pytest.raises(ValueError, match="targets shape"):
        token_logprobs(jnp.zeros((2, 3, 4)), jnp.zeros((4, 5)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="unembed"):
        token_logprobs(jnp.zeros((2, 3, 4)), jnp.zeros((5, 5)), jnp.zeros((2, 3), jnp.int32))


def test_token_logprobs_mixed_precision_gradient_dtypes_and_accuracy():
    """bf16 hidden states with a float32 master matrix: the gradient of the matrix comes back in float32
    (summed over chunks in float32), and values/gradients stay within bf16 rounding of a float64 reference."""
    rs = np.random.RandomState(7)
    h32 = rs.randn(2, 40, 32).astype(np.float32)
    w32 = (0.3 * rs.randn(32, 300)).astype(np.float32)
    y = jnp.asarray(rs.randint(0, 300, (2, 40)), jnp.int32)
    coef = jnp.asarray(rs.randn(2, 40), jnp.float32)
    h = jnp.asarray(h32, jnp.bfloat16)
    w = jnp.asarray(w32)

    def loss(fn, h, w):
        lp, ent = fn(h, w)
        return (lp * coef).sum() + 0.3 * ent.sum()

    mine = lambda h, w: token_logprobs(h, w, y, chunk_size=8)  # noqa: E731
    (lp, ent) = jax.jit(mine)(h, w)
    gh, gw = jax.jit(jax.grad(lambda h, w: loss(mine, h, w), argnums=(0, 1)))(h, w)
    assert lp.dtype == ent.dtype == jnp.float32 and gh.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
    with jax.enable_x64():
        h64 = jnp.asarray(np.asarray(h.astype(jnp.float32)), jnp.float64)
        w64 = jnp.asarray(np.asarray(w.astype(jnp.bfloat16).astype(jnp.float32)), jnp.float64)
        rlp, rent = _naive(h64, w64, y)
        rgh, rgw = jax.grad(lambda h, w: loss(lambda a, b: _naive(a, b, y), h, w), argnums=(0, 1))(h64, w64)
        rlp, rent, rgh, rgw = (np.asarray(x) for x in (rlp, rent, rgh, rgw))
    np.testing.assert_allclose(lp, rlp, rtol=1e-4, atol=1e-4)  # bf16 operands are exact; f32 accumulation
    np.testing.assert_allclose(ent, rent, rtol=1e-4, atol=1e-4)
    # dz is rounded to bf16 before its matmuls: relative error ~ 2^-8 of the gradient's scale.
    for got, ref in ((np.asarray(gh, np.float32), rgh), (np.asarray(gw), rgw)):
        assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max(), np.abs(got - ref).max() / np.abs(ref).max()
