"""Rollout engine backed by a vLLM OpenAI-compatible server (launched here or attached by URL).

``VLLMEngine.generate`` sends token-id prompts through ``VLLMClient`` (one seeded request per
prompt, concurrent). Log-probs are vLLM's ``raw_logprobs``: log_softmax of the raw model logits
at temperature 1, before top-k/top-p, i.e. the project convention of rlvr_jax/rollout/base.py.

``VLLMEngine.sync_weights(model, version)`` goes through a ``WeightTransport``. The transport
implemented here, ``FilesystemTransport``, is:

    1. export: ``save_hf(model, <sync_root>/version_<v>)`` (HF names, safetensors),
    2. reload: POST /collective_rpc {"method": "rlvr_reload_weights", "kwargs": {"weights_path": dir}}
       (every worker re-reads the safetensors in place, no restart, no re-allocation; the method
       wraps vLLM's ``reload_weights`` and fixes tied LM heads on CPU, see vllm_worker_ext.py),
    3. POST /reset_prefix_cache (cached KV blocks were computed with the old weights),
    4. delete the previous version directory (the newest one is kept: it is what a restarted
       server is re-synced from).

Its cost is one write and one read of the checkpoint (seconds per GB are in docs/vllm.md).
A GPU deployment can replace it by an NCCL transport behind the same ``sync_weights`` call,
without changing the trainer; see ``WeightTransport`` and docs/vllm.md for that path.

Dead-server recovery: if the server this engine launched becomes unreachable during
``generate``, the engine restarts it, re-loads the newest synced weights, and re-sends the
requests that had not completed (results are seeded per prompt, so retried prompts sample
exactly what they would have). Each restart is logged on stderr with its cause (the client error
and the last error line of the server log, e.g. ``EngineDeadError``) and kept in
``VLLMEngine.restart_log``; ``VLLMEngine.restarts`` counts them (the trainer reports it as the
``rollout/engine_restarts`` metric).
"""
from __future__ import annotations

import abc
import dataclasses
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from rlvr_jax.rollout.base import Completion, RolloutEngine, SamplingParams
from rlvr_jax.rollout.vllm_client import ServerUnavailableError, VLLMClient
from rlvr_jax.rollout.vllm_server import WORKER_EXTENSION, VLLMServer, VLLMServerConfig


_EXCEPTION_RE = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.*)$")
_START_MARKER = "===== starting vLLM server"


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


@dataclasses.dataclass
class SyncRecord:
    """What one ``sync_weights`` call did. ``nbytes`` is the size of the exported checkpoint."""

    version: int
    transport: str
    seconds: float
    export_seconds: float
    load_seconds: float
    nbytes: int
    path: str | None = None

    @property
    def seconds_per_gb(self) -> float:
        return self.seconds / (self.nbytes / 1e9) if self.nbytes else float("nan")


