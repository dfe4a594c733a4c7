"""Weight transports without a server: the shared-memory segment (writer, the worker extension's reader, version
and torn-write checks, stale segments), the transports' export / load / commit / discard bookkeeping against a
client that runs the worker extension's reader, and the dtype cast the shm path does on the learner side (the same
bits as the cast vLLM does when it loads float32 files). The transports against a real server are in
tests/test_vllm_engine.py (bit-identical log-probs after either transport)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rlvr_jax.rollout import vllm_shm
from rlvr_jax.rollout.vllm_transport import (FilesystemTransport, SharedMemoryTransport, WeightVersionError,
                                             remove_stale_segments)


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"model.embed_tokens.weight": rng.standard_normal((7, 4)).astype(np.float32),
            "model.layers.0.mlp.down_proj.weight": rng.standard_normal((4, 3)).astype(np.float32),
            "model.norm.weight": rng.standard_normal(5).astype(np.float32)}


def _tensors_fn(w: dict):
    return [(k, v.shape, "float32") for k, v in w.items()], lambda: iter(w.items())


class _ShmWorkerClient:
    """Stands in for VLLMClient: ``rlvr_load_shm`` runs the worker extension's own reader on the segment."""

    base_url = "http://fake"

    def __init__(self):
        self.loaded: dict | None = None
        self.calls = []

    def collective_rpc(self, method, kwargs=None, timeout_s=None):
        from rlvr_jax.rollout.vllm_worker_ext import _Mapping, segment_tensors

        self.calls.append(method)
        assert method == "rlvr_load_shm"
        buf = _Mapping(kwargs["path"]).mm
        header = vllm_shm.read_header(buf)
        vllm_shm.check(header, int(kwargs["version"]), kwargs["path"])
        self.loaded = {n: t.numpy().copy() for n, t in segment_tensors(buf, header)}
        return {"results": [{"version": int(kwargs["version"])}, {"version": int(kwargs["version"])}]}

    def reset_prefix_cache(self):
        self.calls.append("reset")


def test_segment_roundtrip_versions_and_torn_writes(tmp_path):
    from rlvr_jax.rollout.vllm_worker_ext import _Mapping, segment_tensors

    w = _weights(0)
    path = str(tmp_path / "seg")
    writer = vllm_shm.SegmentWriter(path, [(k, v.shape, "float32") for k, v in w.items()])
    assert writer.data_offset % 4096 == 0 and all(t["offset"] % 64 == 0 for t in writer.table)
    mm = _Mapping(path).mm
    with pytest.raises(vllm_shm.SegmentError, match="is empty"):
        vllm_shm.check(vllm_shm.read_header(mm), 0, path)
    assert writer.write(iter(w.items()), version=3) == sum(v.nbytes for v in w.values())
    header = vllm_shm.read_header(mm)
    vllm_shm.check(header, 3, path)
    with pytest.raises(vllm_shm.SegmentError, match="holds version 3, expected 4"):
        vllm_shm.check(header, 4, path)
    got = dict(segment_tensors(mm, header))
    assert list(got) == list(w)
    for k, v in w.items():
        np.testing.assert_array_equal(got[k].numpy(), v)  # the same bits, zero-copy views
    # a write that fails half-way leaves the segment marked incomplete: no reader accepts it
    bad = iter([("model.norm.weight", w["model.norm.weight"])])
    with pytest.raises(ValueError, match="missing"):
        writer.write(bad, version=4)
    with pytest.raises(vllm_shm.SegmentError, match="being written"):
        vllm_shm.check(vllm_shm.read_header(mm), 4, path)
    # a reader sees a write that started after it read the header (the load's torn-weights check)
    writer.write(iter(w.items()), version=5)
    before = vllm_shm.read_header(mm)
    writer.write(iter(w.items()), version=6)
    assert vllm_shm.read_header(mm)["writes"] != before["writes"]
    with pytest.raises(ValueError, match="shape"):
        writer.write(iter([("model.norm.weight", np.zeros(4, np.float32))]), version=7)
    with pytest.raises(KeyError, match="not in the weight segment"):
        writer.write(iter([("nope", np.zeros(4, np.float32))]), version=7)
    with pytest.raises(vllm_shm.SegmentError, match="magic"):
        vllm_shm.read_header(b"\0" * 64)
    writer.close()
    assert not os.path.exists(path)


