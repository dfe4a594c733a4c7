"""Damaged checkpoints and weight files: each corruption is detected and named; resume falls back to the newest
good checkpoint (or stops listing every path); safetensors damage names file and tensor; NaN weights fail."""
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.trainer.checkpointing import Checkpointer, CorruptCheckpointError, atomic_directory


def _state(step):
    k = jax.random.key(step)
    return {"params": {"w": jax.random.normal(k, (64, 64), jnp.float32),
                       "b": (jnp.arange(16, dtype=jnp.bfloat16) * step)},
            "step": jnp.int32(step)}


def _template():
    return jax.tree.map(jnp.zeros_like, _state(0))


def _two_checkpoints(tmp_path):
    d = tmp_path / "ck"
    ck = Checkpointer(str(d), keep=5)
    for s in (1, 2):
        ck.save(s, _state(s), {"data_position": [0, s]}, force=True)
    ck.close()
    return d


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _zero(p):
    p.write_bytes(b"\0" * p.stat().st_size)


def _flip(p):
    b = bytearray(p.read_bytes())
    for i in range(len(b) // 2, len(b) // 2 + 8):
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))


def _bad_checksum(step_dir, key="000000"):
    meta = step_dir / "meta" / "metadata"
    d = json.loads(meta.read_text())
    d["state_checksums"][key][0] ^= 1  # as if one word of the first array had changed
    meta.write_text(json.dumps(d))


DAMAGE = {
    "truncated_state": lambda sd: _truncate(_largest_data_file(sd)),
    "zeroed_state": lambda sd: _zero(_largest_data_file(sd)),
    "flipped_bytes": lambda sd: _flip(_largest_data_file(sd)),
    "checksum_mismatch": _bad_checksum,
    "truncated_meta_json": lambda sd: _truncate(sd / "meta" / "metadata"),
    "deleted_state": lambda sd: [p.unlink() for p in (sd / "state").rglob("*") if p.is_file()],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_corrupt_newest_checkpoint_falls_back_loudly(tmp_path, capsys, caplog, damage):
    d = _two_checkpoints(tmp_path)
    DAMAGE[damage](d / "2")
    ck = Checkpointer(str(d))
    with pytest.raises(CorruptCheckpointError) as e:
        ck.restore(_template(), 2)
    assert e.value.path == str(d / "2")
    if damage in ("truncated_state", "zeroed_state"):  # the unreadable array is named
        assert "cannot be read (array ['params']" in str(e.value), str(e.value)
    with caplog.at_level(logging.WARNING):
        state, meta, step = ck.restore_newest_good(_template())
    assert step == 1 and meta["data_position"] == [0, 1]
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(_state(1))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    err = capsys.readouterr().err
    assert f"corrupt checkpoint {d / '2'}" in err and "resumed from step 1" in err and "!!!!" in err
    # The corrupt one is kept for inspection but out of the way: the redone step 2 saves normally.
    assert ck.all_steps() == [1] and (d / "corrupt" / "2").is_dir()
    assert ck.save(2, _state(2), {}, force=True) and ck.restore(_template(), 2)[1]["step"] == 2
    ck.close()


def test_every_checkpoint_corrupt_stops_with_the_paths(tmp_path):
    d = _two_checkpoints(tmp_path)
    _truncate(_largest_data_file(d / "2"))
    _bad_checksum(d / "1")
    ck = Checkpointer(str(d))
    with pytest.raises(CorruptCheckpointError) as e:
        ck.restore_newest_good(_template())
    msg = str(e.value)
    assert str(d / "2") in msg and str(d / "1") in msg and "every checkpoint in it is corrupt" in msg
    ck.close()


def test_changed_state_tree_is_an_error_not_a_fallback(tmp_path):
    d = _two_checkpoints(tmp_path)
    ck = Checkpointer(str(d))
    other = dict(_template(), extra=jnp.zeros(3))
    with pytest.raises(ValueError, match="different state tree"):
        ck.restore_newest_good(other)
    assert ck.restore_newest_good(_template())[2] == 2  # the intact newest one
    ck.close()


def test_policy_subtree_restore_detects_corruption(tmp_path):
    d = tmp_path / "ck"
    ck = Checkpointer(str(d))
    ck.save(3, {"policy": {"params": _state(3)["params"]}, "opt": jnp.ones(4)}, {}, force=True)
    ck.close()
    ck = Checkpointer(str(d))
    params, _ = ck.restore_subtree(_template()["params"], "['policy']['params']", 3)
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(_state(3)["params"]["w"]))
    _bad_checksum(d / "3", "000002")  # leaves: ['opt'], ['policy']['params']['b'], ['policy']['params']['w']
    with pytest.raises(CorruptCheckpointError, match=r"do not match the checksums.*\['w'\]"):
        ck.restore_subtree(_template()["params"], "['policy']['params']", 3)
    ck.close()


