"""Rollout engine backed by one or several vLLM OpenAI-compatible servers (replicas), launched here or attached.

``VLLMEngine.generate`` sends token-id prompts (one seeded ``/v1/completions`` request per prompt with all its
``n`` samples, so one replica's prefix cache serves them) to the replicas. Log-probs are vLLM's ``raw_logprobs``:
log_softmax of the raw model logits at temperature 1, before top-k/top-p, i.e. the project convention of
rlvr_jax/rollout/base.py.

Dispatch across replicas: the prompts are queued by expected tokens, most first (the prompt's length plus ``n``
samples of the mean length the last call generated, ``max_new_tokens`` at first); the next queued prompt goes to
the replica with the fewest expected tokens in flight among those with fewer than ``max_concurrency`` requests
in flight, whenever a request finishes (greedy list scheduling in LPT order), so a replica that draws long
generations takes fewer prompts and the replicas finish together. Which replica serves a prompt does not
change its samples: the request seed is a function of (params.seed, prompt index) only.

``VLLMEngine.sync_weights(model, version)`` goes through a ``WeightTransport`` (vllm_transport.py): the weights
are exported once (HF safetensors files, or a shared-memory segment), then loaded by every replica in parallel;
each worker reports the version it loaded, and before each generation every replica's version is checked again.

Recovery: a replica found dead, or unreachable during a generation (after the client's retries), is restarted in
the background (same port), re-synced to the newest weights and version-checked while the other replicas keep
generating; the prompts it had in flight go back to the queue (their seeds make the retried samples exactly what
they would have been), so a step loses and repeats nothing. A sync restarts a replica that dies during its load
and loads the new version into it. Each restart is logged on stderr with its cause (the client error and the
server log's root error) and kept in ``VLLMEngine.restart_log``; ``VLLMEngine.restarts`` counts them (the trainer
reports it as ``rollout/engine_restarts``), and ``metrics()`` gives per-replica tokens, busy seconds and restarts.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import re
import sys
import threading
import time
import urllib.parse
from typing import Any, Sequence

from rlvr_jax.rollout.base import Completion, RolloutEngine, SamplingParams
from rlvr_jax.rollout.vllm_client import ServerUnavailableError, VLLMClient, VLLMRequestError
from rlvr_jax.rollout.vllm_server import (WORKER_EXTENSION, VLLMServer, server_configs,  # noqa: F401
                                         split_devices)
from rlvr_jax.rollout.vllm_transport import (TRANSPORTS, Export, FilesystemTransport,  # noqa: F401 (re-exported)
                                             SharedMemoryTransport, SyncRecord, WeightTransport,
                                             WeightVersionError, make_transport)

_EXCEPTION_RE = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.*)$")
_START_MARKER = "===== starting vLLM server"
_CLIENT_OPTIONS = ("request_timeout_s", "max_retries", "backoff_s", "max_concurrency")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def server_error_cause(log_text: str) -> str | None:
    """The root error of the server's last run in its log, e.g. ``RuntimeError: CPU Generator does not use
    offset``: the last exception line after the last start marker that is not vLLM's ``EngineDeadError``
    wrapper (which only says the engine died); that wrapper if it is all there is; None if there is none."""
    text = log_text.rsplit(_START_MARKER, 1)[-1]
    found = [(m.group(1), m.group(2).strip()) for line in text.splitlines() if "WARNING" not in line
             for m in [_EXCEPTION_RE.search(line)] if m]  # vLLM logs some harmless exceptions as warnings
    root = [f for f in found if not f[0].endswith("EngineDeadError")] or found
    if not root:
        return None
    name, message = root[-1]
    return f"{name.rsplit('.', 1)[-1]}: {message}"[:300]


@dataclasses.dataclass
class RestartRecord:
    """One server restart: when (during which call), why, and how long the server took to come back."""

    during: str  # "generate" | "sync_weights"
    cause: str  # the error that made the engine restart the server
    server_error: str | None  # the last error line of the server log before the restart
    exit_code: int | None  # the dead server's exit code (None: it was still running but unreachable)
    seconds: float
    replica: int = 0


@dataclasses.dataclass
class ReplicaStats:
    """What one replica did: prompts and tokens it generated, seconds it had a request in flight."""

    prompts: int = 0
    tokens: int = 0
    busy_s: float = 0.0

    def add(self, other: "ReplicaStats") -> None:
        self.prompts += other.prompts
        self.tokens += other.tokens
        self.busy_s += other.busy_s


class Replica:
    """One server of the engine, its client, the weight version it holds and its counters."""

    def __init__(self, index: int, server: VLLMServer, client: VLLMClient, reports_version: bool):
        self.index, self.server, self.client = index, server, client
        self.reports_version = reports_version  # runs rlvr_jax's worker extension (rlvr_weight_version)
        self.version: int | None = None  # the version loaded into it (None: its launch weights)
        self.restarts = 0
        self.last = ReplicaStats()
        self.total = ReplicaStats()
        self.recovery: concurrent.futures.Future | None = None  # a restart running in the background

    def __repr__(self):
        return f"Replica({self.index}, {self.server.url}, version={self.version}, restarts={self.restarts})"


def busy_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def _is_local(url: str) -> bool:
    return (urllib.parse.urlparse(url).hostname or "") in _LOCAL_HOSTS


class VLLMEngine(RolloutEngine):
    """``RolloutEngine`` over ``num_servers`` vLLM servers.

    Give exactly one of:
      model_dir: launch ``num_servers`` servers on this HF directory (the other keyword ``options`` are
        ``VLLMServerConfig`` fields, e.g. dtype='float32', max_model_len=1024, enforce_eager=True); ``devices``
        (one string per server, e.g. ``["0,1", "2,3"]``) sets each server's ``CUDA_VISIBLE_DEVICES``, ``ports``
        their ports (default: free ones); with ``log_path`` and several servers, server ``i`` logs to
        ``<stem>_<i><ext>`` (``server_configs`` of vllm_server.py);
      url: attach to running servers (a URL, a comma-separated list or a sequence); they must run with
        VLLM_SERVER_DEV_MODE=1 for the weight sync, and --logprobs-mode raw_logprobs, vLLM's default;
      server: an existing ``VLLMServer`` (or a sequence); the engine takes ownership and stops it on close().
    client options (request_timeout_s, max_retries, backoff_s, max_concurrency) go to each VLLMClient.
    ``transport``: a ``WeightTransport``, or a name: 'shm' (shared-memory segment, same host), 'filesystem'
      (HF safetensors under ``sync_root``) or 'auto' (shm when every server runs on this host with rlvr_jax's
      worker extension, else filesystem). ``shm_dir``/``transport_dtype``: the shm segment's directory / dtype.
    ``reload_method``: worker method of the filesystem sync; default ``rlvr_reload_weights`` when the servers
      run rlvr_jax's worker extension (always for servers launched here; probed for attached ones), else vLLM's
      ``reload_weights`` (no tied-LM-head fix, no version report).
    ``max_restarts``: restarts of one replica allowed per generate() / sync_weights() call before the error
      propagates.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, *, url: str | Sequence[str] | None = None,
                 server: VLLMServer | Sequence[VLLMServer] | None = None, num_servers: int = 1,
                 devices: Sequence[str] | None = None, ports: Sequence[int] | None = None,
                 sync_root: str | os.PathLike | None = None,
                 transport: WeightTransport | str = "auto", shm_dir: str | os.PathLike | None = None,
                 transport_dtype: str | None = None, reload_method: str | None = None, max_restarts: int = 2,
                 **options):
        if sum(x is not None for x in (model_dir, url, server)) != 1:
            raise ValueError("VLLMEngine needs exactly one of model_dir=, url= or server= "
                             f"(got model_dir={model_dir!r}, url={url!r}, server={server!r})")
        if isinstance(transport, WeightTransport) and (sync_root is not None or reload_method is not None):
            raise ValueError("sync_root= and reload_method= configure a transport by name; "
                             "they cannot be combined with a transport object")
        if not isinstance(transport, WeightTransport) and transport not in TRANSPORTS + ("auto",):
            raise ValueError(f"transport must be one of {TRANSPORTS + ('auto',)} or a WeightTransport, "
                             f"got {transport!r}")
        if int(num_servers) < 1:
            raise ValueError(f"num_servers must be >= 1, got {num_servers}")
        if model_dir is None and (int(num_servers) != 1 or devices is not None or ports is not None):
            raise ValueError("num_servers=, devices= and ports= apply to servers launched from model_dir=")
        client_options = {k: options.pop(k) for k in _CLIENT_OPTIONS if k in options}
        if model_dir is None and options:
            raise ValueError(f"server options {sorted(options)} given but the servers are not launched here")
        self.max_restarts = max_restarts
        self.version: int | None = None
        self.sync_history: list[SyncRecord] = []
        self.restarts = 0
        self.restart_log: list[RestartRecord] = []
        self._mean_new_tokens: float | None = None  # tokens per sample of the last generate (dispatch estimate)
        self._lock = threading.Lock()
        # Servers die with the thread that started them (PR_SET_PDEATHSIG): every start and restart runs on this
        # one thread, which lives until close().
        self._launcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vllm-launcher")
        self._background = concurrent.futures.ThreadPoolExecutor(max(2, int(num_servers)),
                                                                 thread_name_prefix="vllm-recovery")
        self.replicas: list[Replica] = []
        servers: list[VLLMServer] = []
        try:
            if model_dir is not None:
                configs = server_configs(str(model_dir), int(num_servers), devices, ports, **options)
                servers = self._launcher.submit(VLLMServer.launch_many, configs).result()
            elif url is not None:
                urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
                if not urls or not all(urls):
                    raise ValueError(f"url= names no server: {url!r}")
                servers = [VLLMServer.attach(u) for u in urls]
            else:
                servers = [server] if isinstance(server, VLLMServer) else list(server)
            for i, s in enumerate(servers):
                model_name = s.config.served_model_name if s.owns_process else None
                client = VLLMClient(s.url, model_name, **client_options)
                if model_name is None:
                    client.model = client.models()[0]
                has_ext = (s.config.worker_extension_cls == WORKER_EXTENSION if s.owns_process
                           else self._probe_extension(client))
                self.replicas.append(Replica(i, s, client, has_ext))
            self.transport = self._make_transport(transport, sync_root, shm_dir, transport_dtype, reload_method)
        except BaseException:
            for s in servers:
                s.close()
            self._launcher.shutdown(wait=False)
            self._background.shutdown(wait=False)
            raise

    @staticmethod
    def _probe_extension(client: VLLMClient) -> bool:
        """Whether an attached server runs rlvr_jax's worker extension (answers rlvr_weight_version)."""
        try:
            client.weight_version(timeout_s=30.0)
            return True
        except (VLLMRequestError, ServerUnavailableError):
            return False

    def _make_transport(self, transport, sync_root, shm_dir, dtype, reload_method) -> WeightTransport:
        if isinstance(transport, WeightTransport):
            return transport
        all_ext = all(r.reports_version for r in self.replicas)
        if transport == "auto":
            local = all(r.server.owns_process or _is_local(r.server.url) for r in self.replicas)
            transport = "shm" if (all_ext and local) else "filesystem"
        if transport == "shm" and not all_ext:
            raise ValueError("transport='shm' needs rlvr_jax's worker extension in every server "
                             f"(--worker-extension-cls {WORKER_EXTENSION})")
        if reload_method is None:
            reload_method = "rlvr_reload_weights" if all_ext else "reload_weights"
        return make_transport(transport, sync_root=sync_root, shm_dir=shm_dir, reload_method=reload_method,
                              dtype=dtype)

    # ---- single-server views (the engine's first replica) ---------------------------------------------------
    @property
    def server(self) -> VLLMServer:
        return self.replicas[0].server

    @property
    def client(self) -> VLLMClient:
        return self.replicas[0].client

    @property
    def servers(self) -> list[VLLMServer]:
        return [r.server for r in self.replicas]

    # ---- recovery -----------------------------------------------------------------------------------------
    def _restart(self, rep: Replica, reason: BaseException, during: str, restore: bool = True) -> None:
        """Restarts ``rep``'s server; with ``restore`` loads the committed weights into it and checks them."""
        if not rep.server.owns_process:
            raise ServerUnavailableError(
                f"vLLM server at {rep.server.url} is unreachable and was attached by URL, so it "
                f"cannot be restarted from here: {reason}") from reason
        proc = rep.server.proc
        exit_code = None if proc is None else proc.poll()
        server_error = server_error_cause(rep.server.log_tail(200_000))
        t0 = time.perf_counter()
        rep.version = None
        rep.server.restart(spawner=lambda fn: self._launcher.submit(fn).result())
        rep.client.base_url = rep.server.url
        if restore and self.transport.latest is not None:
            self.transport.restore(rep.client)
            rep.version = self.transport.latest.version
        with self._lock:
            self.restarts += 1
            rep.restarts += 1
            count = self.restarts
        record = RestartRecord(during=during, cause=f"{type(reason).__name__}: {reason}"[:500],
                               server_error=server_error, exit_code=exit_code,
                               seconds=time.perf_counter() - t0, replica=rep.index)
        self.restart_log.append(record)
        which = f" (replica {rep.index})" if len(self.replicas) > 1 else ""
        print(f"[vllm] server restart {count}{which} during {during} ({record.seconds:.1f} s): server error "
              f"{server_error!r}, exit code {exit_code}; client error {record.cause[:200]!r}; "
              f"log {rep.server.log_path}", file=sys.stderr, flush=True)

    def _check_version(self, rep: Replica) -> None:
        """``rep`` holds the engine's version (asks the workers when they can say); re-syncs it once if not."""
        if rep.version != self.version and self.transport.latest is not None:
            self.transport.restore(rep.client)
            rep.version = self.transport.latest.version
        if rep.version != self.version:
            raise WeightVersionError(f"{rep.server.url} holds version {rep.version}, the engine {self.version}")
        if self.version is None or not (rep.reports_version and self.transport.verifies_version):
            return
        got = rep.client.weight_version()
        if got and all(g is not None and int(g) == self.version for g in got):
            return
        self.transport.restore(rep.client)  # e.g. reloaded by someone else: the committed version again
        got = rep.client.weight_version()
        if not got or any(g is None or int(g) != self.version for g in got):
            raise WeightVersionError(f"{rep.server.url}: workers hold versions {got}, the engine {self.version}")

    def _recover_in_background(self, rep: Replica, reason: BaseException, during: str) -> None:
        def run():
            self._restart(rep, reason, during)
            self._check_version(rep)
        rep.recovery = self._background.submit(run)

    def _join_recoveries(self) -> None:
        """Waits for background restarts; a failed one leaves its replica to be restarted again when used."""
        for rep in self.replicas:
            if rep.recovery is not None:
                concurrent.futures.wait([rep.recovery])
                rep.recovery = None

    # ---- RolloutEngine --------------------------------------------------------------------------------------
    def _request(self, rep: Replica, prompt, n: int, params: SamplingParams, index: int):
        t0 = time.perf_counter()
        out = rep.client.complete(prompt, n, params, index)
        return out, t0, time.perf_counter()

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams,
                 max_new_tokens_per_prompt: Sequence[int] | None = None) -> list[list[Completion]]:
        """``result[p][s]``; ``max_new_tokens_per_prompt`` (optional, as in the JAX sampler) caps each prompt's
        samples below ``params.max_new_tokens``."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        caps = None
        if max_new_tokens_per_prompt is not None:
            caps = [min(int(c), params.max_new_tokens) for c in max_new_tokens_per_prompt]
            if len(caps) != len(prompts) or min(caps) < 1:
                raise ValueError(f"max_new_tokens_per_prompt needs one value >= 1 per prompt ({len(prompts)})")
        reps = self.replicas
        restarts = {r.index: 0 for r in reps}  # restarts started by this call, per replica
        failed: dict[int, BaseException] = {}   # replicas given up for this call
        ready: set[int] = set()

        def recover(rep: Replica, reason: BaseException) -> None:
            if not rep.server.owns_process:
                failed[rep.index] = ServerUnavailableError(
                    f"vLLM server at {rep.server.url} is unreachable and was attached by URL, so it cannot be "
                    f"restarted from here: {reason}")
                failed[rep.index].__cause__ = reason
            elif restarts[rep.index] >= self.max_restarts:
                failed[rep.index] = reason
            else:
                restarts[rep.index] += 1
                self._recover_in_background(rep, reason, "generate")
            ready.discard(rep.index)

        for rep in reps:  # each replica alive and holding the engine's version before it generates
            if rep.recovery is not None:
                continue  # a restart from an earlier call: joins when it is done
            if rep.server.owns_process and not rep.server.process_alive():
                recover(rep, RuntimeError("server process found dead before generate"))
                continue
            try:
                self._check_version(rep)
                ready.add(rep.index)
            except ServerUnavailableError as e:
                recover(rep, e)

        # expected tokens of a request: its prompt plus n samples of the mean length seen so far (the cap at first)
        per_sample = self._mean_new_tokens or params.max_new_tokens
        expected = [len(p) + n * (per_sample if caps is None else caps[i]) for i, p in enumerate(prompts)]
        queue = collections.deque(sorted(range(len(prompts)), key=lambda i: (-expected[i], i)))
        work = {r.index: 0.0 for r in reps}  # expected tokens of the requests each replica was given in this call
        results: dict[int, list[Completion]] = {}
        inflight: dict[concurrent.futures.Future, tuple[Replica, int]] = {}
        load = {r.index: 0 for r in reps}
        intervals: dict[int, list] = {r.index: [] for r in reps}
        stats = {r.index: ReplicaStats() for r in reps}
        error: BaseException | None = None
        width = sum(max(1, r.client.max_concurrency) for r in reps)
        with concurrent.futures.ThreadPoolExecutor(min(width, len(prompts) + len(reps)),
                                                   thread_name_prefix="vllm-client") as pool:
            while True:
                while error is None and queue:  # the next prompt to the ready replica with the least work queued
                    free = [r for r in reps if r.index in ready and load[r.index] < max(1, r.client.max_concurrency)]
                    if not free:
                        break
                    rep = min(free, key=lambda r: (work[r.index], r.index))
                    i = queue.popleft()
                    p_i = params if caps is None else dataclasses.replace(params, max_new_tokens=caps[i])
                    fut = pool.submit(self._request, rep, prompts[i], n, p_i, i)
                    inflight[fut] = (rep, i)
                    load[rep.index] += 1
                    work[rep.index] += expected[i]
                recovering = {r.recovery: r for r in reps if r.recovery is not None and r.index not in failed}
                if not inflight:
                    if error is not None:
                        raise error
                    if not queue:
                        break
                    if not recovering:
                        first = next(iter(failed.values()), None)
                        raise ServerUnavailableError(
                            f"no vLLM replica left to generate {len(queue)} prompt(s): {first}",
                            partial=results) from first
                done, _ = concurrent.futures.wait(list(inflight) + list(recovering),
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    if fut in recovering:
                        rep = recovering[fut]
                        rep.recovery = None
                        exc = fut.exception()
                        if exc is None:
                            ready.add(rep.index)
                        elif isinstance(exc, ServerUnavailableError):
                            recover(rep, exc)
                        else:
                            failed[rep.index] = exc
                        continue
                    rep, i = inflight.pop(fut)
                    load[rep.index] -= 1
                    work[rep.index] -= expected[i]
                    try:
                        comps, t0, t1 = fut.result()
                    except ServerUnavailableError as e:
                        queue.appendleft(i)  # another replica (or this one, restarted) serves it
                        if rep.index in ready:
                            recover(rep, e)
                        continue
                    except BaseException as e:  # noqa: BLE001 - raised once the requests in flight settle
                        error = error or e
                        continue
                    results[i] = comps
                    intervals[rep.index].append((t0, t1))
                    stats[rep.index].prompts += 1
                    stats[rep.index].tokens += sum(len(c.token_ids) for c in comps)
        generated = sum(s.tokens for s in stats.values())
        self._mean_new_tokens = generated / (n * len(prompts)) or None
        for rep in reps:
            stats[rep.index].busy_s = busy_seconds(intervals[rep.index])
            rep.last = stats[rep.index]
            rep.total.add(rep.last)
        return [results[i] for i in range(len(prompts))]

    def sync_weights(self, model_or_params: Any, version: int) -> float:
        self._join_recoveries()  # a replica being restarted gets this version too
        exported = self.transport.export(model_or_params, version)
        t0 = time.perf_counter()
        try:
            if len(self.replicas) == 1:
                seconds = [self._load_into(self.replicas[0], exported)]
            else:
                with concurrent.futures.ThreadPoolExecutor(len(self.replicas),
                                                           thread_name_prefix="vllm-sync") as pool:
                    futs = [pool.submit(self._load_into, rep, exported) for rep in self.replicas]
                    concurrent.futures.wait(futs)
                    seconds = [f.result() for f in futs]  # raises the first replica's error
        except BaseException:
            self.transport.discard(exported)
            raise
        load_s = time.perf_counter() - t0
        self.transport.commit(exported)
        self.version = int(version)
        record = SyncRecord(version=int(version), transport=self.transport.name,
                            seconds=exported.seconds + load_s, export_seconds=exported.seconds,
                            load_seconds=load_s, nbytes=exported.nbytes, path=exported.path,
                            replica_load_seconds=tuple(seconds))
        self.sync_history.append(record)
        return record.seconds

    def _load_into(self, rep: Replica, exported: Export) -> float:
        """Loads ``exported`` into ``rep``, restarting it (at most ``max_restarts`` times) if it dies."""
        for attempt in range(self.max_restarts + 1):
            if rep.server.owns_process and not rep.server.process_alive():
                self._restart(rep, RuntimeError("server process found dead before sync_weights"),
                              "sync_weights", restore=False)
            try:
                t0 = time.perf_counter()
                self.transport.load(rep.client, exported)
                rep.version = exported.version
                return time.perf_counter() - t0
            except ServerUnavailableError as e:
                if attempt == self.max_restarts:
                    raise
                self._restart(rep, e, "sync_weights", restore=False)
        raise AssertionError("unreachable")

    def metrics(self) -> dict[str, float]:
        """Per-replica figures of the last ``generate`` (prompts, tokens, busy seconds) and restarts so far."""
        out: dict[str, float] = {}
        for rep in self.replicas:
            p = f"rollout/replica_{rep.index}/"
            out.update({p + "prompts": rep.last.prompts, p + "tokens": rep.last.tokens,
                        p + "busy_s": rep.last.busy_s, p + "restarts": rep.restarts})
        return out

    def close(self) -> None:
        try:
            self._join_recoveries()
            for rep in self.replicas:
                rep.server.close()
        finally:
            try:
                self.transport.close()
            finally:
                self._launcher.shutdown(wait=False)
                self._background.shutdown(wait=False)
