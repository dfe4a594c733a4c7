"""Checkpointer round trip (bit-exact, sharded), keep-last-K, every-N, and the SIGTERM guard."""
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rlvr_jax.trainer.checkpointing import Checkpointer, PreemptionGuard


def _state(seed):
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("fsdp", "tp"))
    k = jax.random.key(seed)
    w = jax.device_put(jax.random.normal(k, (8, 6), jnp.float32), NamedSharding(mesh, P("fsdp", "tp")))
    return {"params": {"w": w, "b": jnp.arange(3, dtype=jnp.bfloat16) * seed},
            "opt": (jnp.int32(seed), jnp.ones((2,), jnp.float32) / 3),
            "rng": jax.random.key_data(jax.random.key(seed + 100))}


def test_round_trip_bit_exact_and_sharded(tmp_path):
    ck = Checkpointer(str(tmp_path / "ck"), keep=2, every=1)
    s = _state(1)
    assert ck.save(3, s, {"data_position": [0, 12], "config": {"a": 1}})
    restored, meta = ck.restore(jax.tree.map(jnp.zeros_like, s))
    assert meta["step"] == 3 and meta["data_position"] == [0, 12] and meta["config"] == {"a": 1}
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    assert restored["params"]["w"].sharding == s["params"]["w"].sharding
    ck.close()


def test_keep_last_k_and_every(tmp_path):
    ck = Checkpointer(str(tmp_path / "ck"), keep=2, every=2)
    saved = [s for s in range(1, 7) if ck.save(s, _state(s), {})]
    assert saved == [2, 4, 6]
    assert ck.save(7, _state(7), {}, force=True)
    assert ck.all_steps() == [6, 7] and ck.latest_step() == 7
    ck.close()
    # A fresh manager over the same directory finds the latest (automatic resume).
    ck2 = Checkpointer(str(tmp_path / "ck"), keep=2, every=2)
    assert ck2.latest_step() == 7
    restored, meta = ck2.restore(_state(0))
    assert meta["step"] == 7 and int(restored["opt"][0]) == 7
    with pytest.raises(FileNotFoundError):
        Checkpointer(str(tmp_path / "empty")).restore(_state(0))


def test_preemption_guard_catches_sigterm_and_restores_handler():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.signal_received == signal.SIGTERM
        assert guard.requested_anywhere()
    assert signal.getsignal(signal.SIGTERM) == before


def test_policy_restores_alone_from_a_run_checkpoint(tmp_path):
    """The evaluator's path: only the policy parameters of a training checkpoint are read back into a model."""
    import jax.numpy as jnp
    from flax import nnx

    from rlvr_jax.trainer.checkpointing import load_policy_checkpoint
    from rlvr_jax.models import Decoder, get_preset

    model = Decoder(get_preset("tiny-qwen3"), rngs=nnx.Rngs(7))  # not the default seed of a fresh Decoder
    params = nnx.state(model, nnx.Param)
    state = {"policy": {"params": params, "opt_state": {"mu": jax.tree.map(jnp.zeros_like, params)},
                        "step": jnp.int32(5)}}
    ck = Checkpointer(str(tmp_path / "checkpoints"))
    ck.save(5, state, {"config": {"model": {"preset": "tiny-qwen3", "param_dtype": "float32"}}}, force=True)
    ck.close()
    restored, cfg, step = load_policy_checkpoint(str(tmp_path))  # the run's out_dir works too
    assert step == 5 and cfg.num_layers == 2
    ids = jnp.asarray(np.arange(12, dtype=np.int32).reshape(2, 6))
    np.testing.assert_array_equal(np.asarray(restored(ids)), np.asarray(model(ids)))
    with pytest.raises(FileNotFoundError):
        load_policy_checkpoint(str(tmp_path / "nowhere"))
