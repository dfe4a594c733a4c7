"""Pallas decode attention (``decode_attention_impl='pallas'``): the kernel wrapper against a jnp reference
and a float64 brute force, the decoder's head-major cache path against the default XLA path, and the
JaxSampler with both, unsharded and over the 8-device simulated mesh. The kernel runs in Pallas interpret
mode on CPU, so shapes and step counts are small."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from helpers_models import make_tiny_hf_model
from rlvr_jax.models import ModelConfig, get_preset, load_hf
from rlvr_jax.models import decode_attention as da
from rlvr_jax.rollout.base import SamplingParams
from rlvr_jax.rollout.jax_sampler import JaxSampler
from rlvr_jax.sharding import make_mesh

B, N, K = 3, 4, 2


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _inputs(S, D, seed=0):
    rs = np.random.RandomState(seed)
    q = rs.randn(B, N, D).astype(np.float32)
    k = rs.randn(B, K, S, D).astype(np.float32)
    v = rs.randn(B, K, S, D).astype(np.float32)
    return q, k, v


def _brute_force(q, k, v, start, end):
    """float64 numpy: per row and head, softmax over slots [start, end) only."""
    Bq, Nq, D = q.shape
    G = Nq // k.shape[1]
    out = np.zeros((Bq, Nq, D))
    for b in range(Bq):
        for n in range(Nq):
            kk = k[b, n // G, start[b]:end[b]].astype(np.float64)
            vv = v[b, n // G, start[b]:end[b]].astype(np.float64)
            s = kk @ q[b, n].astype(np.float64) / np.sqrt(D)
            p = np.exp(s - s.max())
            out[b, n] = (p / p.sum()) @ vv
    return out


# Row ranges: the whole cache; one slot (end - start = 1) inside a split; start > 0 and end < S across splits.
RANGES = {64: ([0, 5, 17], [64, 6, 55]), 80: ([0, 40, 3], [80, 41, 70])}


@pytest.mark.parametrize("S,D", [(64, 16), (80, 32)])
def test_kernel_matches_reference_and_float64(S, D):
    q, k, v = _inputs(S, D)
    start, end = (np.asarray(x, np.int32) for x in RANGES[S])
    out = np.asarray(jax.jit(da.decode_attention)(q, k, v, start, end))
    ref = np.asarray(da.decode_attention_reference(q, k, v, start, end))
    exact = _brute_force(q, k, v, start, end)
    errs = (_rel(out, ref), _rel(out, exact), _rel(ref, exact))
    print(f"\n[decode-attn S={S} D={D} blocks={da.choose_blocks(S)}] rel err pallas/ref {errs[0]:.1e}, "
          f"pallas/f64 {errs[1]:.1e}, ref/f64 {errs[2]:.1e}")
    assert max(errs) <= 1e-5


def test_values_outside_the_range_do_not_matter():
    S, D = 80, 32  # 5 splits of 16 slots (block_k 16)
    q, k, v = _inputs(S, D, seed=1)
    start, end = np.array([20, 3, 0], np.int32), np.array([30, 4, 45], np.int32)
    attend = jax.jit(da.decode_attention)  # one compile for the three calls
    clean = np.asarray(attend(q, k, v, start, end))
    outside = np.ones((B, 1, S, 1), bool)
    for b in range(B):
        outside[b, :, start[b]:end[b]] = False
    # Huge finite values anywhere outside the range (slots sharing a block with the range are read, masked).
    k_big, v_big = np.where(outside, 1e30, k).astype(np.float32), np.where(outside, 1e30, v).astype(np.float32)
    got = np.asarray(attend(q, k_big, v_big, start, end))
    assert np.isfinite(got).all() and _rel(got, clean) <= 1e-6
    # NaN in every split wholly outside a row's range: the kernel never reads those splits (row 0 reads only
    # the split [16, 32), row 1 only [0, 16), row 2 splits [0, 48)); NaN would poison anything it touched.
    unread = np.zeros((B, 1, S, 1), bool)
    unread[0, :, :16] = unread[0, :, 32:] = True
    unread[1, :, 16:] = True
    unread[2, :, 48:] = True
    k_nan, v_nan = np.where(unread, np.nan, k).astype(np.float32), np.where(unread, np.nan, v).astype(np.float32)
    got = np.asarray(attend(q, k_nan, v_nan, start, end))
    assert np.isfinite(got).all() and _rel(got, clean) <= 1e-6
    # The reference masks with where: NaN anywhere outside is ignored.
    ref = np.asarray(da.decode_attention_reference(q, np.where(outside, np.nan, k), np.where(outside, np.nan, v),
                                                   start, end))
    assert _rel(ref, clean) <= 1e-5


def test_block_choice_and_invalid_lengths():
    assert da.choose_blocks(64) == (1, 64)
    assert da.choose_blocks(80) == (5, 16)
    assert da.choose_blocks(1280) == (10, 128)
    assert da.choose_blocks(2048) == (16, 128)
    assert da.choose_blocks(4096) == (16, 128)
    assert da.choose_blocks(2560) == (10, 128)
    for S in (0, 8, 40, 72, 100):
        with pytest.raises(ValueError, match=f"S={S}"):
            da.choose_blocks(S)
    q, k, v = _inputs(40, 16)
    with pytest.raises(ValueError, match="S=40"):
        da.decode_attention(q, k, v, np.zeros(B, np.int32), np.ones(B, np.int32))


def test_kv_range_from_mask_and_tpu_error(monkeypatch):
    m = np.array([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], np.int32)
    start, end = da.kv_range_from_mask(jnp.asarray(m))
    assert start.tolist() == [2, 0, 5] and end.tolist() == [5, 6, 6]
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    q, k, v = _inputs(64, 16)
    with pytest.raises(ValueError, match="decode_attention_impl='xla' on TPU"):
        da.decode_attention(q, k, v, np.zeros(B, np.int32), np.ones(B, np.int32))


def test_config_option():
    with pytest.raises(ValueError, match="decode_attention_impl"):
        get_preset("tiny-qwen3", decode_attention_impl="triton")
    assert get_preset("tiny-qwen3", decode_attention_impl="pallas").decode_attention_impl == "pallas"
    assert ModelConfig.__dataclass_fields__["decode_attention_impl"].default == "xla"


@pytest.mark.parametrize("mesh_shape", [{"data": 2, "fsdp": 4, "tp": 1}, {"data": 1, "fsdp": 4, "tp": 2}])
def test_sharded_over_mesh_without_gathering_the_cache(mesh_shape):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 CPU devices)")
    mesh = make_mesh(mesh_shape)
    rows = 8 if mesh_shape["tp"] == 1 else 4
    S, D = 64, 16
    rs = np.random.RandomState(2)
    q = rs.randn(rows, N, D).astype(np.float32)
    k, v = (rs.randn(rows, K, S, D).astype(np.float32) for _ in range(2))
    start = rs.randint(0, 30, rows).astype(np.int32)
    end = (start + rs.randint(1, 34, rows)).astype(np.int32)
    ref = np.asarray(da.decode_attention_reference(q, k, v, start, end))
    batch = ("data", "fsdp")
    put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, PartitionSpec(batch, *spec)))  # noqa: E731
    heads = "tp" if mesh_shape["tp"] > 1 else None
    args = (put(q), put(k, heads), put(v, heads), put(start), put(end))
    with jax.set_mesh(mesh):
        f = jax.jit(da.decode_attention)
        out = f(*args)
        hlo = f.lower(*args).compile().as_text()
    assert _rel(out, ref) <= 1e-5
    assert "all-gather" not in hlo and "all-to-all" not in hlo  # each device reads only its own rows / heads
    assert out.sharding.shard_shape(out.shape)[0] == rows // (mesh_shape["data"] * mesh_shape["fsdp"])


# ----------------------------------------------------------------------------------------------------------
# Model level: prefill + decode steps with the head-major cache == the default XLA path.


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    return make_tiny_hf_model(tmp_path_factory.mktemp("tiny"), "qwen3", seed=3)


def _prefill_and_decode(model, ids, mask, S, steps):
    graphdef, state = nnx.split(model)
    prefill = jax.jit(lambda st, i, m, c: nnx.merge(graphdef, st).prefill(i, m, c))
    step = jax.jit(lambda st, t, p, i, kv, c: nnx.merge(graphdef, st).decode_step(t, p, i, kv, c))
    Bm, T0 = ids.shape
    cache = model.init_cache(Bm, S)
    logits, cache = prefill(state, jnp.asarray(ids), jnp.asarray(mask), cache)
    outs = [np.asarray(logits)[mask.astype(bool)]]
    kv_mask = np.zeros((Bm, S), np.int32)
    kv_mask[:, :T0] = mask
    last, pos = np.asarray(logits[:, -1]), mask.sum(1)
    for s in range(steps):
        tok = last.argmax(-1).astype(np.int32)
        kv_mask[:, T0 + s] = 1
        last, cache = step(state, jnp.asarray(tok), jnp.asarray(pos, jnp.int32), jnp.int32(T0 + s),
                           jnp.asarray(kv_mask), cache)
        last = np.asarray(last)
        outs.append(last)
        pos = pos + 1
    return outs, cache


def test_decoder_pallas_matches_xla(tiny_qwen3):
    xla_model, cfg = load_hf(tiny_qwen3)
    pallas_model, pcfg = load_hf(tiny_qwen3, decode_attention_impl="pallas")
    assert cfg.decode_attention_impl == "xla" and pcfg.decode_attention_impl == "pallas"
    rs = np.random.RandomState(0)
    # S = 48: three 16-slot splits (choose_blocks); 12 steps take the ranges past the first split.
    lengths, T0, S, steps = [6, 3, 1], 6, 48, 12
    assert da.choose_blocks(S) == (3, 16)
    ids = np.zeros((len(lengths), T0), np.int32)
    mask = np.zeros((len(lengths), T0), np.int32)
    for i, n in enumerate(lengths):
        ids[i, T0 - n:] = rs.randint(3, cfg.vocab_size, n)
        mask[i, T0 - n:] = 1
    ref, ref_cache = _prefill_and_decode(xla_model, ids, mask, S, steps)
    got, cache = _prefill_and_decode(pallas_model, ids, mask, S, steps)
    shape = (len(lengths), cfg.num_kv_heads, S, cfg.head_dim)
    assert all(c.shape == shape for c in cache["k"] + cache["v"])
    for c, r in zip(cache["k"] + cache["v"], ref_cache["k"] + ref_cache["v"]):  # same contents, head-major
        np.testing.assert_allclose(np.asarray(c), np.swapaxes(np.asarray(r), 1, 2), rtol=1e-5, atol=1e-5)
    errs = [_rel(g, r) for g, r in zip(got, ref)]
    print(f"\n[decoder pallas vs xla] max rel err prefill/decode logits: {max(errs):.2e}")
    assert max(errs) <= 1e-5


# ----------------------------------------------------------------------------------------------------------
# Sampler level.

PROMPTS = [[5, 17, 301, 42, 9, 88, 7], [250, 3], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], [400]]
PARAMS = SamplingParams(temperature=1.0, top_k=20, max_new_tokens=12, seed=7)


@pytest.fixture(autouse=True)
def _float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def xla_reference(tiny_qwen3):
    model, _ = load_hf(tiny_qwen3)
    sampler = JaxSampler(model, pad_id=0, batch_buckets=[8], prompt_buckets=[16], new_token_buckets=[16],
                         max_prompt_len=16, max_new_tokens_limit=16, scheduler="static")
    return sampler.generate(PROMPTS, 2, PARAMS)


def _assert_same(out, ref):
    worst = 0.0
    for row_o, row_r in zip(out, ref):
        for co, cr in zip(row_o, row_r):
            assert co.token_ids == cr.token_ids and co.finish_reason == cr.finish_reason
            worst = max(worst, float(np.abs(np.subtract(co.logprobs, cr.logprobs)).max()))
    assert worst <= 1e-5
    return worst


def test_sampler_pallas_matches_xla(tiny_qwen3, xla_reference):
    model, _ = load_hf(tiny_qwen3, decode_attention_impl="pallas")
    sampler = JaxSampler(model, pad_id=0, batch_buckets=[8], prompt_buckets=[16], new_token_buckets=[16],
                         max_prompt_len=16, max_new_tokens_limit=16, scheduler="static")
    out = sampler.generate(PROMPTS, 2, PARAMS)
    assert sum(len(c.token_ids) for row in out for c in row) > 8 * 6  # the comparison covers real decoding
    print(f"\n[sampler pallas vs xla] max |dlogp| {_assert_same(out, xla_reference):.1e}")
    with pytest.raises(ValueError, match="S=26"):
        JaxSampler(model, pad_id=0, prompt_buckets=[10], new_token_buckets=[16], max_prompt_len=10,
                   max_new_tokens_limit=16)


def test_sampler_pallas_sharded_over_mesh(tiny_qwen3, xla_reference):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 CPU devices)")
    mesh = make_mesh({"data": 2, "fsdp": 4, "tp": 1})
    model, _ = load_hf(tiny_qwen3, decode_attention_impl="pallas", mesh=mesh)  # fsdp-sharded weights
    sampler = JaxSampler(model, pad_id=0, batch_buckets=[8], prompt_buckets=[16], new_token_buckets=[16],
                         max_prompt_len=16, max_new_tokens_limit=16, mesh=mesh, scheduler="static")
    out = sampler.generate(PROMPTS, 2, PARAMS)
    print(f"\n[sampler pallas on 2x4 mesh vs xla] max |dlogp| {_assert_same(out, xla_reference):.1e}")


def test_continuous_sampler_pallas_matches_static_xla(tiny_qwen3, xla_reference):
    """The continuous scheduler (16 rows on 8 slots, refilled) on the Pallas path, over the 2x4 mesh when the
    8 simulated devices are there: each slot's kv_mask stays one contiguous range, so the kernel's slot range
    is exact and samples equal the static XLA path. (One case only: interpret-mode Pallas compiles slowly.)"""
    mesh = make_mesh({"data": 2, "fsdp": 4, "tp": 1}) if jax.device_count() >= 8 else None
    model, _ = load_hf(tiny_qwen3, decode_attention_impl="pallas", mesh=mesh)
    sampler = JaxSampler(model, pad_id=0, batch_buckets=[8], prompt_buckets=[16], new_token_buckets=[16],
                         max_prompt_len=16, max_new_tokens_limit=16, mesh=mesh, scheduler="continuous",
                         decode_steps=5, refill_rows=2, queue_slots=1)
    out = sampler.generate(PROMPTS * 2, 2, PARAMS)  # 16 rows on 8 slots
    assert sampler.last_stats["compiled_calls"] > 2 and sampler.last_stats["slots"] == 8  # refilled, resumed
    worst = _assert_same(out[:len(PROMPTS)], xla_reference)  # the later copies have other row ids (keys)
    print(f"\n[continuous pallas{' on 2x4 mesh' if mesh else ''} vs static xla] max |dlogp| {worst:.1e}")
