"""Fault injection into the vLLM rollout servers (issues 18 and 26), on the CPU build with a tiny random model.

1. An uninterrupted NSR training run on two vLLM replicas (``rollout.vllm.num_servers=2``, weights synced through
   shared memory) whose every rollout batch (4 prompts x 8 samples of ~190 tokens, about 6,000 prompt tokens)
   exceeds vLLM's CPU default batched-token budget (2,048), so with chunked prefill on it would split prompts and
   hit ``RuntimeError: CPU Generator does not use offset``: with the launch settings of
   rlvr_jax/rollout/vllm_server.py it must finish with zero engine restarts (``rollout/engine_restarts``), both
   replicas generating in every step.
2. The same run with replica 0 SIGKILLed during a generation (it is restarted and re-synced in the background
   while replica 1 takes over its prompts) and during a weight sync (restarted and given the new version): the
   run ends with the same steps (none lost, none repeated) and the same metrics as the uninterrupted run.
3. A trainer process SIGKILLed while its server runs leaves no server process behind (PR_SET_PDEATHSIG).

Server start-ups: two per training run (in parallel), two restarts, one for the orphan test.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from rlvr_jax.rollout.vllm_engine import server_error_cause
from rlvr_jax.rollout.vllm_server import VLLMServerConfig, build_command

pytestmark = pytest.mark.faults
server = pytest.mark.vllm  # the tests that start a real vLLM server (one per test)

STEPS = 4
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
# ~80-byte problems: with the qwen_boxed template each prompt is ~190 byte-level tokens.
ENV_PROBLEMS = [(f"Problem {i}: compute the value of {i} plus {i} and give only the final number, nothing else.",
                 str(2 * i)) for i in range(8)]  # the data of the conftest's `env` fixture
# wall-clock figures, the restart count, and which replica served what
VOLATILE = ("timing_s/", "perf/", "rollout/engine_restarts", "rollout/replica_")
# the rollout-vs-learner log-prob diagnostics read vLLM's own log-probs, which a restarted server (cold prefix
# cache, so prompts are recomputed rather than read from cache) reproduces only to float32 rounding
ENGINE_LOGPROB_METRICS = "rollout_corr/"


# ------------------------------------------------------------------------------------------------------
# Without a server: launch settings, the parent-death shim, the restart cause
# ------------------------------------------------------------------------------------------------------

def test_cpu_launch_turns_chunked_prefill_off_with_a_whole_prompt_budget():
    def cmd(**kw):
        return " ".join(build_command(VLLMServerConfig(model="/m", **kw), 1))

    assert "--no-enable-chunked-prefill --max-num-batched-tokens 2048" in cmd(device="cpu", max_model_len=512)
    assert "--no-enable-chunked-prefill --max-num-batched-tokens 4096" in cmd(device="cpu", max_model_len=4096)
    assert "--max-num-batched-tokens 8192" in cmd(device="cpu", max_model_len=512, max_num_batched_tokens=8192)
    on = cmd(device="cpu", chunked_prefill=True)
    assert "--enable-chunked-prefill" in on and "--no-enable" not in on and "--max-num-batched-tokens" not in on
    gpu = cmd(device="gpu", max_model_len=4096)
    assert "chunked-prefill" not in gpu and "--max-num-batched-tokens" not in gpu  # vLLM's defaults on GPU
    # extra_args come last, so a user's flag wins over the defaults (argparse keeps the last occurrence)
    assert cmd(device="cpu", extra_args=("--enable-chunked-prefill",)).endswith("--enable-chunked-prefill")


PARENT = """
import subprocess, sys, time
from rlvr_jax.rollout.vllm_server import wrap_die_with_parent
child = subprocess.Popen(wrap_die_with_parent(["sleep", "600"], sys.executable), start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@LINUX
def test_parent_death_shim_kills_the_child_when_the_parent_is_sigkilled():
    repo = str(pathlib.Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": repo})
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.5)  # the shim has exec'd sleep by now
        assert _alive(child) and "sleep" in pathlib.Path(f"/proc/{child}/cmdline").read_text()
        parent.kill()
        parent.wait(10)
        t0 = time.monotonic()
        while _alive(child) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its SIGKILLed parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_restart_cause_is_the_root_error_of_the_last_server_run():
    log = ("===== starting vLLM server on x =====\n"
           "(APIServer) WARNING ValueError: Tokenizer not available when `skip_tokenizer_init=True`\n"
           "RuntimeError: an old crash\n"
           "===== starting vLLM server on x =====\n"
           "(APIServer) WARNING ValueError: Tokenizer not available when `skip_tokenizer_init=True`\n"
           "(EngineCore) ERROR [core.py:1512]     gen.set_offset(gen.get_offset() - 4)\n"
           "(EngineCore) ERROR [core.py:1512] RuntimeError: CPU Generator does not use offset\n"
           "(APIServer) ERROR vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.\n"
           'INFO:     127.0.0.1:1 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error\n')
    assert server_error_cause(log) == "RuntimeError: CPU Generator does not use offset"
    assert server_error_cause(log.split("(EngineCore)")[0]) is None  # killed without an error: no cause
    dead_only = "===== starting vLLM server\nvllm.v1.engine.exceptions.EngineDeadError: died\n"
    assert server_error_cause(dead_only) == "EngineDeadError: died"


# ------------------------------------------------------------------------------------------------------
# With a server
# ------------------------------------------------------------------------------------------------------

def config(env, out):
    from rlvr_jax.config.presets import experiment

    c = experiment("nsr", "tiny")
    c.data.data_dir = env["data"]
    c.model.tokenizer_path = env["tok_dir"]
    c.logging.out_dir = str(out)
    c.logging.progress = False
    c.logging.eval_every = 0
    c.rollout.engine = "vllm"
    c.rollout.vllm.num_servers = 2
    c.rollout.n = 8
    c.rollout.max_new_tokens = 8
    c.data.max_prompt_len = 256
    c.train.prompt_batch_size = 4
    c.train.mini_batch_size = 2
    c.train.micro_batch_size = 8
    c.train.total_steps = STEPS
    c.checkpoint.every = STEPS
    return c


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def stable(row):
    return {k: v for k, v in row.items() if not k.startswith(VOLATILE + (ENGINE_LOGPROB_METRICS,))}


def engine_logprob_metrics(row):
    return {k: v for k, v in row.items() if k.startswith(ENGINE_LOGPROB_METRICS)}


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory):
    from rlvr_jax.train import run

    out = tmp_path_factory.mktemp("uninterrupted")
    t0 = time.perf_counter()
    res = run(config(env, out), tokenizer=env["tok"])
    print(f"\nuninterrupted {STEPS}-step vLLM run: {time.perf_counter() - t0:.1f} s")
    return res, out