class WeightTransport(abc.ABC):
    """Moves learner weights into a running vLLM server.

    ``push`` makes the server use ``model_or_params`` from now on and returns a ``SyncRecord``;
    ``restore`` re-applies the newest pushed weights to a freshly (re)started server, whose
    weights are those of the directory it was launched from.

    An NCCL transport (GPU only) would implement the same two methods with vLLM 0.32's
    weight-transfer endpoints, the learner acting as NCCL rank 0 of a group shared with the
    inference workers:
      * once: POST /init_weight_transfer_engine {"init_info": {...rendezvous: master_address /
        master_port, or an ncclUniqueId minted by a torch-free (JAX) trainer as
        nccl_unique_id_b64; world_size; packed buffer settings}}, then join the group;
      * per push: POST /start_weight_update; POST /update_weights {"update_info": {"names",
        "dtype_names", "shapes"}} (HF names/dtypes/shapes) while the learner broadcasts each
        tensor from device memory; POST /finish_weight_update; POST /reset_prefix_cache;
      * ``restore`` after a server restart: re-initialise the group and push the weights again
        (they live in the learner, so no checkpoint has to be kept).
    That transport needs NCCL on both sides (learner GPUs reachable from the server GPUs); it is
    not implemented here because it cannot run or be tested on a CPU-only machine.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def push(self, model_or_params: Any, version: int, client: VLLMClient) -> SyncRecord:
        """Loads ``model_or_params`` into the server behind ``client``."""

    @abc.abstractmethod
    def restore(self, client: VLLMClient) -> None:
        """Re-applies the newest pushed weights (no-op if nothing was pushed yet)."""

    def close(self) -> None:
        """Releases files or communicators held by the transport."""


def _default_save_fn(model: Any, path: str) -> None:
    from rlvr_jax.models import save_hf  # imported lazily: the launcher/client need no JAX
    save_hf(model, path)


def _dir_nbytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class FilesystemTransport(WeightTransport):
    """Exports HF safetensors to ``<sync_root>/version_<v>`` and asks vLLM to reload them.

    ``model_or_params`` is passed to ``save_fn(model_or_params, path)`` (default:
    ``rlvr_jax.models.save_hf``). A ``str``/``PathLike`` is taken as an already exported HF
    directory: it is loaded as is and never deleted. ``sync_root`` should be a local disk (or
    /dev/shm when host memory allows) visible to the server; ``None`` makes a temporary
    directory that ``close`` removes. ``reload_method`` is the worker method called through
    /collective_rpc: ``rlvr_reload_weights`` needs the server to run with rlvr_jax's worker
    extension (the launcher adds it); plain ``reload_weights`` works on any dev-mode server but
    leaves tied LM heads stale on the CPU build (see vllm_worker_ext.py).
    """

    name = "filesystem"

    def __init__(self, sync_root: str | os.PathLike | None = None,
                 save_fn: Callable[[Any, str], None] | None = None,
                 reload_method: str = "rlvr_reload_weights",
                 reload_timeout_s: float | None = None):
        self._owns_root = sync_root is None
        self.sync_root = pathlib.Path(tempfile.mkdtemp(prefix="rlvr_vllm_sync_") if sync_root is None
                                      else sync_root)
        self.sync_root.mkdir(parents=True, exist_ok=True)
        self.save_fn = save_fn or _default_save_fn
        self.reload_method = reload_method
        self.reload_timeout_s = reload_timeout_s
        self.latest_path: pathlib.Path | None = None
        self._latest_owned = False

    def _export(self, model_or_params: Any, version: int) -> tuple[pathlib.Path, bool]:
        if isinstance(model_or_params, (str, os.PathLike)):
            path = pathlib.Path(model_or_params)
            if not any(path.glob("*.safetensors")):
                raise FileNotFoundError(f"no *.safetensors in weights directory {str(path)!r}")
            return path.resolve(), False
        final = self.sync_root / f"version_{int(version):08d}"
        suffix = 0
        while final.exists():  # the same version synced again: never overwrite what is served
            suffix += 1
            final = self.sync_root / f"version_{int(version):08d}_{suffix}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.save_fn(model_or_params, str(partial))
        if not any(partial.glob("*.safetensors")):
            raise RuntimeError(f"save_fn wrote no *.safetensors into {str(partial)!r}")
        os.rename(partial, final)  # the server only ever sees complete directories
        return final.resolve(), True

    def _load(self, client: VLLMClient, path: pathlib.Path) -> None:
        client.reload_weights(str(path), method=self.reload_method, timeout_s=self.reload_timeout_s)
        client.reset_prefix_cache()

    def push(self, model_or_params: Any, version: int, client: VLLMClient) -> SyncRecord:
        t0 = time.perf_counter()
        path, owned = self._export(model_or_params, version)
        t1 = time.perf_counter()
        try:
            self._load(client, path)
        except BaseException:
            if owned:
                shutil.rmtree(path, ignore_errors=True)
            raise
        t2 = time.perf_counter()
        previous, previous_owned = self.latest_path, self._latest_owned
        self.latest_path, self._latest_owned = path, owned
        if previous_owned and previous is not None and previous != path:
            shutil.rmtree(previous, ignore_errors=True)
        return SyncRecord(version=int(version), transport=self.name, seconds=t2 - t0,
                          export_seconds=t1 - t0, load_seconds=t2 - t1, nbytes=_dir_nbytes(path),
                          path=str(path))

    def restore(self, client: VLLMClient) -> None:
        if self.latest_path is not None:
            self._load(client, self.latest_path)

    def close(self) -> None:
        if self._latest_owned and self.latest_path is not None:
            shutil.rmtree(self.latest_path, ignore_errors=True)
        self.latest_path, self._latest_owned = None, False
        if self._owns_root:
            shutil.rmtree(self.sync_root, ignore_errors=True)


_CLIENT_OPTIONS = ("request_timeout_s", "max_retries", "backoff_s", "max_concurrency")


class VLLMEngine(RolloutEngine):
    """``RolloutEngine`` over a vLLM server.

    Give exactly one of:
      model_dir: launch a server on this HF directory (the other keyword ``options`` are
        ``VLLMServerConfig`` fields, e.g. dtype='float32', max_model_len=1024, enforce_eager=True);
      url: attach to a running server (it must run with VLLM_SERVER_DEV_MODE=1 for the
        filesystem sync, and --logprobs-mode raw_logprobs, vLLM's default);
      server: an existing ``VLLMServer``; the engine takes ownership and stops it on close().
    client options (request_timeout_s, max_retries, backoff_s, max_concurrency) go to VLLMClient.
    ``sync_root``: where FilesystemTransport writes version directories (or pass ``transport``).
    ``reload_method``: worker method for the filesystem sync; default ``rlvr_reload_weights`` when
      the server runs rlvr_jax's worker extension (always for servers launched here), else vLLM's
      ``reload_weights``. Start external servers with ``--worker-extension-cls
      rlvr_jax.rollout.vllm_worker_ext.WeightSyncExtension`` and pass
      ``reload_method='rlvr_reload_weights'`` to get the tied-LM-head fix there too.
    ``max_restarts``: restarts allowed per generate() / sync_weights() call before the error
      propagates.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, *, url: str | None = None,
                 server: VLLMServer | None = None, sync_root: str | os.PathLike | None = None,
                 transport: WeightTransport | None = None, reload_method: str | None = None,
                 max_restarts: int = 2, **options):
        if sum(x is not None for x in (model_dir, url, server)) != 1:
            raise ValueError("VLLMEngine needs exactly one of model_dir=, url= or server= "
                             f"(got model_dir={model_dir!r}, url={url!r}, server={server!r})")
        if transport is not None and (sync_root is not None or reload_method is not None):
            raise ValueError("sync_root= and reload_method= configure the default transport; "
                             "they cannot be combined with transport=")
        client_options = {k: options.pop(k) for k in _CLIENT_OPTIONS if k in options}
        if url is not None and options:
            raise ValueError(f"server options {sorted(options)} given but the server is attached by url")
        if server is not None and options:
            raise ValueError(f"server options {sorted(options)} given with an existing server")
        if model_dir is not None:
            server = VLLMServer.launch(VLLMServerConfig(model=str(model_dir), **options))
        elif url is not None:
            server = VLLMServer.attach(url)
        self.server: VLLMServer = server
        try:
            model_name = server.config.served_model_name if server.owns_process else None
            self.client = VLLMClient(server.url, model_name, **client_options)
            if model_name is None:
                self.client.model = self.client.models()[0]
            if transport is None:
                if reload_method is None:
                    has_ext = server.owns_process and server.config.worker_extension_cls == WORKER_EXTENSION
                    reload_method = "rlvr_reload_weights" if has_ext else "reload_weights"
                transport = FilesystemTransport(sync_root, reload_method=reload_method)
            self.transport = transport
        except BaseException:
            self.server.close()
            raise
        self.max_restarts = max_restarts
        self.version: int | None = None
        self.sync_history: list[SyncRecord] = []
        self.restarts = 0
        self.restart_log: list[RestartRecord] = []

    # ---- recovery -----------------------------------------------------------------------
    def _recover(self, reason: BaseException, during: str) -> None:
        if not self.server.owns_process:
            raise ServerUnavailableError(
                f"vLLM server at {self.server.url} is unreachable and was attached by URL, so it "
                f"cannot be restarted from here: {reason}") from reason
        proc = self.server.proc
        exit_code = None if proc is None else proc.poll()
        server_error = server_error_cause(self.server.log_tail(200_000))
        t0 = time.perf_counter()
        self.server.restart()
        self.client.base_url = self.server.url
        self.transport.restore(self.client)
        self.restarts += 1
        record = RestartRecord(during=during, cause=f"{type(reason).__name__}: {reason}"[:500],
                               server_error=server_error, exit_code=exit_code,
                               seconds=time.perf_counter() - t0)
        self.restart_log.append(record)
        print(f"[vllm] server restart {self.restarts} during {during} ({record.seconds:.1f} s): server error "
              f"{server_error!r}, exit code {exit_code}; client error {record.cause[:200]!r}; "
              f"log {self.server.log_path}", file=sys.stderr, flush=True)

    # ---- RolloutEngine ------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], n: int,
                 params: SamplingParams) -> list[list[Completion]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        if self.server.owns_process and not self.server.process_alive():
            self._recover(RuntimeError("server process found dead before generate"), "generate")
        results: dict[int, list[Completion]] = {}
        pending = list(range(len(prompts)))
        for attempt in range(self.max_restarts + 1):
            try:
                results.update(self.client.generate([prompts[i] for i in pending], n, params,
                                                    prompt_indices=pending))
                break
            except ServerUnavailableError as e:
                results.update(e.partial)
                pending = [i for i in pending if i not in results]
                if attempt == self.max_restarts:
                    raise
                self._recover(e, "generate")
        return [results[i] for i in range(len(prompts))]

    def sync_weights(self, model_or_params: Any, version: int) -> float:
        for attempt in range(self.max_restarts + 1):
            try:
                record = self.transport.push(model_or_params, version, self.client)
                break
            except ServerUnavailableError as e:
                if attempt == self.max_restarts:
                    raise
                self._recover(e, "sync_weights")
        self.version = int(version)
        self.sync_history.append(record)
        return record.seconds

    def close(self) -> None:
        try:
            self.server.close()
        finally:
            self.transport.close()
