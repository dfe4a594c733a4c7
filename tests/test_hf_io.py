"""load_hf / save_hf round trips through transformers, sharded export, dtypes, and named errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from helpers_models import load_torch_model, make_tiny_hf_model
from rlvr_jax.models import hf_tensor_map, load_hf, save_hf
from rlvr_jax.models.hf_io import INDEX_FILE, SafetensorsFile, _write_safetensors, parse_size


def _torch_logits(path_or_model, ids):
    tm = load_torch_model(path_or_model) if not isinstance(path_or_model, torch.nn.Module) else path_or_model
    with torch.no_grad():
        return tm(torch.tensor(ids)).logits.numpy()


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfio")
    path = make_tiny_hf_model(root, "qwen2", seed=1)
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    return path


IDS = np.random.RandomState(0).randint(0, 512, (2, 9))


def test_round_trip_identical_logits(src, tmp_path):
    model, cfg = load_hf(src)
    out = save_hf(model, tmp_path / "export", source_dir=src)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"]
    hf_cfg = transformers.AutoConfig.from_pretrained(out)
    assert hf_cfg.architectures == ["Qwen2ForCausalLM"] and hf_cfg.model_type == "qwen2"
    np.testing.assert_array_equal(_torch_logits(out, IDS), _torch_logits(src, IDS))
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 2
    # Exported tensors are bit-identical to the source checkpoint's.
    a, b = SafetensorsFile(src / "model.safetensors"), SafetensorsFile(out / "model.safetensors")
    assert set(a.keys()) == set(b.keys())
    for k in a.keys():
        np.testing.assert_array_equal(a.tensor(k), b.tensor(k))


def test_modified_weights_change_transformers_output(src, tmp_path):
    model, cfg = load_hf(src)
    k = model.layers[1].attn.q_proj.kernel
    k.set_value(k[...] * 1.5 + 0.01)
    model.lm_head.kernel.set_value(model.lm_head.kernel[...].at[:, 7].add(0.5))
    out = save_hf(model, tmp_path / "modified")
    new = _torch_logits(out, IDS)
    old = _torch_logits(src, IDS)
    ours = np.asarray(jax.jit(lambda x: model(x))(jnp.asarray(IDS, jnp.int32)))
    assert np.abs(new - old).max() > 1e-2
    assert np.abs(ours - new).max() / np.abs(new).max() < 1e-5


def test_sharded_export_round_trip(src, tmp_path):
    model, cfg = load_hf(src)
    out = save_hf(model, tmp_path / "sharded", max_shard_size="100KB")
    index = json.loads((out / INDEX_FILE).read_text())
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 3 and set(index["weight_map"].values()) == set(files)
    assert set(index["weight_map"]) == {n for n, _, _ in hf_tensor_map(model)}
    for f in files:  # every shard respects the limit unless it holds a single bigger tensor
        sf = SafetensorsFile(out / f)
        assert (out / f).stat().st_size <= 100_000 + 4096 or len(sf.header) == 1
    np.testing.assert_array_equal(_torch_logits(out, IDS), _torch_logits(src, IDS))
    again, _ = load_hf(out)
    for (n, a, _), (_, b, _) in zip(hf_tensor_map(model), hf_tensor_map(again)):
        np.testing.assert_array_equal(a[...], b[...], err_msg=n)


def test_bfloat16_export_and_import(src, tmp_path):
    model, cfg = load_hf(src)
    out = save_hf(model, tmp_path / "bf16", dtype="bfloat16")
    sf = SafetensorsFile(out / "model.safetensors")
    assert {v["dtype"] for v in sf.header.values()} == {"BF16"}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    m16, c16 = load_hf(out, dtype="bfloat16")
    assert c16.param_dtype == "bfloat16" and m16.embed.embedding[...].dtype == jnp.bfloat16
    tm = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ref = _torch_logits(tm, IDS)
    np.testing.assert_allclose(m16.embed.embedding[...].astype(jnp.float32),
                               tm.model.embed_tokens.weight.detach().numpy(), rtol=0, atol=0)
    assert np.abs(ref - _torch_logits(src, IDS)).max() / np.abs(ref).max() < 5e-2


def test_dtypes_accepted_as_jax_and_numpy_objects(src, tmp_path):
    """``load_hf(path, dtype=jnp.float32)`` (the JAX convention) loads exactly what the string spelling loads."""
    by_name, cfg_name = load_hf(src, dtype="float32")
    by_obj, cfg_obj = load_hf(src, dtype=jnp.float32)
    assert cfg_obj == cfg_name and cfg_obj.dtype == "float32" and cfg_obj.param_dtype == "float32"
    np.testing.assert_array_equal(np.asarray(by_obj.lm_head.kernel[...]), np.asarray(by_name.lm_head.kernel[...]))
    mixed, cfg_mixed = load_hf(src, dtype=np.dtype("float32"), param_dtype=jnp.bfloat16)
    assert (cfg_mixed.dtype, cfg_mixed.param_dtype) == ("float32", "bfloat16")
    assert mixed.embed.embedding[...].dtype == jnp.bfloat16
    out = save_hf(by_obj, tmp_path / "bf16", dtype=jnp.bfloat16)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert {v["dtype"] for v in SafetensorsFile(out / "model.safetensors").header.values()} == {"BF16"}
    with pytest.raises(ValueError, match=r"ModelConfig.param_dtype must be one of .*got <class 'jax.numpy.int32'>"):
        load_hf(src, dtype=jnp.int32)


def test_tied_qwen3_export_has_no_lm_head(tmp_path):
    path = make_tiny_hf_model(tmp_path, "qwen3")
    model, cfg = load_hf(path)
    assert cfg.tie_word_embeddings and model.lm_head is None
    out = save_hf(model, tmp_path / "tied")
    assert "lm_head.weight" not in SafetensorsFile(out / "model.safetensors").header
    np.testing.assert_array_equal(_torch_logits(out, IDS), _torch_logits(path, IDS))


def _rewrite(path, edit):
    """Rewrites model.safetensors after ``edit(dict_of_arrays)``."""
    sf = SafetensorsFile(path / "model.safetensors")
    tensors = {k: np.array(sf.tensor(k)) for k in sf.keys()}
    del sf
    edit(tensors)
    names = list(tensors)
    dt = tensors[names[0]].dtype
    _write_safetensors(path / "model.safetensors", names, [t.shape for t in tensors.values()], dt,
                       iter(tensors.values()))


def test_errors_name_the_tensor(tmp_path):
    base = make_tiny_hf_model(tmp_path, "qwen3")

    _rewrite(base, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"lacks 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight.*\(256, 128\)"):
        load_hf(base)

    _rewrite(base, lambda t: t.update({"model.layers.1.mlp.up_proj.weight": np.zeros((256, 128), np.float32),
                                       "model.layers.2.mlp.up_proj.weight": np.zeros((4, 4), np.float32)}))
    with pytest.raises(ValueError, match=r"unexpected tensor.*model\.layers\.2\.mlp\.up_proj\.weight \(4, 4\)"):
        load_hf(base)

    _rewrite(base, lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    load_hf(base)  # valid again
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 200}))
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(256, 128\) "
                                         r"in the checkpoint but the config implies \(200, 128\)"):
        load_hf(base)
    (base / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_hf(base)


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2MiB") == 2 * 2**20 and parse_size(123) == 123
    with pytest.raises(ValueError, match="cannot parse size"):
        parse_size("lots")


def test_save_load_jit_compatible(src, tmp_path):
    """A loaded model works under nnx.split / merge inside jit, and its params are concrete arrays."""
    from flax import nnx

    model, _ = load_hf(src)
    graphdef, state = nnx.split(model)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    f = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    ref = _torch_logits(src, IDS)
    out = np.asarray(f(state, jnp.asarray(IDS, jnp.int32)))
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5
