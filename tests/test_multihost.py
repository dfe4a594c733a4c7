"""A learner step in 2 local processes (gloo CPU collectives, 2 devices each) equals 1 process with 4 devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker(process_id: int, num_processes: int, port: int, out: str, local_devices: int) -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from flax import nnx

    from rlvr_jax.batch import pack_sequences
    from rlvr_jax.sharding import to_host
    from rlvr_jax.trainer.learner import Learner, LearnerOptions
    from rlvr_jax.models import Decoder, get_preset
    from rlvr_jax.objectives.types import ObjectiveHParams
    from rlvr_jax.sharding import initialize_distributed, make_mesh
    from rlvr_jax.sharding import shard_model

    if num_processes > 1:
        initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
    assert jax.device_count() == 4, jax.device_count()
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1})
    model = shard_model(Decoder(get_preset("tiny-qwen3", dtype="float32"), rngs=nnx.Rngs(0)), mesh, None)
    opts = LearnerOptions(objective="grpo", hp=ObjectiveHParams(entropy_coef=1e-3, agg_mode="token-mean"),
                          micro_batch_size=4, length_bucket=8, logprob_chunk_size=8, lr=1e-2, eps=1e-3)
    learner = Learner(model, opts, mesh)
    rng = np.random.default_rng(0)  # identical host data on every process
    prompts = [list(rng.integers(3, 500, size=rng.integers(2, 9))) for _ in range(8)]
    responses = [list(rng.integers(3, 500, size=rng.integers(1, 12))) for _ in range(8)]
    b = pack_sequences(prompts, responses, 8)
    b = b.replace(advantages=(np.where(rng.random(8) < 0.5, 1.0, -1.0)[:, None] * b.response_mask).astype(np.float32))
    b = b.replace(old_logp=learner.compute_logprobs(b)[0] - 0.1 * b.response_mask)
    m = learner.update(b)
    leaves = [to_host(x) for x in jax.tree.leaves(learner.policy.state["params"])]
    if jax.process_index() == 0:
        np.savez(out, *leaves)
        with open(out + ".json", "w") as f:
            json.dump(m, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args, env):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    single = str(tmp_path / "single.npz")
    multi = str(tmp_path / "multi.npz")
    port = _free_port()
    procs = [_spawn([0, 1, 0, single, 4], env)] + [_spawn([i, 2, port, multi, 2], env) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    a, b = np.load(single), np.load(multi)
    assert len(a.files) == len(b.files) > 10
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    ma = json.load(open(single + ".json"))
    mb = json.load(open(multi + ".json"))
    assert ma["actor/loss"] == pytest.approx(mb["actor/loss"], rel=1e-5)


if __name__ == "__main__":
    pid, nproc, port, out, ndev = sys.argv[1:6]
    _worker(int(pid), int(nproc), int(port), out, int(ndev))