def test_half_written_checkpoint_dir_is_ignored(tmp_path):
    """A kill during an orbax save leaves only a temporary directory, which is never taken for a checkpoint."""
    d = _two_checkpoints(tmp_path)
    (d / "3.orbax-checkpoint-tmp-1234").mkdir()
    (d / "3.orbax-checkpoint-tmp-1234" / "junk").write_bytes(b"\0" * 100)
    ck = Checkpointer(str(d))
    assert ck.latest_step() == 2 and ck.restore_newest_good(_template())[2] == 2
    ck.close()


def test_atomic_directory_keeps_old_on_failure(tmp_path):
    target = tmp_path / "final_hf"
    with atomic_directory(str(target)) as tmp:
        os.makedirs(tmp)
        (pathlib.Path(tmp) / "a").write_text("v1")
    assert (target / "a").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_directory(str(target)) as tmp:
            os.makedirs(tmp)
            (pathlib.Path(tmp) / "a").write_text("half")
            raise RuntimeError("killed mid-export")
    assert (target / "a").read_text() == "v1" and not os.path.exists(f"{target}.tmp")
    with atomic_directory(str(target)) as tmp:
        os.makedirs(tmp)
        (pathlib.Path(tmp) / "b").write_text("v2")
    assert sorted(os.listdir(target)) == ["b"] and not os.path.exists(f"{target}.old")


# --------------------------------------------------------------------------- Hugging Face weight files
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from flax import nnx

    from rlvr_jax.models import Decoder, get_preset, save_hf
    d = tmp_path_factory.mktemp("hf") / "model"
    save_hf(Decoder(get_preset("tiny-qwen3"), rngs=nnx.Rngs(0)), d)
    return d


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors_names_file_and_tensor(tmp_path, hf_dir):
    from rlvr_jax.models import load_hf
    d = _copy(hf_dir, tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size - 1000])
    with pytest.raises(ValueError, match=r"model.safetensors: tensor '[^']+' ends at byte \d+ .* truncated"):
        load_hf(d)
    f.write_bytes(f.read_bytes()[:4])
    with pytest.raises(ValueError, match="model.safetensors: truncated or not a safetensors file"):
        load_hf(d)
    f.write_bytes((20).to_bytes(8, "little") + b"{not json at all....")
    with pytest.raises(ValueError, match="model.safetensors: unreadable safetensors header"):
        load_hf(d)


def test_nonfinite_weights_error_or_warn(tmp_path, hf_dir, capsys):
    from rlvr_jax.models import load_hf
    from rlvr_jax.models.hf_io import SafetensorsFile
    d = _copy(hf_dir, tmp_path / "m")
    f = SafetensorsFile(d / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    s, _ = f.header[name]["data_offsets"]
    dtype = f.header[name]["dtype"]
    assert dtype == "F32"
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[f._base + s:f._base + s + 4] = np.float32(np.nan).tobytes()
    del f
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"1 tensor\(s\) hold NaN or infinite values: {name}"):
        load_hf(d)
    model, _ = load_hf(d, nonfinite="warn")
    assert "WARNING" in capsys.readouterr().out
    assert not np.isfinite(np.asarray(model.layers[1].mlp.up_proj.kernel.get_value())).all()
