"""rlvr_jax's own learner, sampler and export measured at real shapes with random weights."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvr_jax.bench import flops
from rlvr_jax.models import Decoder, get_preset, save_hf


def device_kind() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{d.device_kind}"


def peak_memory_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def measure_bandwidth(n_bytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device memory bandwidth in bytes/s from a large on-device copy (bytes read + bytes written)."""
    n = n_bytes // 4
    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    copy = jax.jit(lambda a: a * 1.0001)
    copy(x).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        copy(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n * 4 / statistics.median(times)


def _model(preset: str, **overrides):
    cfg = get_preset(preset, **overrides)
    return Decoder(cfg, rngs=nnx.Rngs(0)), cfg


def _trace(profile_dir: str | None, name: str):
    """``jax.profiler.trace`` into ``profile_dir/name`` (no-op context without a directory)."""
    if not profile_dir:
        return contextlib.nullcontext()
    return jax.profiler.trace(os.path.join(profile_dir, name))


def bench_learner(preset: str, batch: int, seq_len: int, prompt_len: int, steps: int, warmup: int,
                  remat: str, attention_impl: str | None, micro_batch_size: int | None,
                  logprob_chunk_size: int, objective: str = "grpo", mu_dtype: str = "float32",
                  profile_dir: str | None = None) -> dict:
    """Median time of one full policy update (forward, backward, clip, AdamW) on ``batch x seq_len`` tokens.

    Parameters and optimizer state are float32, compute is bfloat16. Each sequence is a ``prompt_len``
    prompt followed by ``seq_len - prompt_len`` response tokens that all carry loss.
    """
    from rlvr_jax.trainer.learner import Learner, LearnerOptions
    from rlvr_jax.objectives.types import ObjectiveHParams
    from rlvr_jax.sharding import make_mesh

    model, cfg = _model(preset, dtype="bfloat16", param_dtype="float32", remat=remat,
                        attention_impl=attention_impl)
    resp_len = seq_len - prompt_len
    if resp_len < 1:
        raise ValueError(f"seq_len {seq_len} must exceed prompt_len {prompt_len}")
    opts = LearnerOptions(objective=objective, hp=ObjectiveHParams(), micro_batch_size=micro_batch_size or batch,
                          length_bucket=min(prompt_len, resp_len), logprob_chunk_size=logprob_chunk_size,
                          lr=1e-6, total_updates=steps + warmup, mu_dtype=mu_dtype)
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1})
    learner = Learner(model, opts, mesh)
    del model
    rng = np.random.default_rng(0)
    mb = {"prompt_ids": rng.integers(0, cfg.vocab_size, (batch, prompt_len), dtype=np.int32),
          "prompt_mask": np.ones((batch, prompt_len), np.int32),
          "response_ids": rng.integers(0, cfg.vocab_size, (batch, resp_len), dtype=np.int32),
          "response_mask": np.ones((batch, resp_len), np.float32),
          "advantages": rng.standard_normal((batch, resp_len)).astype(np.float32)}
    logp, _ = learner.compute_logprobs(mb)
    mb["old_logp"] = logp
    mb["ref_logp"] = logp
    t0 = time.perf_counter()
    for _ in range(warmup):
        learner.update(mb)
    compile_and_warmup_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        with _trace(profile_dir if i == steps - 1 else None, "learner"):
            t0 = time.perf_counter()
            m = learner.update(mb)  # returns host floats: the step has finished
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    tokens = batch * seq_len
    fpt = flops.train_flops_per_token(cfg, seq_len)
    peak = flops.peak_bf16_flops(jax.devices()[0].device_kind)
    out = {"preset": preset, "batch": batch, "seq_len": seq_len, "remat": remat, "attention_impl": attention_impl,
           "mu_dtype": mu_dtype, "step_time_s": med, "step_times_s": times, "tokens_per_s": tokens / med,
           "flops_per_token": fpt, "achieved_tflops": fpt * tokens / med / 1e12,
           "mfu": (fpt * tokens / med / peak) if peak else None, "peak_memory_bytes": peak_memory_bytes(),
           "compile_and_warmup_s": compile_and_warmup_s, "grad_norm": m["actor/grad_norm"],
           "params": flops.total_params(cfg)}
    del learner
    return out


def bench_sampler(preset: str, batch: int, prompt_len: int, new_tokens: int, repeats: int,
                  attention_impl: str | None, bandwidth: float | None, decode_attention_impl: str = "xla",
                  profile_dir: str | None = None) -> dict:
    """Generated tokens/s of the JAX sampler (bf16 weights and cache), and its memory-roofline fraction.

    Roofline: decode step t reads every parameter once and the K/V of ``prompt_len + t`` tokens per row, so
    ``t_min = sum_t (param_bytes + batch * (prompt_len + t) * kv_bytes_per_token) / bandwidth``; the fraction
    reported is ``t_min / measured time`` (prefill is included in the measured time, not in ``t_min``).
    """
    from rlvr_jax.rollout import SamplingParams
    from rlvr_jax.rollout.jax_sampler import JaxSampler

    model, cfg = _model(preset, dtype="bfloat16", param_dtype="bfloat16", attention_impl=attention_impl,
                        decode_attention_impl=decode_attention_impl)
    sampler = JaxSampler(model, pad_id=0, max_batch_size=batch, batch_buckets=(batch,),
                         max_prompt_len=prompt_len, prompt_buckets=(prompt_len,),
                         max_new_tokens_limit=new_tokens, new_token_buckets=(new_tokens,),
                         scheduler="static")  # fixed shape: every row decodes --new_tokens (no refills)
    del model
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(1, cfg.vocab_size, prompt_len))) for _ in range(batch)]
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0)  # no stop ids: full length
    t0 = time.perf_counter()
    sampler.generate(prompts, 1, params)
    compile_s = time.perf_counter() - t0
    times, generated = [], 0
    for i in range(repeats):
        with _trace(profile_dir if i == repeats - 1 else None, "sampler"):
            t0 = time.perf_counter()
            res = sampler.generate(prompts, 1, dataclasses.replace(params, seed=i + 1))
            times.append(time.perf_counter() - t0)
        generated = sum(len(c[0].token_ids) for c in res)
    med = statistics.median(times)
    param_bytes = flops.total_params(cfg) * 2
    kv_tok = flops.kv_cache_bytes_per_token(cfg, 2)
    bytes_total = sum(param_bytes + batch * (prompt_len + t) * kv_tok for t in range(new_tokens))
    out = {"preset": preset, "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
           "decode_attention_impl": decode_attention_impl, "time_s": med, "tokens_per_s": generated / med,
           "compile_and_first_s": compile_s,
           "decode_bytes": bytes_total, "bandwidth_bytes_per_s": bandwidth,
           "roofline_fraction": (bytes_total / bandwidth / med) if bandwidth else None,
           "compilations": sampler.num_compilations, "peak_memory_bytes": peak_memory_bytes()}
    sampler.close()
    return out


def bench_export(preset: str, out_dir: str | None = None) -> dict:
    """``save_hf`` wall time and seconds per GB for a bf16 random model of the preset's shape."""
    model, cfg = _model(preset, dtype="bfloat16", param_dtype="bfloat16")
    jax.block_until_ready(nnx.state(model))
    tmp = tempfile.mkdtemp(prefix="rlvr_bench_export_", dir=out_dir)
    try:
        t0 = time.perf_counter()
        save_hf(model, tmp)
        wall = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"preset": preset, "wall_s": wall, "bytes": size, "s_per_gb": wall / (size / 1e9)}