def test_shm_transport_alternates_segments_and_keeps_the_committed_one(tmp_path):
    t = SharedMemoryTransport(tmp_path, tensors_fn=_tensors_fn)
    client = _ShmWorkerClient()
    w1, w2, w3 = _weights(1), _weights(2), _weights(3)
    r1 = t.push(w1, 1, client)
    assert r1.transport == "shm" and r1.nbytes == sum(v.nbytes for v in w1.values())
    assert client.calls == ["rlvr_load_shm", "reset"]
    assert all(np.array_equal(client.loaded[k], w1[k]) for k in w1)
    r2 = t.push(w2, 2, client)
    assert r2.path != r1.path  # the next version goes to the other segment
    # a push whose load fails: the committed version 2 stays intact and is what restore loads
    exported = t.export(w3, 3)
    assert exported.path == r1.path
    t.discard(exported)
    t.restore(client)
    assert all(np.array_equal(client.loaded[k], w2[k]) for k in w2)
    # a client whose workers report another version is refused
    class Stale(_ShmWorkerClient):
        def collective_rpc(self, method, kwargs=None, timeout_s=None):
            super().collective_rpc(method, kwargs, timeout_s)
            return {"results": [{"version": 2}, {"version": 1}]}
    with pytest.raises(WeightVersionError, match=r"versions \[2, 1\], expected 2"):
        t.restore(Stale())
    paths = [r1.path, r2.path]
    t.close()
    assert not any(os.path.exists(p) for p in paths)


def test_stale_segments_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f"rlvr_weights_{dead_pid}_abc123.0").write_bytes(b"x")
    (tmp_path / f"rlvr_weights_{os.getpid()}_abc123.1").write_bytes(b"x")  # ours: kept
    (tmp_path / "other_file.0").write_bytes(b"x")
    assert remove_stale_segments(str(tmp_path)) == [f"rlvr_weights_{dead_pid}_abc123.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_file.0", f"rlvr_weights_{os.getpid()}_abc123.1"]


class _FsClient:
    base_url = "http://fake"

    def __init__(self, report=True):
        self.calls, self.report = [], report

    def collective_rpc(self, method, kwargs=None, timeout_s=None):
        self.calls.append(("rpc", method, kwargs.get("weights_path"), kwargs.get("version")))
        return {"results": [{"version": int(kwargs["version"])}]} if "version" in kwargs else None

    def reset_prefix_cache(self):
        self.calls.append(("reset",))


def test_filesystem_transport_versions(tmp_path):
    def save_fn(weights, path):
        pathlib.Path(path).mkdir(parents=True)
        (pathlib.Path(path) / "model.safetensors").write_bytes(weights)

    transport = FilesystemTransport(tmp_path / "sync", save_fn=save_fn)
    client = _FsClient()
    r1 = transport.push(b"a" * 100, 1, client)
    assert r1.nbytes == 100 and r1.version == 1 and pathlib.Path(r1.path).name == "version_00000001"
    assert client.calls == [("rpc", "rlvr_reload_weights", r1.path, "1"), ("reset",)]
    r2 = transport.push(b"b" * 10, 2, client)
    assert not pathlib.Path(r1.path).exists() and pathlib.Path(r2.path).exists()  # old version deleted
    r2b = transport.push(b"c" * 10, 2, client)  # same version again: a fresh directory, never overwritten
    assert r2b.path != r2.path and not pathlib.Path(r2.path).exists()
    client.calls.clear()
    transport.restore(client)
    assert client.calls == [("rpc", "rlvr_reload_weights", r2b.path, "2"), ("reset",)]
    # a failed push deletes its own export and keeps the committed one
    failed = transport.export(b"e", 9)
    transport.discard(failed)
    assert not pathlib.Path(failed.path).exists() and pathlib.Path(r2b.path).exists()
    # An existing directory is served as is and not deleted by later pushes.
    external = tmp_path / "external"
    save_fn(b"x", external)
    transport.push(str(external), 3, client)
    assert not pathlib.Path(r2b.path).exists()
    transport.push(b"d", 4, client)
    assert (external / "model.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        transport.push(str(tmp_path), 5, client)
    # plain reload_weights (a server without rlvr_jax's worker extension): no version to check
    plain = FilesystemTransport(tmp_path / "plain", save_fn=save_fn, reload_method="reload_weights")
    c2 = _FsClient()
    plain.push(b"p", 1, c2)
    assert c2.calls[0] == ("rpc", "reload_weights", plain.latest.path, None) and not plain.verifies_version
    plain.close()
    transport.close()
    assert (tmp_path / "sync").exists() and not any((tmp_path / "sync").iterdir())


def test_learner_side_bf16_cast_matches_torch():
    """The shm path casts float32 master weights to the segment dtype with XLA; the filesystem path writes float32
    and vLLM casts while loading (torch). Both round to nearest even: the same bfloat16 bits, ties included."""
    import jax.numpy as jnp
    import torch

    from rlvr_jax.rollout.vllm_transport import _to_hf

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 48)).astype(np.float32)
    bits = x.view(np.uint32)
    bits[:8] = (bits[:8] & 0xFFFF0000) | 0x8000  # exact ties between two bfloat16 values
    bits[8:16] = (bits[8:16] & 0xFFFF0000) | 0x18000
    ours = np.asarray(_to_hf(jnp.asarray(x), True, "bfloat16"))
    theirs = torch.from_numpy(x.T.copy()).to(torch.bfloat16)
    assert ours.shape == (48, 64)
    np.testing.assert_array_equal(ours.view(np.uint16), theirs.view(torch.int16).numpy().view(np.uint16))
