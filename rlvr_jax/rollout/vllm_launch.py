"""One way to start vLLM: the experiment config's ``rollout.vllm.*`` fields -> the engine's options and the servers'
configs, used by the trainer (``rlvr_jax.trainer.run_setup.build_engine``) and by the stand-alone launcher

    python -m rlvr_jax.rollout.vllm_launch --config=configs/x.py [--config.a.b=v ...] [--dry_run]

which starts ``rollout.vllm.num_servers`` servers exactly as the trainer would (same command lines, environment
and log files: ``build_command`` / ``build_env`` of vllm_server.py on the configs made here), writes their URLs,
comma-separated, to ``<logging.out_dir>/vllm_urls`` (the trainer attaches with ``--config.rollout.vllm.url=...``),
and stops them on SIGINT / SIGTERM (they also die with it, see vllm_server.py). ``--dry_run`` prints the command
lines and environment differences instead. launch/gpu_node.sh uses it, so a GPU run and CI's CPU run start the
same servers.

Field mapping (``rollout.vllm``): ``num_servers``, ``devices`` (split evenly, one ``CUDA_VISIBLE_DEVICES`` group
per server; empty: no split), ``port`` (0: free ports; else server ``i`` on ``port + i``), ``dtype`` (empty: the
learner's compute dtype ``model.dtype``), ``max_model_len``, ``gpu_memory_utilization``, ``tensor_parallel_size``,
``enforce_eager``, ``startup_timeout_s``, ``extra_args``, ``python``; ``train.seed`` is the server seed; the log
is ``<out_dir>/vllm_server.log`` (``vllm_server_<i>.log`` with several servers).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from rlvr_jax.rollout.vllm_server import VLLMServerConfig, build_command, build_env, server_configs, split_devices

URLS_FILE = "vllm_urls"


def server_dtype(cfg) -> str:
    """``rollout.vllm.dtype``, or the learner's compute dtype when empty."""
    return str(cfg.rollout.vllm.get("dtype", "") or cfg.model.dtype)


def server_options(cfg, out_dir: str) -> dict[str, Any]:
    """The ``VLLMServerConfig`` fields every server of the run gets (no model, port or log index yet)."""
    v = cfg.rollout.vllm
    opts = dict(dtype=server_dtype(cfg), max_model_len=int(v.max_model_len),
                gpu_memory_utilization=float(v.gpu_memory_utilization),
                tensor_parallel_size=int(v.tensor_parallel_size), enforce_eager=bool(v.enforce_eager),
                seed=int(cfg.train.seed), startup_timeout_s=float(v.startup_timeout_s),
                log_path=os.path.join(out_dir, "vllm_server.log"), extra_args=tuple(str(v.extra_args).split()))
    if v.python:
        opts["python"] = str(v.python)
    return opts


def engine_options(cfg, out_dir: str, model_dir: str | None) -> dict[str, Any]:
    """``VLLMEngine`` keyword arguments: attach to ``rollout.vllm.url`` (comma-separated URLs), or launch
    ``num_servers`` servers on ``model_dir``."""
    r, v = cfg.rollout, cfg.rollout.vllm
    common = dict(transport=str(v.get("transport", "auto")), shm_dir=str(v.get("shm_dir", "")) or None,
                  sync_root=r.sync_dir or os.path.join(out_dir, "weights"),
                  max_concurrency=int(v.get("max_concurrency", 32)))
    dtype = server_dtype(cfg)
    if dtype in ("float32", "bfloat16", "float16"):
        common["transport_dtype"] = dtype  # the shm segment holds what the servers compute in
    if v.url:
        return dict(url=str(v.url), **common)
    if not model_dir:
        raise ValueError("engine_options: no rollout.vllm.url and no model directory to launch servers from")
    k = int(v.get("num_servers", 1))
    return dict(model_dir=str(model_dir), num_servers=k, devices=split_devices(str(v.get("devices", "")), k),
                **common, **server_options(cfg, out_dir), **_ports(v, k))


def _ports(v, k: int) -> dict:
    port = int(v.get("port", 0) or 0)
    return {"ports": [port + i for i in range(k)]} if port else {}


