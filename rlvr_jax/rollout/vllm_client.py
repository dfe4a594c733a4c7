"""HTTP client for a vLLM OpenAI-compatible server: token-id completions and admin endpoints.

One ``/v1/completions`` request per prompt carries ``n`` samples, the sampling parameters and
a per-prompt seed; prompts are sent concurrently from a thread pool (the server batches them
continuously). Each request asks for

  * ``"logprobs": 0``        the log-prob of the sampled token only, under the server's
                             ``--logprobs-mode raw_logprobs`` (raw model distribution),
  * ``"return_token_ids"``   completion token ids as integers (``choice["token_ids"]``),
  * ``"return_tokens_as_token_ids"``  tokens in the log-prob block as "token_id:N" strings
                             (cross-checked against the ids),
  * ``"ignore_eos": true`` + ``"stop_token_ids"``: the stop set is exactly
                             ``SamplingParams.stop_token_ids`` (as in the in-process sampler);
                             the stop token is included in the returned ids.

Seeds: prompt ``p`` gets ``prompt_seed(params.seed, p)``, a 62-bit hash of (seed, p); vLLM gives
sample ``s`` of a request the seed ``prompt_seed + s``. Results are therefore deterministic for a
fixed ``params.seed`` and independent of request order and concurrency.

Errors: connection failures, timeouts, HTTP 5xx / 429 are retried ``max_retries`` times with
exponential backoff; other HTTP errors raise ``VLLMRequestError`` at once with the server's
message. A server that stays unreachable raises ``ServerUnavailableError`` (the engine reacts
by restarting the server it launched).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import threading
import time
from typing import Any, Sequence

import requests

from rlvr_jax.rollout.base import Completion, SamplingParams

_RETRY_STATUS = (429, 500, 502, 503, 504)
_SEED_MASK = (1 << 62) - 1  # headroom below int64 for vLLM's "seed + sample_index"


class VLLMClientError(RuntimeError):
    """Base class of the client's errors."""


class VLLMRequestError(VLLMClientError):
    """The server answered with an error (bad request, or a 5xx that persisted)."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class ServerUnavailableError(VLLMClientError):
    """The server could not be reached (connection refused / reset, timeouts) after retries.

    ``partial`` maps prompt index -> completions for the prompts that did finish, so a caller
    can retry only the rest.
    """

    def __init__(self, message: str, partial: dict[int, list[Completion]] | None = None):
        super().__init__(message)
        self.partial = dict(partial or {})


def prompt_seed(seed: int, prompt_index: int) -> int:
    """Deterministic per-prompt seed in [0, 2**62): blake2b of (seed, prompt_index)."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(prompt_index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


