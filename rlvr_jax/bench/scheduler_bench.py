"""Static vs continuous batching of the JAX sampler (and vLLM where installed) on one set of requests.

Workloads (per-request token budgets, ``max_new_tokens_per_prompt``; no stop ids, so each request generates
exactly its budget and the useful work is fixed by the draw, whatever the random weights sample):

* ``long_tail``: ``L = min(N, ceil(N / 32 * (1 + X)))`` with ``X ~ Lomax(1.5)`` (a Pareto tail: most requests
  short, a few at the cap ``N``); the drawn ``max / mean`` is reported.
* ``uniform``: every request generates ``N`` tokens (continuous batching can only lose here).

For each workload both schedulers run the same model, prompts, budgets and seed, alternately, ``repeats``
times after one warm-up call each (compiles); the median is reported. Metrics: useful tokens / s (tokens
of the requests / wall time of ``generate``), slot utilisation (``last_stats``: useful token steps / slot
steps), continuous / static, and whether the two paths gave identical tokens. With ``vllm=True`` the same
model is saved with ``save_hf`` and served by ``python -m vllm.entrypoints.openai.api_server`` on the same
device (``--max-num-seqs`` = slots, eager mode, same dtype); the long-tailed requests go to it concurrently
(one ``/v1/completions`` per request, its budget as ``max_tokens``, ``ignore_eos``), timed after a warm-up
pass over the first ``2 x slots`` requests.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import statistics
import tempfile
import time

import jax
import numpy as np
from flax import nnx

WORKLOADS = ("long_tail", "uniform")


def budgets(kind: str, requests: int, new_tokens: int, seed: int = 0) -> list[int]:
    """Per-request token budgets of a workload (module docstring)."""
    if kind == "uniform":
        return [new_tokens] * requests
    if kind == "long_tail":
        x = np.random.default_rng(seed).pareto(1.5, requests)
        return [int(v) for v in np.minimum(new_tokens, np.ceil(new_tokens / 32 * (1 + x)))]
    raise ValueError(f"unknown workload {kind!r}; expected one of {WORKLOADS}")


def _prompts(requests: int, prompt_len: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed + 1)
    return [list(map(int, rng.integers(3, vocab, int(rng.integers(prompt_len // 2, prompt_len + 1)))))
            for _ in range(requests)]


def _time_generate(sampler, prompts, params, caps):
    t0 = time.perf_counter()
    out = sampler.generate(prompts, 1, params, max_new_tokens_per_prompt=caps)
    return time.perf_counter() - t0, out, dict(sampler.last_stats)


def bench_schedulers(preset: str, slots: int, prompt_len: int, new_tokens: int, requests: int,
                     workloads=WORKLOADS, repeats: int = 1, decode_steps: int = 4096, refill_rows: int | None = None,
                     dtype: str | None = None, vllm: bool = False) -> dict:
    from rlvr_jax.models import Decoder, get_preset
    from rlvr_jax.rollout import SamplingParams
    from rlvr_jax.rollout.jax_sampler import JaxSampler

    if dtype is None:  # bf16 matmuls are emulated (slow) on CPUs
        dtype = "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"
    cfg = get_preset(preset, dtype=dtype, param_dtype=dtype)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    kw = dict(pad_id=0, max_batch_size=slots, batch_buckets=(slots,), max_prompt_len=prompt_len,
              prompt_buckets=(prompt_len,), max_new_tokens_limit=new_tokens, new_token_buckets=(new_tokens,))
    samplers = {"static": JaxSampler(model, scheduler="static", **kw),
                "continuous": JaxSampler(model, scheduler="continuous", decode_steps=decode_steps,
                                         refill_rows=refill_rows, **kw)}
    prompts = _prompts(requests, prompt_len, cfg.vocab_size)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0)
    out = {"preset": preset, "dtype": dtype, "slots": slots, "prompt_len": prompt_len, "new_tokens": new_tokens,
           "requests": requests, "decode_steps": decode_steps,
           "refill_rows": samplers["continuous"]._continuous.refill_size(slots), "workloads": {}}
    for name, s in samplers.items():  # warm-up: compiles every program of these buckets
        t0 = time.perf_counter()
        s.generate(prompts[:slots], 1, params, max_new_tokens_per_prompt=[2] * min(slots, requests))
        out[f"compile_{name}_s"] = time.perf_counter() - t0
    for wl in workloads:
        caps = budgets(wl, requests, new_tokens)
        times = {k: [] for k in samplers}
        res, stats = {}, {}
        for _ in range(repeats):
            for name, s in samplers.items():
                dt, res[name], stats[name] = _time_generate(s, prompts, params, caps)
                times[name].append(dt)
        useful = sum(caps)
        w = {"max_over_mean": max(caps) / (useful / requests), "useful_tokens": useful,
             "same_tokens": all(a[0].token_ids == b[0].token_ids
                                for a, b in zip(res["static"], res["continuous"]))}
        for name in samplers:
            med = statistics.median(times[name])
            w[name] = {"time_s": med, "times_s": times[name], "tokens_per_s": useful / med, **stats[name]}
        w["continuous_over_static"] = w["continuous"]["tokens_per_s"] / w["static"]["tokens_per_s"]
        out["workloads"][wl] = w
    for s in samplers.values():
        s.close()
    if vllm:
        tail = [wl for wl in workloads if wl == "long_tail"]
        out["vllm"] = bench_vllm(model, cfg, prompts, params, {wl: budgets(wl, requests, new_tokens) for wl in tail},
                                 slots, prompt_len + new_tokens)
        for wl, v in out["vllm"].get("workloads", {}).items():
            jax_tps = out["workloads"][wl]["continuous"]["tokens_per_s"]
            v["jax_continuous_over_vllm"] = jax_tps / v["tokens_per_s"]
    return out


def bench_vllm(model, cfg, prompts, params, caps_by_workload, max_num_seqs: int, max_model_len: int) -> dict:
    """The same requests through a vLLM server on this device (module docstring); ``{'error': ...}`` if none."""
    from rlvr_jax.models import save_hf
    from rlvr_jax.rollout.vllm_client import VLLMClient
    from rlvr_jax.rollout.vllm_server import launch_server, vllm_build

    try:
        build = vllm_build()
    except RuntimeError as e:
        return {"error": str(e)}
    with tempfile.TemporaryDirectory(prefix="rlvr_bench_vllm_") as d:
        save_hf(model, d)
        server = launch_server(d, dtype=cfg.dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                               enforce_eager=True, worker_extension_cls=None)
        try:
            client = VLLMClient(server.url)
            out = {"build": build, "max_num_seqs": max_num_seqs, "workloads": {}}
            for wl, caps in caps_by_workload.items():
                def run(prompts=prompts, caps=caps):
                    with concurrent.futures.ThreadPoolExecutor(min(len(prompts), 4 * max_num_seqs)) as pool:
                        futs = [pool.submit(client.complete, p, 1, dataclasses.replace(params, max_new_tokens=c), i)
                                for i, (p, c) in enumerate(zip(prompts, caps))]
                        return [f.result() for f in futs]
                run(prompts[:2 * max_num_seqs], caps[:2 * max_num_seqs])  # warm-up
                t0 = time.perf_counter()
                res = run()
                dt = time.perf_counter() - t0
                got = sum(len(r[0].token_ids) for r in res)
                out["workloads"][wl] = {"time_s": dt, "tokens_per_s": got / dt, "useful_tokens": got,
                                        "all_budgets_met": got == sum(caps)}
            return out
        finally:
            server.close()


def markdown(r: dict) -> str:
    rows = [f"| workload ({r['preset']}, {r['slots']} slots, {r['requests']} requests, prompt <= {r['prompt_len']}, "
            f"<= {r['new_tokens']} new) | max/mean | static tok/s | static util. | continuous tok/s | "
            "continuous util. | continuous / static | same tokens | vLLM tok/s | JAX continuous / vLLM |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    vl = (r.get("vllm") or {}).get("workloads", {})
    for wl, w in r["workloads"].items():
        v = vl.get(wl, {})
        fmt = lambda x, s=".3g": "-" if x is None else format(x, s)  # noqa: E731
        rows.append(f"| {wl} | {w['max_over_mean']:.2f} | {w['static']['tokens_per_s']:.4g} | "
                    f"{w['static']['utilisation']:.3f} | {w['continuous']['tokens_per_s']:.4g} | "
                    f"{w['continuous']['utilisation']:.3f} | {w['continuous_over_static']:.2f} | "
                    f"{w['same_tokens']} | {fmt(v.get('tokens_per_s'), '.4g')} | "
                    f"{fmt(v.get('jax_continuous_over_vllm'), '.2f')} |")
    return "\n".join(rows)