_ENGINE_ONLY = ("url", "transport", "shm_dir", "sync_root", "max_concurrency", "transport_dtype")


def launch_configs(cfg) -> list[VLLMServerConfig]:
    """The server configs of the stand-alone launcher: the trainer's, on ``model.hf_path``."""
    if not cfg.model.hf_path:
        raise ValueError("model.hf_path is empty: the launcher serves a checkpoint directory (with a preset model the "
                         "trainer starts its own servers from the exported initial weights)")
    opts = engine_options(cfg, cfg.logging.out_dir, cfg.model.hf_path) if not cfg.rollout.vllm.url else None
    if opts is None:
        raise ValueError("rollout.vllm.url is set: the servers are already running")
    opts = {k: val for k, val in opts.items() if k not in _ENGINE_ONLY}
    return server_configs(**opts)


def checked_config(cfg):
    """``cfg`` with ``rollout.engine='vllm'``, validated as the trainer validates it (the fields the servers and the
    trainer share are checked once, here, before a server starts); a bad field raises its ConfigError, which
    :func:`rlvr_jax.cli.run_cli` reports as one line naming the field (exit 2)."""
    import ml_collections

    from rlvr_jax.config import validate_config

    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.rollout.engine = "vllm"
    validate_config(cfg, check_files=False)
    return cfg


def describe(configs: list[VLLMServerConfig]) -> str:
    """Each server's command line and the environment variables it sets (``--dry_run``)."""
    import shlex

    lines = []
    for i, c in enumerate(configs):
        env = build_env(c, base={})
        port = c.port if c.port is not None else "<free port>"
        cmd = build_command(c, 0 if c.port is None else c.port)
        if c.port is None:
            cmd[cmd.index("--port") + 1] = "<free port>"
        lines.append(f"# server {i} on port {port}, log {c.log_path}")
        lines.append(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())) + " " + shlex.join(cmd))
    return "\n".join(lines)


def main(argv) -> None:
    from absl import flags

    from rlvr_jax.rollout.vllm_server import VLLMServer

    del argv
    cfg = checked_config(flags.FLAGS.config)
    configs = launch_configs(cfg)
    if flags.FLAGS.dry_run:
        print(describe(configs))
        return
    os.makedirs(cfg.logging.out_dir, exist_ok=True)
    urls_path = os.path.join(cfg.logging.out_dir, URLS_FILE)
    if os.path.exists(urls_path):
        os.remove(urls_path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"[vllm_launch] starting {len(configs)} server(s) on {cfg.model.hf_path}; logs "
          f"{', '.join(str(c.log_path) for c in configs)}", flush=True)
    servers = VLLMServer.launch_many(configs)
    try:
        urls = ",".join(s.url for s in servers)
        tmp = urls_path + ".partial"
        with open(tmp, "w") as f:
            f.write(urls + "\n")
        os.rename(tmp, urls_path)
        print(f"[vllm_launch] healthy: {urls} (written to {urls_path}); SIGINT/SIGTERM stops them", flush=True)
        while not stop.wait(1.0):
            dead = [s.url for s in servers if not s.process_alive()]
            if dead:
                print(f"[vllm_launch] server(s) exited: {dead}; stopping", file=sys.stderr, flush=True)
                raise SystemExit(1)
    finally:
        for s in servers:
            s.close()
        if os.path.exists(urls_path):
            os.remove(urls_path)


def cli() -> None:
    from absl import flags
    from ml_collections import config_flags

    from rlvr_jax.cli import run_cli
    from rlvr_jax.config.overrides import exit_on_unknown_overrides
    exit_on_unknown_overrides()
    config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:arg])", lock_config=True)
    flags.DEFINE_boolean("dry_run", False, "print the server command lines instead of starting them")
    flags.mark_flags_as_required(["config"])
    run_cli(main, usage=(__doc__ or "").split("\n\n")[0],
            log_path=lambda: os.path.join(flags.FLAGS.config.logging.out_dir, "vllm_launch.log.txt"))


if __name__ == "__main__":
    cli()
