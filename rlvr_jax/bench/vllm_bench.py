"""vLLM weight sync and replica throughput (``python -m rlvr_jax.bench --what sync`` / ``--what replicas``).

``bench_sync``: for each preset shape, a random model in ``dtype`` is saved as the launch checkpoint of ONE vLLM
server; the two transports (filesystem: ``save_hf`` into ``sync_root`` + ``rlvr_reload_weights``; shm: the
shared-memory segment + ``rlvr_load_shm``) then alternate on that server, ``warmup`` untimed syncs each (the shm
segments' first writes allocate their pages), then ``repeats`` timed syncs each, interleaved (fs, shm, fs, shm ...)
so both see the same machine load. Two weight sets alternate between rounds (the second differs in the final norm),
and after every sync one short greedy request is made: the transports must give identical tokens and log-probs for
the same weights and different ones for different weights (``identical``). Reported per transport: median seconds,
export and load seconds, seconds per GB of weights, and filesystem / shm.

``bench_replicas``: the long-tailed request workload of scheduler_bench.py (per-request budgets
``min(N, ceil(N/32 (1 + Lomax(1.5))))``, no stop tokens, so the tokens are fixed by the draw) through
``VLLMEngine`` with 1 and with 2 replicas of the same model (one engine at a time, each after a warm-up pass):
useful tokens / s and each replica's tokens and busy seconds.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time


def _model(preset: str, dtype: str):
    from flax import nnx

    from rlvr_jax.models import Decoder, get_preset
    cfg = get_preset(preset, dtype=dtype, param_dtype=dtype)
    return Decoder(cfg, rngs=nnx.Rngs(0)), cfg


def _variant(model):
    """The same weights with the final norm scaled by 1.5 (a different policy sharing every other array)."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)
    target = model.final_norm.scale.get_value()
    leaves, treedef = jax.tree.flatten(state)
    leaves = [x * 1.5 if x is target else x for x in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def bench_sync(presets=("mid-qwen3", "qwen3-0.6b"), dtype: str = "bfloat16", repeats: int = 3, warmup: int = 2,
               sync_root: str | None = None, shm_dir: str | None = None) -> dict:
    out = {"dtype": dtype, "repeats": repeats, "warmup": warmup, "presets": {}}
    for preset in presets:
        out["presets"][preset] = _bench_sync_one(preset, dtype, repeats, warmup, sync_root, shm_dir)
    return out


def _bench_sync_one(preset, dtype, repeats, warmup, sync_root, shm_dir) -> dict:
    from rlvr_jax.models import save_hf
    from rlvr_jax.rollout import SamplingParams
    from rlvr_jax.rollout.vllm_engine import VLLMEngine
    from rlvr_jax.rollout.vllm_transport import SharedMemoryTransport

    model, cfg = _model(preset, dtype)
    models = [model, _variant(model)]
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    prompt = [[5, 6, 7, 8, 9, 10, 11, 12]]
    with tempfile.TemporaryDirectory(prefix="rlvr_bench_sync_", dir=sync_root) as d:
        save_hf(model, os.path.join(d, "init"))
        t0 = time.perf_counter()
        engine = VLLMEngine(os.path.join(d, "init"), transport="filesystem", sync_root=os.path.join(d, "sync"),
                            dtype=dtype, max_model_len=256, max_num_seqs=4, enforce_eager=True,
                            log_path=os.path.join(d, "server.log"))
        start_s = time.perf_counter() - t0
        transports = {"filesystem": engine.transport, "shm": SharedMemoryTransport(shm_dir)}
        records = {k: [] for k in transports}
        workers = {k: [] for k in transports}  # the worker's own timing of its load phases
        outputs: dict = {}
        identical, version = True, 0
        try:
            for r in range(warmup + repeats):
                w = r % 2
                for name, t in transports.items():
                    engine.transport = t
                    version += 1
                    engine.sync_weights(models[w], version)
                    if r >= warmup:
                        records[name].append(engine.sync_history[-1])
                        workers[name].append(t.worker_seconds[0] if t.worker_seconds else {})
                    res = engine.generate(prompt, 1, params)[0][0]
                    outputs.setdefault((name, w), (res.token_ids, res.logprobs))
                    identical &= outputs[(name, w)] == (res.token_ids, res.logprobs)
        finally:
            engine.transport = transports["filesystem"]
            transports["shm"].close()
            engine.close()
    same = all(outputs[("filesystem", w)] == outputs[("shm", w)] for w in (0, 1))
    differ = outputs[("shm", 0)] != outputs[("shm", 1)]
    res = {"preset": preset, "server_start_s": start_s, "identical": bool(identical and same),
           "weights_change_output": bool(differ)}
    for name, recs in records.items():
        med = lambda f: statistics.median(f(x) for x in recs)  # noqa: E731
        res[name] = {"nbytes": recs[0].nbytes, "seconds": med(lambda x: x.seconds),
                     "export_s": med(lambda x: x.export_seconds), "load_s": med(lambda x: x.load_seconds),
                     "s_per_gb": med(lambda x: x.seconds_per_gb), "all_seconds": [x.seconds for x in recs],
                     "worker_s": {k: statistics.median(w.get(k, float("nan")) for w in workers[name])
                                  for k in sorted({k for w in workers[name] for k in w})}}
    res["filesystem_over_shm"] = res["filesystem"]["seconds"] / res["shm"]["seconds"]
    return res


def sync_markdown(r: dict) -> str:
    rows = [f"| preset ({r['dtype']}) | transport | weights GB | sync s (median of {r['repeats']}) | export s | "
            "load s (inside the worker) | s/GB | filesystem / shm | same log-probs |", "|---|---|---|---|---|---|---|---|---|"]
    for preset, p in r["presets"].items():
        for name in ("filesystem", "shm"):
            t = p[name]
            ratio = f"{p['filesystem_over_shm']:.1f}" if name == "shm" else ""
            inside = ", ".join(f"{k} {v:.3g}" for k, v in t.get("worker_s", {}).items())
            rows.append(f"| {preset} | {name} | {t['nbytes'] / 1e9:.3g} | {t['seconds']:.3g} | {t['export_s']:.3g} | "
                        f"{t['load_s']:.3g} ({inside or '-'}) | {t['s_per_gb']:.3g} | {ratio} | {p['identical']} |")
    return "\n".join(rows)


def bench_replicas(preset: str = "mid-qwen3", dtype: str = "float32", requests: int = 64, new_tokens: int = 128,
                   prompt_len: int = 64, replicas=(1, 2), max_concurrency: int = 16) -> dict:
    from rlvr_jax.bench.scheduler_bench import _prompts, budgets
    from rlvr_jax.models import save_hf
    from rlvr_jax.rollout import SamplingParams
    from rlvr_jax.rollout.vllm_engine import VLLMEngine

    model, cfg = _model(preset, dtype)
    prompts = _prompts(requests, prompt_len, cfg.vocab_size)
    caps = budgets("long_tail", requests, new_tokens)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0)
    out = {"preset": preset, "dtype": dtype, "requests": requests, "new_tokens": new_tokens, "prompt_len": prompt_len,
           "useful_tokens": sum(caps), "max_over_mean": max(caps) / (sum(caps) / requests),
           "max_concurrency": max_concurrency, "runs": {}}
    results = {}
    with tempfile.TemporaryDirectory(prefix="rlvr_bench_replicas_") as d:
        save_hf(model, os.path.join(d, "init"))
        for k in replicas:
            t0 = time.perf_counter()
            engine = VLLMEngine(os.path.join(d, "init"), num_servers=k, transport="shm", dtype=dtype,
                                max_model_len=prompt_len + new_tokens, max_num_seqs=max_concurrency,
                                enforce_eager=True, max_concurrency=max_concurrency,
                                log_path=os.path.join(d, f"server_k{k}.log"))
            start_s = time.perf_counter() - t0
            try:
                engine.generate(prompts[:2 * max_concurrency * k], 1, dataclasses.replace(params, seed=1),
                                max_new_tokens_per_prompt=caps[:2 * max_concurrency * k])  # warm-up
                t0 = time.perf_counter()
                res = engine.generate(prompts, 1, params, max_new_tokens_per_prompt=caps)
                dt = time.perf_counter() - t0
                got = sum(len(r[0].token_ids) for r in res)
                results[k] = [r[0].token_ids for r in res]
                out["runs"][k] = {"time_s": dt, "tokens_per_s": got / dt, "useful_tokens": got,
                                  "server_start_s": start_s,
                                  "replica_tokens": [rep.last.tokens for rep in engine.replicas],
                                  "replica_busy_s": [rep.last.busy_s for rep in engine.replicas]}
            finally:
                engine.close()
    ks = list(out["runs"])
    if len(ks) >= 2:
        out["speedup"] = out["runs"][ks[-1]]["tokens_per_s"] / out["runs"][ks[0]]["tokens_per_s"]
        out["same_tokens"] = results[ks[0]] == results[ks[-1]]
    return out


def replicas_markdown(r: dict) -> str:
    rows = [f"| replicas ({r['preset']} {r['dtype']}, {r['requests']} long-tailed requests, max/mean "
            f"{r['max_over_mean']:.2f}) | tokens/s | time s | tokens per replica | busy s per replica |",
            "|---|---|---|---|---|"]
    for k, run in r["runs"].items():
        rows.append(f"| {k} | {run['tokens_per_s']:.4g} | {run['time_s']:.3g} | {run['replica_tokens']} | "
                    f"{[round(b, 2) for b in run['replica_busy_s']]} |")
    return "\n".join(rows)
