"""CPU smoke test of `python -m rlvr_jax.bench` on a tiny preset, plus the FLOP accounting."""
import json
import math
import re
import subprocess
import sys

from rlvr_jax.bench import flops
from rlvr_jax.bench.__main__ import markdown
from rlvr_jax.models import Decoder, get_preset


def test_flops_formula_matches_issue_peer_figure():
    cfg = get_preset("qwen3-1.7b")
    # Issue 8: the peer's Qwen3-1.7B 4x2048 step at 21.6k tok/s was quoted as 24% MFU on a 989 TFLOP/s device.
    mfu = flops.train_flops_per_token(cfg, 2048) * 21.6e3 / flops.peak_bf16_flops("NVIDIA H100 80GB HBM3")
    assert abs(mfu - 0.24) < 0.005


def test_param_count_matches_the_model():
    cfg = get_preset("tiny-qwen3")
    from flax import nnx
    model = nnx.eval_shape(lambda: Decoder(cfg))
    n = sum(math.prod(x.shape) for x in __import__("jax").tree.leaves(nnx.state(model, nnx.Param)))
    assert flops.total_params(cfg) == n


def test_bench_cli_tiny_preset(tmp_path):
    # The child inherits the 8 simulated CPU devices: the learner mesh spans them (fsdp=8), so batch 8.
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "rlvr_jax.bench", "--preset", "tiny-qwen3",
           "--what", "learner,sampler,export,census",
           "--batch", "8", "--seq_len", "48", "--prompt_len", "16", "--steps", "2", "--warmup", "1",
           "--sampler_batch", "4", "--sampler_prompt_len", "16", "--new_tokens", "16", "--sampler_repeats", "1",
           "--mu_dtype", "bfloat16", "--decode_attention_impl", "pallas", "--profile", str(tmp_path / "prof"),
           "--out", str(out), "--size", "cpu"]  # --size cpu: the flags given win (only decode_steps is not given)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["learner"]["tokens_per_s"] > 0 and math.isfinite(r["learner"]["grad_norm"])
    assert r["learner"]["flops_per_token"] == flops.train_flops_per_token(get_preset("tiny-qwen3"), 48)
    assert r["sampler"]["tokens_per_s"] > 0 and r["sampler"]["compilations"] == 1
    assert r["export"]["bytes"] > 0 and r["export"]["s_per_gb"] > 0
    assert r["learner"]["mu_dtype"] == "bfloat16" and r["sampler"]["decode_attention_impl"] == "pallas"
    assert r["census"]["total"] > r["census"]["model_flops"] > 0 and "float32 x float32" not in r["census"]["by_dtype"]
    traces = {p.relative_to(tmp_path / "prof").parts[0] for p in (tmp_path / "prof").rglob("*.xplane.pb")}
    assert traces == {"learner", "sampler"}, traces
    assert "| learner tokens/s | 8x48 |" in proc.stdout
    # a line before and after each phase, the closing summary; the raw results in the log file beside --out
    assert "[bench] --size cpu: decode_steps=64" in proc.stdout
    for phase in ("learner", "census", "sampler", "export"):
        assert re.search(rf"^\[bench\] {phase}: .* \.\.\.$", proc.stdout, re.M), phase
        assert re.search(rf"^\[bench\] {phase}: .* \(\d+\.\d s\)$", proc.stdout, re.M), phase
    assert "== bench done: preset tiny-qwen3 on cpu" in proc.stdout and str(out) in proc.stdout.split("== bench")[1]
    assert '{"learner": {' in (tmp_path / "bench.log.txt").read_text()
    assert markdown(r) == r["table"]


def test_matmul_census_counts_scan_trips_and_nested_jaxprs():
    import jax
    import jax.numpy as jnp
    from rlvr_jax.bench.census import matmul_census

    a = jnp.ones((4, 8), jnp.bfloat16)
    b = jnp.ones((8, 16), jnp.float32)

    def f(a, b):
        def body(c, _):
            return c, jax.checkpoint(lambda x: x @ b.astype(x.dtype))(a)
        _, ys = jax.lax.scan(body, 0.0, None, length=3)
        z = jax.jit(lambda u, v: jnp.einsum("ij,jk->ik", u, v))(a.astype(jnp.float32), b)
        return ys, z

    c = matmul_census(jax.make_jaxpr(f)(a, b))
    assert c["by_dtype"] == {"bfloat16 x bfloat16": 3 * 2 * 4 * 8 * 16, "float32 x float32": 2 * 4 * 8 * 16}
    assert c["count"] == 2 and c["in_while"] == 0


def test_learner_census_remat_and_dtypes():
    from rlvr_jax.bench.census import learner_step_census
    none = learner_step_census("tiny-qwen3", 2, 48, 16, "none", 16)
    full = learner_step_census("tiny-qwen3", 2, 48, 16, "full", 16)
    # Full rematerialisation re-runs every layer's forward matmuls once more; the LM head is not remat'd.
    assert full["total"] > none["total"] > none["model_flops"] * 0.9
    for c in (none, full):
        assert "float32 x float32" not in c["by_dtype"]


def test_scheduler_workload_budgets():
    from rlvr_jax.bench.scheduler_bench import budgets
    for requests, n in ((256, 128), (1024, 128), (128, 64)):
        caps = budgets("long_tail", requests, n)
        assert len(caps) == requests and 1 <= min(caps) and max(caps) == n
        assert max(caps) / (sum(caps) / requests) >= 4  # the issue's long-tail criterion
    assert budgets("uniform", 5, 7) == [7] * 5
    assert budgets("long_tail", 64, 32) == budgets("long_tail", 64, 32)  # seeded


def test_scheduler_bench_static_vs_continuous_tiny():
    from rlvr_jax.bench.scheduler_bench import bench_schedulers, budgets, markdown
    r = bench_schedulers("tiny-qwen3", slots=4, prompt_len=16, new_tokens=16, requests=24,
                         workloads=("long_tail", "uniform"), refill_rows=1)
    for wl in ("long_tail", "uniform"):
        w = r["workloads"][wl]
        assert w["same_tokens"] and w["useful_tokens"] == sum(budgets(wl, 24, 16))
        for name in ("static", "continuous"):
            assert w[name]["useful_tokens"] == w["useful_tokens"] and 0 < w[name]["utilisation"] <= 1
        assert w["continuous_over_static"] == w["continuous"]["tokens_per_s"] / w["static"]["tokens_per_s"]
    # Uniform budgets and no stop ids: both fill every slot step (continuous pays only its refill padding).
    assert r["workloads"]["uniform"]["static"]["utilisation"] == 1.0
    lt = r["workloads"]["long_tail"]
    assert lt["continuous"]["utilisation"] > lt["static"]["utilisation"]
    assert "| long_tail |" in markdown(r) and "vllm" not in r