@server
@pytest.mark.xdist_group("vllm")
def test_uninterrupted_run_has_zero_engine_restarts(uninterrupted):
    res, out = uninterrupted
    rows = read_metrics(out)
    assert res.steps_done == STEPS and [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["rollout/engine_restarts"] for r in rows] == [0] * STEPS
    assert min(r["prompt_length/mean"] for r in rows) * 4 * 8 > 2048  # every batch exceeds the CPU default budget
    for r in rows:  # both replicas generated in every step, the 4 prompts between them
        assert r["rollout/replica_0/tokens"] > 0 and r["rollout/replica_1/tokens"] > 0
        assert r["rollout/replica_0/prompts"] + r["rollout/replica_1/prompts"] == 4
        tokens = r["rollout/replica_0/tokens"] + r["rollout/replica_1/tokens"]
        assert tokens == pytest.approx(r["response_length/mean"] * 32)
    for i in range(2):
        log = (out / f"vllm_server_{i}.log").read_text(errors="replace")
        # vLLM's own shutdown (SIGTERM, then a force kill of EngineCore) may log an EngineDeadError: only the log
        # before the first shutdown line counts
        during_run = log.split("[shutdown]")[0]
        assert "does not use offset" not in log and "EngineDeadError" not in during_run
        assert log.count("===== starting vLLM server") == 1


class _Faults:
    """Kills replica 0 of the trainer's vLLM servers (SIGKILL) once during the 2nd generate and once during the
    3rd sync (right before replica 0 loads the new version)."""

    def __init__(self, monkeypatch):
        from rlvr_jax.rollout.vllm_client import VLLMClient
        from rlvr_jax.rollout.vllm_engine import VLLMEngine

        self.engine = None
        self.generates = self.syncs = 0
        self.killed: list[str] = []
        real_init, real_generate = VLLMEngine.__init__, VLLMEngine.generate
        real_sync, real_complete = VLLMEngine.sync_weights, VLLMClient.complete
        real_rpc = VLLMClient.collective_rpc
        faults = self

        def init(eng, *a, **kw):
            real_init(eng, *a, **kw)
            faults.engine = eng

        def generate(eng, *a, **kw):
            faults.generates += 1
            return real_generate(eng, *a, **kw)

        def sync_weights(eng, *a, **kw):
            faults.syncs += 1
            return real_sync(eng, *a, **kw)

        def complete(client, prompt, n, params, prompt_index=0):
            if faults.generates == 2 and prompt_index == 2 and "generate" not in faults.killed:
                faults.kill("generate")  # prompts 0 and 1 may be done or in flight: some results are lost
            return real_complete(client, prompt, n, params, prompt_index)

        def collective_rpc(client, method, *a, **kw):
            if (faults.syncs == 3 and method in ("rlvr_load_shm", "rlvr_reload_weights") and "sync" not in
                    faults.killed and client is faults.engine.replicas[0].client):
                faults.kill("sync")  # the new version is exported, replica 0 dies before loading it
            return real_rpc(client, method, *a, **kw)

        monkeypatch.setattr(VLLMEngine, "__init__", init)
        monkeypatch.setattr(VLLMEngine, "generate", generate)
        monkeypatch.setattr(VLLMEngine, "sync_weights", sync_weights)
        monkeypatch.setattr(VLLMClient, "complete", complete)
        monkeypatch.setattr(VLLMClient, "collective_rpc", collective_rpc)

    def kill(self, phase):
        self.killed.append(phase)
        os.kill(self.engine.server.proc.pid, signal.SIGKILL)


