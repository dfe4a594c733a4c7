"""Mesh construction, logical-axis rules, sharded loading, and sharded == single-device numerics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from helpers_models import make_tiny_hf_model
from rlvr_jax.models import Decoder, get_preset, load_hf, token_logprobs
from rlvr_jax.sharding import (DEFAULT_RULES, batch_sharding, initialize_distributed, logical_to_spec,
                               make_mesh, shard_model)


def test_make_mesh_shapes_and_errors():
    assert jax.device_count() == 8
    m = make_mesh({"data": 1, "fsdp": -1, "tp": 2})
    assert dict(m.shape) == {"data": 1, "fsdp": 4, "tp": 2}
    assert dict(make_mesh().shape) == {"data": 1, "fsdp": 8, "tp": 1}
    with pytest.raises(ValueError, match="has 3 devices but 8 are available"):
        make_mesh({"fsdp": 3})
    with pytest.raises(ValueError, match=r"fixed axes \(product 3\) do not divide the 8 devices"):
        make_mesh({"fsdp": -1, "tp": 3})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        make_mesh({"model": 2})
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        make_mesh({"fsdp": -1, "tp": -1})
    with pytest.raises(ValueError, match="'tp' has size 0"):
        make_mesh({"fsdp": -1, "tp": 0})
    assert dict(make_mesh({"tp": 2}, devices=jax.devices()[:2]).shape) == {"data": 1, "fsdp": 1, "tp": 2}


def test_logical_rules():
    assert logical_to_spec(("embed", "heads")) == P("fsdp", "tp")
    assert logical_to_spec(("vocab", "embed")) == P("tp", "fsdp")
    assert logical_to_spec(("batch", None)) == P(("data", "fsdp"), None)
    assert logical_to_spec(("norm",)) == P(None)
    custom = dict(DEFAULT_RULES, embed=None, mlp=("fsdp", "tp"))
    assert logical_to_spec(("embed", "mlp"), custom) == P(None, ("fsdp", "tp"))
    with pytest.raises(KeyError, match="'bogus' has no sharding rule"):
        logical_to_spec(("bogus",))
    mesh = make_mesh({"fsdp": 4, "tp": 2})
    assert batch_sharding(mesh).spec == P(("data", "fsdp"), None)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_hf_model(tmp_path_factory.mktemp("shard"), "qwen3", seed=2, tie_word_embeddings=False)


def test_load_on_mesh_places_params_per_rules(tiny_path):
    mesh = make_mesh({"data": 1, "fsdp": 4, "tp": 2})
    model, cfg = load_hf(tiny_path, mesh=mesh)
    a = model.layers[0].attn
    expect = {
        "q_proj": (a.q_proj.kernel, P("fsdp", "tp"), (128 // 4, 128 // 2)),
        "k_proj": (a.k_proj.kernel, P("fsdp", "tp"), (128 // 4, 64 // 2)),
        "o_proj": (a.o_proj.kernel, P("tp", "fsdp"), (128 // 2, 128 // 4)),
        "down": (model.layers[1].mlp.down_proj.kernel, P("tp", "fsdp"), (256 // 2, 128 // 4)),
        "embed": (model.embed.embedding, P("tp", "fsdp"), (512 // 2, 128 // 4)),
        "lm_head": (model.lm_head.kernel, P("fsdp", "tp"), (128 // 4, 512 // 2)),
        "q_norm": (a.q_norm.scale, P(None), (64,)),
    }
    for name, (var, spec, shard_shape) in expect.items():
        arr = var[...]
        assert arr.sharding.spec == spec, name
        assert arr.sharding.mesh.shape == mesh.shape
        assert {s.data.shape for s in arr.addressable_shards} == {shard_shape}, name
    ref, _ = load_hf(tiny_path)
    np.testing.assert_array_equal(np.asarray(a.q_proj.kernel[...]), np.asarray(ref.layers[0].attn.q_proj.kernel[...]))


def test_create_sharded_random_init():
    from rlvr_jax.sharding import create_sharded

    mesh = make_mesh({"fsdp": 4, "tp": 2})
    cfg = get_preset("tiny-llama")
    model = create_sharded(lambda: Decoder(cfg, nnx.Rngs(1)), mesh)
    kernel = model.layers[1].mlp.up_proj.kernel[...]
    assert kernel.sharding.spec == P("fsdp", "tp")
    ref = Decoder(cfg, nnx.Rngs(1)).layers[1].mlp.up_proj.kernel[...]
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(ref), rtol=1e-6, atol=1e-7)


def test_divisibility_error_names_parameter():
    mesh = make_mesh({"fsdp": 4, "tp": 2})
    model = nnx.eval_shape(lambda: Decoder(get_preset("tiny-qwen3", vocab_size=301)))
    with pytest.raises(ValueError, match=r"embed.*embedding.*size 301, not divisible by mesh axes tp"):
        shard_model(model, mesh)


def test_sharded_forward_loss_grad_equals_single_device(tiny_path):
    rs = np.random.RandomState(0)
    B, T = 8, 12
    ids = rs.randint(3, 512, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    mask[1, :4] = 0
    mask[5, :7] = 0

    def loss_fn(model, ids, mask):
        h = model.hidden(ids[:, :-1], attention_mask=mask[:, :-1])
        lp, ent = token_logprobs(h, model.unembed_matrix(), ids[:, 1:], chunk_size=5)
        m = mask[:, 1:].astype(jnp.float32)
        return -(lp * m).sum() / m.sum() - 0.01 * (ent * m).sum() / m.sum()

    def run(model, mesh=None):
        graphdef, state = nnx.split(model)

        @jax.jit
        def f(state, ids, mask):
            def inner(s):
                return loss_fn(nnx.merge(graphdef, s), ids, mask)
            return jax.value_and_grad(inner)(state)

        if mesh is None:
            return f(state, jnp.asarray(ids), jnp.asarray(mask))
        with jax.set_mesh(mesh):
            bs = batch_sharding(mesh)
            return f(state, jax.device_put(ids, bs), jax.device_put(mask, bs))

    single, _ = load_hf(tiny_path)
    l1, g1 = run(single)
    mesh = make_mesh({"data": 1, "fsdp": 4, "tp": 2})
    sharded, _ = load_hf(tiny_path, mesh=mesh)
    l2, g2 = run(sharded, mesh)
    assert len(g2["layers"][0]["mlp"]["gate_proj"]["kernel"][...].sharding.device_set) == 8
    assert abs(float(l1) - float(l2)) <= 1e-5 * abs(float(l1))
    worst = 0.0
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, float(np.abs(a - b).max() / np.abs(a).max()))
    print(f"\n[sharding] fsdp=4,tp=2 vs single device: loss {float(l1):.6f} vs {float(l2):.6f}, "
          f"max grad rel err {worst:.2e}")
    assert worst < 1e-5


def test_initialize_distributed_single_process(monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(k, raising=False)
    assert initialize_distributed() is False
    with pytest.raises(ValueError, match="needs coordinator, num_processes and process_id together"):
        initialize_distributed(coordinator="localhost:1234")
    with pytest.raises(ValueError, match="process_id 3 out of range"):
        initialize_distributed(coordinator="localhost:1234", num_processes=2, process_id=3)


def test_shard_model_places_every_parameter_per_rules():
    mesh = make_mesh({"fsdp": 4, "tp": 2})
    model = shard_model(Decoder(get_preset("tiny-qwen3")), mesh)
    q = model.layers[0].attn.q_proj.kernel[...]
    assert q.sharding.mesh.shape == mesh.shape
    assert q.sharding.spec == logical_to_spec(("embed", "heads"))
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape != q.shape
