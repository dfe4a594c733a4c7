"""The PyTorch peer: the same learner and sampler shapes with transformers + torch.

Learner: float32 master weights under bf16 autocast, SDPA attention, gradient checkpointing, fused AdamW
(on CUDA), token cross-entropy over [B, T]. Sampler: bf16 weights, ``generate`` with sampling for exactly
M new tokens. Both use random weights built from the same ``ModelConfig`` via its Hugging Face config dict.
"""
from __future__ import annotations

import statistics
import time


def _torch():
    import torch  # imported lazily: the peer is optional
    return torch


def _hf_model(cfg, dtype):
    import transformers
    torch = _torch()
    hf_cfg = transformers.AutoConfig.for_model(**cfg.to_hf_dict())
    hf_cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype, attn_implementation="sdpa")
    return model


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peer_learner(cfg, batch: int, seq_len: int, steps: int = 5, warmup: int = 2) -> dict:
    torch = _torch()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _hf_model(cfg, torch.float32).to(device)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    model.train()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=fused)
    gen = torch.Generator(device="cpu").manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            out = model(input_ids=tokens, labels=tokens)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(torch, device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(torch, device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    med = statistics.median(times)
    return {"step_time_s": med, "tokens_per_s": batch * seq_len / med, "peak_memory_bytes": peak,
            "step_times_s": times}


def peer_sampler(cfg, batch: int, prompt_len: int, new_tokens: int, repeats: int = 2) -> dict:
    torch = _torch()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = _hf_model(cfg, dtype).to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    prompts = torch.randint(0, cfg.vocab_size, (batch, prompt_len), generator=gen).to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0,
                  top_k=0, top_p=1.0, pad_token_id=0)
    with torch.no_grad():
        model.generate(prompts, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        _sync(torch, device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model.generate(prompts, **kwargs)
            _sync(torch, device)
            times.append(time.perf_counter() - t0)
    generated = (out.shape[1] - prompt_len) * batch
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    med = statistics.median(times)
    return {"time_s": med, "tokens_per_s": generated / med}


def _child(preset: str, what: list, kw: dict) -> dict:
    from rlvr_jax.models import get_preset
    cfg = get_preset(preset)
    out = {"torch": _torch().__version__}
    if "learner" in what:
        out["peer_learner"] = peer_learner(cfg, kw["batch"], kw["seq_len"], kw["steps"], kw["warmup"])
    if "sampler" in what:
        out["peer_sampler"] = peer_sampler(cfg, kw["sampler_batch"], kw["prompt_len"], kw["new_tokens"])
    return out


def run_isolated(preset: str, what, **kw) -> dict:
    """Runs the peer benchmarks in a spawned child process and returns their results ({} without torch)."""
    import importlib.util
    import multiprocessing
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        print("--peer: torch or transformers is not importable; skipping the peer", flush=True)
        return {}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (preset, sorted(what), kw))