def completion_request(prompt: Sequence[int], n: int, params: SamplingParams, seed: int,
                       model: str | None = None) -> dict[str, Any]:
    """The JSON body of one /v1/completions request (pure function)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(prompt) == 0:
        raise ValueError("empty prompt: vLLM needs at least one prompt token")
    body: dict[str, Any] = {
        "prompt": [int(t) for t in prompt],
        "n": int(n),
        "max_tokens": int(params.max_new_tokens),
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": int(params.top_k) if params.top_k > 0 else -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "seed": int(seed),
        "stop_token_ids": [int(t) for t in params.stop_token_ids],
        "ignore_eos": True,
        "logprobs": 0,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "skip_special_tokens": False,
    }
    if model is not None:
        body["model"] = model
    return body


def _parse_token_string(token: str) -> int:
    if not token.startswith("token_id:"):
        raise VLLMClientError(f"expected a 'token_id:N' token string, got {token!r}")
    return int(token[len("token_id:"):])


def parse_completion_response(response: dict[str, Any], prompt_index: int, n: int,
                              max_new_tokens: int | None = None) -> list[Completion]:
    """Turns one /v1/completions JSON response (one prompt, n choices) into ``n`` Completions."""
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else choices
        raise VLLMClientError(f"prompt {prompt_index}: expected {n} choices, got {got}")
    out: list[Completion | None] = [None] * n
    for choice in choices:
        index = int(choice["index"])
        if not 0 <= index < n or out[index] is not None:
            raise VLLMClientError(f"prompt {prompt_index}: bad or duplicate choice index {index}")
        lp = choice.get("logprobs")
        if not lp or lp.get("token_logprobs") is None:
            raise VLLMClientError(
                f"prompt {prompt_index}: choice {index} has no log-probs (was 'logprobs': 0 sent?)")
        logprobs = [float(x) for x in lp["token_logprobs"]]
        ids = choice.get("token_ids")
        ids_from_tokens = [_parse_token_string(t) for t in lp.get("tokens") or []]
        if ids is None:
            ids = ids_from_tokens
        ids = [int(t) for t in ids]
        if ids_from_tokens and ids_from_tokens != ids:
            raise VLLMClientError(
                f"prompt {prompt_index}: choice {index} token_ids {ids} disagree with the "
                f"log-prob tokens {ids_from_tokens}")
        reason = choice.get("finish_reason")
        if reason not in ("stop", "length"):
            raise VLLMClientError(
                f"prompt {prompt_index}: choice {index} finished with {reason!r} "
                f"(stop_reason={choice.get('stop_reason')!r}); expected 'stop' or 'length'")
        if max_new_tokens is not None and len(ids) > max_new_tokens:
            raise VLLMClientError(
                f"prompt {prompt_index}: choice {index} has {len(ids)} tokens > max_new_tokens={max_new_tokens}")
        out[index] = Completion(prompt_index=prompt_index, sample_index=index, token_ids=ids,
                                logprobs=logprobs, finish_reason=reason)
    return out  # type: ignore[return-value]


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(err, dict):
            return str(err.get("message", err))
        return str(err)
    except ValueError:
        return resp.text[:2000]


class VLLMClient:
    """Talks to one vLLM server. ``base_url`` may be reassigned (e.g. after a restart)."""

    def __init__(self, base_url: str, model: str | None = None, *, request_timeout_s: float = 600.0,
                 max_retries: int = 3, backoff_s: float = 0.5, max_concurrency: int = 32):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self._local = threading.local()  # one requests.Session per thread

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    # ---- raw HTTP with retries ----------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                timeout_s: float | None = None) -> Any:
        """One HTTP call with bounded retries; returns the decoded JSON body (None if empty)."""
        url = f"{self.base_url}{path}"
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        last_error: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._session().request(method, url, json=json, params=params, timeout=timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                last_error = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in _RETRY_STATUS:
                last_error = f"HTTP {resp.status_code}: {_error_message(resp)}"
                if attempt == self.max_retries:
                    raise VLLMRequestError(
                        f"{method} {url} failed after {attempt + 1} attempts: {last_error}",
                        resp.status_code)
                continue
            if resp.status_code >= 400:
                raise VLLMRequestError(
                    f"{method} {url} -> HTTP {resp.status_code}: {_error_message(resp)}", resp.status_code)
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError as e:
                raise VLLMRequestError(f"{method} {url}: response is not JSON: {resp.text[:500]!r}") from e
        raise ServerUnavailableError(
            f"{method} {url}: server unreachable after {self.max_retries + 1} attempts ({last_error})")

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw) -> Any:
        return self.request("POST", path, json=json, **kw)

    # ---- endpoints ----------------------------------------------------------------------
    def models(self) -> list[str]:
        return [m["id"] for m in self.get("/v1/models")["data"]]

    def complete(self, prompt: Sequence[int], n: int, params: SamplingParams, prompt_index: int = 0
                 ) -> list[Completion]:
        """``n`` samples of one prompt (seeded with ``prompt_seed(params.seed, prompt_index)``)."""
        body = completion_request(prompt, n, params, prompt_seed(params.seed, prompt_index), self.model)
        return parse_completion_response(self.post("/v1/completions", body), prompt_index, n,
                                         params.max_new_tokens)

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams,
                 prompt_indices: Sequence[int] | None = None) -> dict[int, list[Completion]]:
        """Concurrent ``complete`` over prompts; returns {prompt_index: completions}.

        ``prompt_indices`` (default 0..len-1) name the prompts, and so fix their seeds.
        Raises ``ServerUnavailableError`` (with ``partial`` results) if the server is
        unreachable; other failures propagate once all requests have settled.
        """
        indices = list(range(len(prompts))) if prompt_indices is None else list(prompt_indices)
        if len(indices) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(indices)} prompt indices")
        done: dict[int, list[Completion]] = {}
        unavailable: ServerUnavailableError | None = None
        other: BaseException | None = None
        workers = max(1, min(self.max_concurrency, len(prompts)))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="vllm-client") as pool:
            futures = {pool.submit(self.complete, p, n, params, i): i for p, i in zip(prompts, indices)}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    done[futures[fut]] = fut.result()
                except ServerUnavailableError as e:
                    unavailable = unavailable or e
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    other = other or e
        if other is not None:
            raise other
        if unavailable is not None:
            raise ServerUnavailableError(str(unavailable), partial=done)
        return done

    def collective_rpc(self, method: str, kwargs: dict[str, str] | None = None,
                       timeout_s: float | None = None) -> Any:
        """Runs worker method ``method`` on every worker (dev mode); returns ``{"results": [one per worker]}``
        (None when the method returns nothing). vLLM passes only string arguments."""
        return self.post("/collective_rpc", {"method": method, "kwargs": dict(kwargs or {})}, timeout_s=timeout_s)

    def reload_weights(self, weights_path: str, method: str = "reload_weights",
                       timeout_s: float | None = None) -> Any:
        """Asks every worker to reload HF-format safetensors from ``weights_path`` (dev mode).

        ``method``: the worker method run through /collective_rpc: vLLM's ``reload_weights``, or
        ``rlvr_reload_weights`` on servers started with rlvr_jax's worker extension.
        """
        return self.collective_rpc(method, {"weights_path": str(weights_path)}, timeout_s=timeout_s)

    def weight_version(self, timeout_s: float | None = 30.0) -> list:
        """The weight version each worker reports (``rlvr_weight_version``; needs rlvr_jax's worker extension)."""
        body = self.collective_rpc("rlvr_weight_version", timeout_s=timeout_s) or {}
        return [r.get("version") if isinstance(r, dict) else r for r in body.get("results", [])]

    def reset_prefix_cache(self, attempts: int = 20, wait_s: float = 0.25) -> None:
        """Drops cached KV blocks computed with old weights; retries while blocks are held."""
        for _ in range(attempts):
            body = self.post("/reset_prefix_cache")
            if body is None or body.get("success", True):
                return
            time.sleep(wait_s)
        raise VLLMRequestError(
            f"POST {self.base_url}/reset_prefix_cache kept answering success=false "
            f"({attempts} attempts): requests still hold KV blocks")
