"""``python -m rlvr_jax.bench``: learner MFU, sampler throughput and export speed, optionally against the
transformers + torch peer (``--peer``) at the same shapes; vLLM weight sync per transport (``--what sync``) and
throughput over 1 and 2 vLLM replicas (``--what replicas``, both in vllm_bench.py). Prints a line before and after
each phase, Markdown tables and a closing summary, and writes JSON (``--out``; the log beside it, ``<out>.log.txt``).

The shape flags' defaults are GPU sizes; ``--size cpu`` gives those not set on the command line CPU sizes
(rlvr_jax/bench/progress.py: the tiny-qwen3 preset, 8x128 learner batches, 8x(32+64) sampler rows)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys

from absl import app, flags

from rlvr_jax.bench.progress import Phase, apply_size, gpu_sized_on_cpu_hint

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "qwen3-1.7b", "model preset (rlvr_jax.models.preset_names())")
flags.DEFINE_list("what", ["learner", "sampler", "export"],
                  "subset of learner,sampler,export,census,sync,replicas (census: matmul FLOPs by operand dtype of one "
                  "learner step, traced from shapes only; sync: vLLM weight sync, filesystem vs shared memory, at "
                  "--sync_presets; replicas: a long-tailed workload through 1 and 2 vLLM replicas of --preset)")
flags.DEFINE_string("out", None, "write the results as JSON here")
flags.DEFINE_integer("batch", 4, "learner: sequences per step")
flags.DEFINE_integer("seq_len", 2048, "learner: tokens per sequence (prompt + response)")
flags.DEFINE_integer("prompt_len", 256, "learner: prompt part of each sequence (no loss on it)")
flags.DEFINE_integer("micro_batch_size", None, "learner: sequences per micro-batch (default: the whole batch)")
flags.DEFINE_integer("steps", 5, "learner: timed steps (median reported)")
flags.DEFINE_integer("warmup", 2, "learner: untimed steps first (compile included)")
flags.DEFINE_enum("remat", "full", ["none", "full", "dots", "dots_no_batch"], "rematerialisation policy")
flags.DEFINE_enum("attention_impl", None, ["xla", "cudnn"], "jax.nn.dot_product_attention implementation")
flags.DEFINE_integer("logprob_chunk_size", 256, "learner: sequence chunk of the vocabulary log-softmax")
flags.DEFINE_enum("mu_dtype", "float32", ["float32", "bfloat16"], "learner: dtype of Adam's first moment")
flags.DEFINE_enum("decode_attention_impl", "xla", ["xla", "pallas"],
                  "sampler: decode attention over the whole cache (xla) or the filled slots only (pallas)")
flags.DEFINE_string("profile", None, "write a jax.profiler trace of the last timed learner step and sampler "
                    "run into this directory (open with TensorBoard / XProf or Perfetto)")
flags.DEFINE_integer("sampler_batch", 256, "sampler: rows")
flags.DEFINE_integer("sampler_prompt_len", 256, "sampler: prompt tokens per row")
flags.DEFINE_integer("new_tokens", 1024, "sampler: generated tokens per row")
flags.DEFINE_integer("sampler_repeats", 2, "sampler: timed runs (median reported)")
flags.DEFINE_list("sampler_workloads", [], "sampler: also compare the static and continuous schedulers on these "
                  "request workloads (long_tail, uniform), --sampler_batch slots, --sampler_requests requests")
flags.DEFINE_integer("sampler_requests", None, "sampler workloads: requests (default 4 x --sampler_batch)")
flags.DEFINE_integer("decode_steps", 4096, "sampler workloads: continuous: most decode steps per compiled call")
flags.DEFINE_integer("refill_rows", None, "sampler workloads: continuous refill rows (default slots / 8)")
flags.DEFINE_boolean("sampler_fixed", True, "sampler: run the fixed-shape (every row --new_tokens) measurement")
flags.DEFINE_boolean("vllm", False, "sampler workloads: also serve the same model and requests with vLLM")
flags.DEFINE_boolean("peer", False, "also run transformers + torch at the same shapes")
flags.DEFINE_list("sync_presets", ["mid-qwen3", "qwen3-0.6b"], "sync: model shapes (one vLLM server at a time)")
flags.DEFINE_string("sync_dtype", "bfloat16", "sync: dtype of the weights and the server")
flags.DEFINE_integer("sync_repeats", 3, "sync: timed syncs per transport (after 2 untimed ones), interleaved")
flags.DEFINE_string("sync_root", None, "sync: directory of the filesystem transport's exports (default: /tmp)")
flags.DEFINE_integer("replicas_requests", 64, "replicas: long-tailed requests")
flags.DEFINE_integer("replicas_new_tokens", 128, "replicas: most new tokens per request")
flags.DEFINE_integer("peer_sampler_batch", None, "peer sampler rows (default: --sampler_batch)")
flags.DEFINE_enum("size", "gpu", ["gpu", "cpu"], "gpu: the shape flags' defaults; cpu: CPU sizes for the shape "
                  "flags not given (rlvr_jax/bench/progress.py CPU_SIZES)")


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _ratio(a, b):
    return None if (a is None or not b) else a / b


def markdown(results: dict) -> str:
    rows = ["| what | shape | rlvr_jax | peer | rlvr_jax / peer |", "|---|---|---|---|---|"]
    if "learner" in results:
        r, p = results["learner"], results.get("peer_learner")
        shape = f"{r['batch']}x{r['seq_len']}"
        rows.append(f"| learner tokens/s | {shape} | {_fmt(r['tokens_per_s'])} | {_fmt(p and p['tokens_per_s'])} | "
                    f"{_fmt(_ratio(r['tokens_per_s'], p and p['tokens_per_s']))} |")
        rows.append(f"| learner step s | {shape} | {_fmt(r['step_time_s'])} | {_fmt(p and p['step_time_s'])} | |")
        pm = p and p.get("tokens_per_s") and r["mfu"] and r["mfu"] * p["tokens_per_s"] / r["tokens_per_s"]
        rows.append(f"| learner MFU | {shape} | {_fmt(r['mfu'])} | {_fmt(pm)} | |")
        mem = r.get("peak_memory_bytes")
        pmem = p and p.get("peak_memory_bytes")
        rows.append(f"| learner peak GiB | {shape} | {_fmt(mem and mem / 2**30)} | {_fmt(pmem and pmem / 2**30)} | |")
    if "sampler" in results:
        r, p = results["sampler"], results.get("peer_sampler")
        shape = f"{r['batch']}x({r['prompt_len']}+{r['new_tokens']})"
        rows.append(f"| sampler tokens/s | {shape} | {_fmt(r['tokens_per_s'])} | {_fmt(p and p['tokens_per_s'])} | "
                    f"{_fmt(_ratio(r['tokens_per_s'], p and p['tokens_per_s']))} |")
        rows.append(f"| sampler roofline fraction | {shape} | {_fmt(r['roofline_fraction'])} | | |")
    if "census" in results:
        r = results["census"]
        shape = f"{r['batch']}x{r['seq_len']}"
        rows.append(f"| learner matmul TFLOP traced (remat {r['remat']}) | {shape} | {r['total'] / 1e12:.4g} | | |")
        rows.append(f"| traced / model FLOPs | {shape} | {_fmt(r['traced_over_model_flops'], '.4g')} | | |")
        rows.append(f"| matmul FLOPs with a float32 operand | {shape} | {_fmt(r['float32_operand_share'], '.3g')} | | |")
    if "export" in results:
        r = results["export"]
        rows.append(f"| save_hf s/GB | {r['bytes'] / 1e9:.3g} GB | {_fmt(r['s_per_gb'])} | | |")
    if "sync" in results:
        from rlvr_jax.bench.vllm_bench import sync_markdown
        rows += ["", sync_markdown(results["sync"])]
    if "replicas" in results:
        from rlvr_jax.bench.vllm_bench import replicas_markdown
        rows += ["", replicas_markdown(results["replicas"])]
    if "schedulers" in results:
        from rlvr_jax.bench.scheduler_bench import markdown as scheduler_markdown
        rows += ["", scheduler_markdown(results["schedulers"])]
    return "\n".join(rows)


def main(argv):
    del argv
    import jax
    from rlvr_jax.bench import jax_bench, peer
    from rlvr_jax.cli.outputs import bench_summary

    what = set(FLAGS.what)
    unknown = what - {"learner", "sampler", "export", "census", "sync", "replicas"}
    if unknown:
        raise app.UsageError(f"--what has unknown entries {sorted(unknown)}")
    sized = apply_size(FLAGS, FLAGS.size)
    if sized:
        print(f"[bench] --size cpu: {', '.join(f'{k}={v}' for k, v in sized.items())}", flush=True)
    results = {"python": platform.python_version(), "preset": FLAGS.preset, "argv": sys.argv,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    if FLAGS.peer:
        # The peer runs first, in a spawned child process, before this process initialises a JAX backend:
        # each framework then has the whole device memory to itself.
        ph = Phase("peer", f"transformers + torch at the same shapes ({FLAGS.preset}), in a child process")
        results.update(peer.run_isolated(FLAGS.preset, what, batch=FLAGS.batch, seq_len=FLAGS.seq_len,
                                         steps=FLAGS.steps, warmup=FLAGS.warmup,
                                         sampler_batch=FLAGS.peer_sampler_batch or FLAGS.sampler_batch,
                                         prompt_len=FLAGS.sampler_prompt_len, new_tokens=FLAGS.new_tokens))
        ph.done({k: v for k, v in results.items() if k.startswith("peer")})
    results.update({"device": jax_bench.device_kind(), "jax": jax.__version__})
    hint = gpu_sized_on_cpu_hint(FLAGS, jax.devices()[0].platform, FLAGS.size)
    if hint:
        print(hint, flush=True)
    if "learner" in what:
        ph = Phase("learner", f"{FLAGS.preset} {FLAGS.batch}x{FLAGS.seq_len}, {FLAGS.warmup} warm-up step(s) "
                   f"(the first compiles) + {FLAGS.steps} timed")
        results["learner"] = jax_bench.bench_learner(
            FLAGS.preset, FLAGS.batch, FLAGS.seq_len, FLAGS.prompt_len, FLAGS.steps, FLAGS.warmup, FLAGS.remat,
            FLAGS.attention_impl, FLAGS.micro_batch_size, FLAGS.logprob_chunk_size, mu_dtype=FLAGS.mu_dtype,
            profile_dir=FLAGS.profile)
        ph.done(results["learner"], f"{_fmt(results['learner']['tokens_per_s'])} tokens/s, "
                f"step {_fmt(results['learner']['step_time_s'])} s")
    if "census" in what:
        from rlvr_jax.bench.census import learner_step_census
        ph = Phase("census", f"matmuls of one {FLAGS.batch}x{FLAGS.seq_len} learner step, traced from shapes")
        results["census"] = learner_step_census(FLAGS.preset, FLAGS.batch, FLAGS.seq_len, FLAGS.prompt_len,
                                                FLAGS.remat, FLAGS.logprob_chunk_size)
        ph.done(results["census"], f"{results['census']['total'] / 1e12:.4g} TFLOP traced")
    if "sampler" in what and FLAGS.sampler_workloads:
        from rlvr_jax.bench.scheduler_bench import bench_schedulers
        ph = Phase("schedulers", f"static vs continuous on {','.join(FLAGS.sampler_workloads)}, "
                   f"{FLAGS.sampler_batch} slots" + (", and vLLM (a server start takes 30-60 s)" if FLAGS.vllm else ""))
        results["schedulers"] = bench_schedulers(
            FLAGS.preset, FLAGS.sampler_batch, FLAGS.sampler_prompt_len, FLAGS.new_tokens,
            FLAGS.sampler_requests or 4 * FLAGS.sampler_batch, FLAGS.sampler_workloads, FLAGS.sampler_repeats,
            FLAGS.decode_steps, FLAGS.refill_rows, vllm=FLAGS.vllm)
        ph.done(results["schedulers"])
    if "sampler" in what and FLAGS.sampler_fixed:
        ph = Phase("sampler", f"{FLAGS.preset} {FLAGS.sampler_batch}x({FLAGS.sampler_prompt_len}+{FLAGS.new_tokens}) "
                   f"tokens, 1 compile + {FLAGS.sampler_repeats} timed run(s)")
        bw = jax_bench.measure_bandwidth() if jax.devices()[0].platform != "cpu" else None
        results["sampler"] = jax_bench.bench_sampler(
            FLAGS.preset, FLAGS.sampler_batch, FLAGS.sampler_prompt_len, FLAGS.new_tokens, FLAGS.sampler_repeats,
            FLAGS.attention_impl, bw, decode_attention_impl=FLAGS.decode_attention_impl, profile_dir=FLAGS.profile)
        ph.done(results["sampler"], f"{_fmt(results['sampler']['tokens_per_s'])} tokens/s")
    if "export" in what:
        ph = Phase("export", f"save_hf of {FLAGS.preset}")
        results["export"] = jax_bench.bench_export(FLAGS.preset)
        ph.done(results["export"], f"{_fmt(results['export']['s_per_gb'])} s/GB")
    if "sync" in what:
        from rlvr_jax.bench.vllm_bench import bench_sync
        ph = Phase("sync", f"vLLM weight sync, filesystem vs shared memory, at {','.join(FLAGS.sync_presets)} "
                   "(a server start each: 30-60 s)")
        results["sync"] = bench_sync(FLAGS.sync_presets, FLAGS.sync_dtype, FLAGS.sync_repeats,
                                     sync_root=FLAGS.sync_root)
        ph.done(results["sync"])
    if "replicas" in what:
        from rlvr_jax.bench.vllm_bench import bench_replicas
        ph = Phase("replicas", f"{FLAGS.replicas_requests} long-tailed requests through 1 and 2 vLLM replicas of "
                   f"{FLAGS.preset} (server starts: 30-60 s each)")
        results["replicas"] = bench_replicas(FLAGS.preset, requests=FLAGS.replicas_requests,
                                             new_tokens=FLAGS.replicas_new_tokens)
        ph.done(results["replicas"])
    table = markdown(results)
    print(f"\nrlvr_jax.bench on {results['device']} (jax {results['jax']}), preset {FLAGS.preset}\n")
    print(table + "\n")
    if FLAGS.out:
        results["table"] = table
        with open(FLAGS.out, "w") as f:
            json.dump(results, f, indent=2)
    return bench_summary(results, FLAGS.out)


def _log_path() -> str | None:
    """``<--out without .json>.log.txt`` beside the results (no log file without ``--out``)."""
    return os.path.splitext(FLAGS.out)[0] + ".log.txt" if FLAGS.out else None


def run():
    """``python -m rlvr_jax.bench`` through :func:`rlvr_jax.cli.run_cli` (quiet logs, one-line errors, summary)."""
    from rlvr_jax.cli import run_cli
    run_cli(main, usage=__doc__, log_path=_log_path)


if __name__ == "__main__":
    run()
