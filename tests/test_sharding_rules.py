"""One rule set for everything: use_rules / active_rules, a custom rule set reaching parameters, batches,
activations and the sampler's rows and KV cache, models built already sharded, and the host gather."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from helpers_models import load_torch_model, make_tiny_hf_model
from rlvr_jax.config import ConfigError, get_base_config, validate_config
from rlvr_jax.models import Decoder, build_model, get_preset, hf_tensor_map
from rlvr_jax.rollout.base import SamplingParams
from rlvr_jax.rollout.jax_sampler import JaxSampler
from rlvr_jax.sharding import (DEFAULT_RULES, active_rules, batch_sharding, config_rules, create_sharded,
                               logical_to_spec, make_mesh, param_shardings, resolve_rules, to_host, use_rules)

# batch over fsdp only (not data), embed replicated, activations' embed dimension over tp, cache heads replicated
CUSTOM = (("batch", "fsdp"), ("embed", None), ("act_embed", "tp"), ("kv_heads", None))
# tiny-qwen3 with two kv heads, so that tp=2 divides them (the default rules put the cache heads on tp)
TWO_KV = dict(num_heads=4, num_kv_heads=2)


def test_use_rules_nests_restores_and_merges_over_defaults():
    assert active_rules() == DEFAULT_RULES
    with use_rules(CUSTOM) as r:
        assert active_rules() == r and dict(r)["batch"] == "fsdp" and dict(r)["vocab"] == "tp"
        assert logical_to_spec(("batch", "embed")) == P("fsdp", None)
        with use_rules({"mlp": ("fsdp", "tp")}):
            assert logical_to_spec(("mlp",)) == P(("fsdp", "tp"))
            assert logical_to_spec(("batch",)) == P(("data", "fsdp"))  # a rule set is complete on its own
        assert active_rules() == r
        with pytest.raises(RuntimeError), use_rules(DEFAULT_RULES):
            raise RuntimeError("the block fails")
        assert active_rules() == r
    assert active_rules() == DEFAULT_RULES
    assert resolve_rules(()) == DEFAULT_RULES
    with pytest.raises(ValueError, match=r"'heads' -> 'model'.*mesh axes must be among"):
        resolve_rules((("heads", "model"),))
    with pytest.raises(ValueError, match="not a .logical_name"):
        resolve_rules(("heads",))


def test_config_rules_and_validation():
    cfg = get_base_config()
    cfg.model.hf_path, cfg.model.preset, cfg.model.tokenizer_path = "", "tiny-qwen3", "builtin:bytes"
    cfg.data.max_prompt_len, cfg.rollout.max_new_tokens = 64, 64  # within tiny-qwen3's positions
    validate_config(cfg)
    assert config_rules(cfg) == DEFAULT_RULES
    cfg.mesh.rules = (("batch", "fsdp"),)
    assert dict(config_rules(cfg))["batch"] == "fsdp"
    cfg.mesh.rules = (("batch", "dp"),)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert e.value.field == "mesh.rules"
    # the micro-batch must split over the batch rule's axes: 2 rows over fsdp=4 cannot
    cfg.mesh.rules = (("batch", "fsdp"),)
    cfg.mesh.shape = {"data": 2, "fsdp": 4, "tp": 1}
    cfg.train.micro_batch_size = 2
    with pytest.raises(ConfigError, match=r"fsdp=4") as e:
        validate_config(cfg, num_devices=8)
    assert e.value.field == "train.micro_batch_size"
    cfg.train.micro_batch_size = 4  # 4 rows over fsdp=4 (data only replicates the batch)
    validate_config(cfg, num_devices=8)


def _constraints(text: str, shape: str) -> set[str]:
    """The shardings of every ``sdy.sharding_constraint`` on a tensor of ``shape`` (e.g. '4x8x128')."""
    return set(re.findall(r"sdy\.sharding_constraint %\S+ <@mesh, (\[.*?\])> : tensor<" + shape + "x", text))


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_one_rule_set_reaches_params_batch_activations_rows_and_cache(custom):
    mesh = make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    cfg = get_preset("tiny-qwen3", **TWO_KV)
    with use_rules(CUSTOM if custom else None):
        model = create_sharded(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh)
        sampler = JaxSampler(model, mesh=mesh, max_batch_size=8, max_prompt_len=16, max_new_tokens_limit=16,
                             scheduler="static")
        batch = batch_sharding(mesh)
        graphdef, state = nnx.split(model)
        hidden = jax.jit(lambda s, ids: nnx.merge(graphdef, s).hidden(ids))
        with jax.set_mesh(mesh):
            text = hidden.lower(state, jnp.zeros((4, 8), jnp.int32)).as_text()
    rows = ("fsdp",) if custom else ("data", "fsdp")
    # parameters
    assert model.layers[0].attn.q_proj.kernel[...].sharding.spec == (P(None, "tp") if custom else P("fsdp", "tp"))
    assert model.embed.embedding[...].sharding.spec == (P("tp", None) if custom else P("tp", "fsdp"))
    # batches
    assert batch.spec == (P("fsdp", None) if custom else P(("data", "fsdp"), None))
    # activations: the residual stream [B=4, T=8, H=128] after the embedding and after each block
    want = '[{"fsdp"}, {}, {"tp"}]' if custom else '[{"data", "fsdp"}, {}, {}]'
    assert _constraints(text, "4x8x128") == {want}
    # sampler rows, cache, and the rules its traced calls run under
    assert sampler.rows.axes == rows and sampler.rows.multiple == int(np.prod([mesh.shape[a] for a in rows]))
    put = sampler.rows.put(np.arange(8 * 3, dtype=np.int32).reshape(8, 3))
    assert put.sharding.spec == P(rows[0] if custom else rows, None)
    np.testing.assert_array_equal(np.asarray(put), np.arange(24).reshape(8, 3))
    with sampler.rows.context():
        assert active_rules() == resolve_rules(CUSTOM if custom else None)
        cache = jax.jit(lambda: sampler.rows.constrain_cache(model.init_cache(8, 32)))()
    spec = P("fsdp", None, None, None) if custom else P(("data", "fsdp"), None, "tp", None)  # [B, S, K, D]
    assert cache["k"][1].sharding.is_equivalent_to(NamedSharding(mesh, spec), 4)
    assert cache["k"][1].addressable_shards[0].data.shape == ((4, 32, 2, 64) if custom else (2, 32, 1, 64))


def test_sampler_under_custom_rules_matches_unsharded():
    cfg = get_preset("tiny-qwen3", **TWO_KV)
    prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14], [3]]
    params = SamplingParams(temperature=0.0, max_new_tokens=5, seed=0)
    kw = dict(max_batch_size=8, max_prompt_len=16, max_new_tokens_limit=16, scheduler="static")
    ref = JaxSampler(Decoder(cfg, rngs=nnx.Rngs(0)), **kw).generate(prompts, 2, params)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    with use_rules(CUSTOM):
        model = create_sharded(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh)
    sampler = JaxSampler(model, mesh=mesh, rules=CUSTOM, **kw)  # explicit rules, outside the block
    assert sampler.rows.axes == ("fsdp",)
    out = sampler.generate(prompts, 2, params)
    for r, o in zip(ref, out):
        for a, b in zip(r, o):
            assert a.token_ids == b.token_ids and len(a.token_ids) == 5
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-5)


def _train_cfg(**model):
    cfg = get_base_config()
    for k, v in model.items():
        setattr(cfg.model, k, v)
    cfg.train.seed = 3
    return cfg


def test_build_model_preset_is_created_sharded_and_equals_unsharded_build():
    mesh = make_mesh({"fsdp": 4, "tp": 2})
    cfg = _train_cfg(preset="tiny-llama", hf_path="", remat="full", attention_impl="xla",
                     decode_attention_impl="pallas")
    model, mcfg = build_model(cfg, mesh, CUSTOM)
    assert mcfg.num_layers == 2 and (mcfg.dtype, mcfg.param_dtype) == (cfg.model.dtype, cfg.model.param_dtype)
    assert (mcfg.remat, mcfg.attention_impl, mcfg.decode_attention_impl) == ("full", "xla", "pallas")
    shardings = param_shardings(model, mesh, CUSTOM)
    got, want = nnx.to_flat_state(nnx.state(model)), dict(nnx.to_flat_state(shardings))
    for path, v in got:
        w = want[path].get_value() if isinstance(want[path], nnx.Variable) else want[path]
        assert v[...].sharding.is_equivalent_to(w, v[...].ndim), path
    up = model.layers[1].mlp.up_proj.kernel[...]  # [embed, mlp] -> (None, tp) under CUSTOM
    assert up.sharding.spec == P(None, "tp") and up.addressable_shards[0].data.shape == (128, 128)
    ref = Decoder(mcfg, rngs=nnx.Rngs(3))
    for (path, a), (_, b) in zip(got, nnx.to_flat_state(nnx.state(ref))):
        # same random draws; jit may fuse the scale into the normal sampler: equal to within 2 ulp
        np.testing.assert_allclose(np.asarray(a[...]), np.asarray(b[...]), rtol=2.5e-7, atol=0, err_msg=str(path))
    unsharded, _ = build_model(cfg, None)
    np.testing.assert_array_equal(np.asarray(unsharded.embed.embedding[...]), np.asarray(ref.embed.embedding[...]))


def test_build_model_hf_loads_each_tensor_to_its_sharding(tmp_path):
    path = make_tiny_hf_model(tmp_path, "qwen2", seed=4)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    model, mcfg = build_model(_train_cfg(hf_path=str(path)), mesh, CUSTOM)
    assert mcfg.model_type == "qwen2"
    torch_sd = {k: v.numpy() for k, v in load_torch_model(path).state_dict().items()}
    for name, var, transposed in hf_tensor_map(model):
        arr = var[...]
        axes = var.get_metadata()["logical_axes"]
        assert arr.sharding == NamedSharding(mesh, logical_to_spec(axes, CUSTOM)), name
        np.testing.assert_array_equal(np.asarray(arr), torch_sd[name].T if transposed else torch_sd[name],
                                      err_msg=name)
    gate = model.layers[0].mlp.gate_proj.kernel[...]  # [embed, mlp] = [128, 256] -> (None, tp)
    assert {s.data.shape for s in gate.addressable_shards} == {(128, 128)}


def test_to_host_gathers_sharded_and_passes_host_values():
    mesh = make_mesh({"fsdp": 4, "tp": 2})
    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    arr = jax.device_put(x, NamedSharding(mesh, P("fsdp", "tp")))
    out = to_host(arr)
    assert isinstance(out, np.ndarray) and out.shape == (8, 8)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(to_host(x[:2]), x[:2])
    assert to_host(3.5) == np.float32(3.5)