@server
@pytest.mark.slow
@pytest.mark.xdist_group("vllm")
def test_server_killed_during_generation_and_sync_loses_no_step(env, uninterrupted, tmp_path, monkeypatch,
                                                                capfd):
    from rlvr_jax.train import run

    faults = _Faults(monkeypatch)
    out = tmp_path / "faulted"
    t0 = time.perf_counter()
    res = run(config(env, out), tokenizer=env["tok"])
    with capfd.disabled():
        print(f"\nfaulted {STEPS}-step vLLM run: {time.perf_counter() - t0:.1f} s; restarts "
              f"{[(r.during, round(r.seconds, 1)) for r in faults.engine.restart_log]}")
    assert faults.killed == ["generate", "sync"]
    rows, ref = read_metrics(out), read_metrics(uninterrupted[1])
    assert res.steps_done == STEPS and [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["rollout/engine_restarts"] for r in rows] == [0, 1, 2, 2]
    assert [stable(r) for r in rows] == [stable(r) for r in ref]  # same samples, rewards, losses, gradients
    for r, q in zip(rows, ref):
        assert engine_logprob_metrics(r) == pytest.approx(engine_logprob_metrics(q), rel=1e-2, abs=1e-6)
    log = faults.engine.restart_log
    assert [r.during for r in log] == ["generate", "sync_weights"] and [r.replica for r in log] == [0, 0]
    assert [rows[-1][f"rollout/replica_{i}/restarts"] for i in range(2)] == [2, 0]
    assert faults.engine.transport.name == "shm"
    assert all(r.exit_code == -signal.SIGKILL and r.seconds > 0 for r in log), log
    err = capfd.readouterr().err
    assert err.count("[vllm] server restart") == 2 and "during sync_weights" in err


LAUNCHER = """
import sys, time
from rlvr_jax.rollout.vllm_server import VLLMServer, VLLMServerConfig
s = VLLMServer.launch(VLLMServerConfig(model=sys.argv[1], dtype="float32", max_model_len=256, enforce_eager=True,
                                       log_path=sys.argv[2], startup_timeout_s=600))
print(s.proc.pid, s.url, flush=True)
time.sleep(3600)
"""


def live_group_members(pgid: int) -> list[int]:
    """Pids of the non-zombie processes in process group ``pgid`` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


@server
@pytest.mark.xdist_group("vllm")
@LINUX
def test_sigkilled_trainer_leaves_no_server(env, tmp_path):
    import requests

    from helpers_models import make_tiny_hf_model
    from rlvr_jax.models import load_hf, save_hf

    model, _ = load_hf(make_tiny_hf_model(tmp_path, family="qwen3", seed=0), dtype="float32")
    save_hf(model, tmp_path / "policy")
    log = tmp_path / "server.log"
    repo = str(pathlib.Path(__file__).resolve().parents[2])
    trainer = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path / "policy"), str(log)],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": repo})
    line = [None]
    reader = threading.Thread(target=lambda: line.__setitem__(0, trainer.stdout.readline()), daemon=True)
    reader.start()
    reader.join(600)
    assert line[0], f"the launcher printed nothing (log {log})"
    pid, url = line[0].split()
    pid = int(pid)
    try:
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        assert pid in live_group_members(pid)
        trainer.kill()  # SIGKILL: no finalizer, no atexit, no close() runs in the trainer
        trainer.wait(30)
        t0 = time.monotonic()
        while live_group_members(pid) and time.monotonic() - t0 < 90:
            time.sleep(0.5)
        left = live_group_members(pid)
        print(f"\nserver group gone {time.monotonic() - t0:.1f} s after the trainer's SIGKILL")
        assert not left, f"server processes left after the trainer died: {left}"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=5)
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if trainer.poll() is None:
            trainer.kill()
