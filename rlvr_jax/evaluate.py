r"""pass@k evaluation of a checkpoint (``python -m rlvr_jax.evaluate`` / ``rlvr-eval``).

Example (the NSR paper's Qwen2.5-Math protocol on the three benchmarks)::

    python -m rlvr_jax.evaluate --checkpoint=checkpoints/Qwen2.5-Math-7B --preset_sampling=qwen25math \
        --datasets=math_test,aime2025,amc23 --data_dir=../shared/data --engine=vllm --out=runs/eval/base

    # overlay earlier outputs (tables + one PNG):
    python -m rlvr_jax.evaluate --compare=runs/eval/base,runs/eval/nsr --out=runs/eval/compare

Writes per-sample records, pass@k CSV/Markdown tables, greedy accuracy, answer- and token-level entropy and
a pass@k PNG (see :mod:`rlvr_jax.evaluation.runner`). Re-running with the same ``--out`` resumes.
``--checkpoint`` is a Hugging Face directory (config.json + safetensors: the trainer's ``final_hf`` export, or
any checkpoint written by ``rlvr_jax.models.save_hf``) or a training run's orbax checkpoint directory (its
latest step's policy parameters; ``--tokenizer`` is then required, and ``--engine=vllm`` serves an HF export
of them written under ``--out``).
"""
from __future__ import annotations

import dataclasses
import pathlib

from absl import app, flags, logging

from rlvr_jax.evaluation.config import SAMPLING_PRESETS, EvalConfig, apply_preset

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Hugging Face checkpoint directory (config.json + safetensors), or a "
                    "training run's orbax checkpoint directory (<out_dir> or <out_dir>/checkpoints).")
flags.DEFINE_string("tokenizer", None, "Tokenizer directory (default: --checkpoint).")
flags.DEFINE_list("datasets", ["math500"], "Dataset names (math500, math_test, aime2024, aime2025, amc23, "
                  "math_train, rg:<task>, humaneval, lcb, lcb:START:END) or .jsonl/.parquet paths.")
flags.DEFINE_string("data_dir", None, "Folder with the benchmark files (default: $RLVR_DATA_DIR or ./data).")
flags.DEFINE_integer("n", 16, "Samples per problem.")
flags.DEFINE_list("ks", [], "k values for pass@k (default 1,2,4,...,n).")
flags.DEFINE_float("temperature", 0.6, "Sampling temperature.")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling p (1 disables).")
flags.DEFINE_integer("top_k", -1, "Top-k sampling (<= 0 disables).")
flags.DEFINE_integer("max_new_tokens", 3072, "Generation budget per response.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_enum("preset_sampling", None, sorted(SAMPLING_PRESETS),
                  "Paper sampling defaults: qwen25math (n=256, T=0.6, top-p 0.95) or qwen3 (n=64, T=0.7, "
                  "top-p 0.8, top-k 20). Flags given explicitly override the preset.")
flags.DEFINE_enum("engine", "jax", ["jax", "vllm"], "Rollout engine.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_list("compare", [], "Earlier output directories to overlay (tables + PNG) into --out.")
flags.DEFINE_integer("max_problems", 0, "Evaluate only the first N problems of each dataset (0 = all).")
flags.DEFINE_string("template", "qwen_boxed", "Prompt template: qwen_boxed | qwen3_nothink | chat | plain; for "
                    "code datasets qwen_code | qwen3_nothink_code.")
flags.DEFINE_bool("greedy", True, "Also decode greedily once per problem (greedy accuracy).")
flags.DEFINE_integer("prompt_batch_size", 8, "Problems per generate call.")
flags.DEFINE_integer("grade_workers", None, "Grader processes (default min(4, cpus)).")
flags.DEFINE_float("grade_timeout_s", 10.0, "Hard per-response grading timeout.")
flags.DEFINE_bool("token_entropy", None, "Compute token-level entropy with the JAX model (default: on for "
                  "--engine=jax, off for vllm, where it loads the model a second time).")
flags.DEFINE_string("dtype", "bfloat16", "JAX compute dtype (jax engine and token entropy).")
flags.DEFINE_integer("max_batch_size", 64, "JAX engine: most sequences per compiled generate call.")
flags.DEFINE_bool("save_text", False, "Keep decoded responses in the records.")
flags.DEFINE_integer("rg_size", 200, "Problems per Reasoning Gym dataset.")
flags.DEFINE_integer("rg_seed", 0, "Reasoning Gym generator seed.")
flags.DEFINE_bool("progress", True, "Show a progress bar with ETA.")

_SAMPLING_FLAGS = ("n", "temperature", "top_p", "top_k")


def config_from_flags() -> EvalConfig:
    cfg = EvalConfig()
    if FLAGS.preset_sampling:
        cfg = apply_preset(cfg, FLAGS.preset_sampling)
    overrides = {}
    for name in _SAMPLING_FLAGS:
        if not FLAGS.preset_sampling or FLAGS[name].present:
            overrides[name] = FLAGS[name].value
    overrides.update(
        ks=tuple(int(k) for k in FLAGS.ks), max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed,
        template=FLAGS.template, greedy=FLAGS.greedy, max_problems=FLAGS.max_problems,
        prompt_batch_size=FLAGS.prompt_batch_size, grade_timeout_s=FLAGS.grade_timeout_s,
        grade_workers=FLAGS.grade_workers, save_text=FLAGS.save_text,
        policy=str(pathlib.Path(FLAGS.checkpoint).resolve()) if FLAGS.checkpoint else "", engine=FLAGS.engine)
    return dataclasses.replace(cfg, **overrides)


def load_policy(checkpoint: str, dtype: str):
    """``(model, model_config)`` from a Hugging Face directory, or from a training run's orbax checkpoints
    (``<out_dir>`` or ``<out_dir>/checkpoints``: the latest step's policy parameters)."""
    path = pathlib.Path(checkpoint)
    if (path / "config.json").exists():
        from rlvr_jax.models import load_hf

        return load_hf(path, dtype=dtype)
    if path.is_dir():
        from rlvr_jax.checkpointing import load_policy_checkpoint

        model, cfg, step = load_policy_checkpoint(str(path), dtype=dtype)
        print(f"[evaluate] policy from orbax checkpoint step {step} in {path}", flush=True)
        return model, cfg
    raise ValueError(f"--checkpoint={checkpoint!r} is neither a Hugging Face directory (config.json) nor a "
                     f"training run's orbax checkpoint directory")


def build_engine(kind: str, checkpoint: str, tokenizer, cfg: EvalConfig, model=None):
    from rlvr_jax.data.templates import stop_token_ids
    from rlvr_jax.rollout import make_engine

    if kind == "jax":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return make_engine("jax", model=model, pad_id=int(pad), eos_token_ids=stop_token_ids(tokenizer),
                           max_batch_size=FLAGS.max_batch_size, max_new_tokens_limit=cfg.max_new_tokens)
    return make_engine("vllm", model_dir=checkpoint)


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    if FLAGS.compare:
        from rlvr_jax.evaluation.runner import compare

        compare(FLAGS.compare, FLAGS.out)
        logging.info("comparison written to %s", FLAGS.out)
        if not FLAGS.checkpoint:
            return
    if not FLAGS.checkpoint:
        raise app.UsageError("--checkpoint is required (or --compare alone)")
    from transformers import AutoTokenizer

    from rlvr_jax.data import load_dataset
    from rlvr_jax.evaluation.runner import evaluate, make_model_token_entropy_fn

    cfg = config_from_flags()
    tokenizer = AutoTokenizer.from_pretrained(FLAGS.tokenizer or FLAGS.checkpoint)
    loaded = [load_dataset(name, FLAGS.data_dir, rg_size=FLAGS.rg_size, rg_seed=FLAGS.rg_seed)
              for name in FLAGS.datasets]
    datasets = {ds.name: ds for ds in loaded}  # registry names, rg:<task>, or a data file's stem
    from rlvr_jax.data.code import check_code_template

    try:
        check_code_template(FLAGS.datasets, cfg.template)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if len(datasets) != len(loaded):
        raise app.UsageError(f"--datasets has repeated names: {[ds.name for ds in loaded]}")
    want_entropy = FLAGS.token_entropy if FLAGS.token_entropy is not None else FLAGS.engine == "jax"
    is_hf = (pathlib.Path(FLAGS.checkpoint) / "config.json").exists()
    model = None
    if FLAGS.engine == "jax" or want_entropy or not is_hf:
        model = load_policy(FLAGS.checkpoint, FLAGS.dtype)[0]
    serve_dir = FLAGS.checkpoint
    if FLAGS.engine == "vllm" and not is_hf:  # vLLM reads HF directories: export the restored policy once
        from rlvr_jax.models import save_hf

        serve_dir = str(pathlib.Path(FLAGS.out) / "policy_hf")
        save_hf(model, serve_dir, source_dir=FLAGS.tokenizer)
    entropy_fn = None
    if want_entropy:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        entropy_fn = make_model_token_entropy_fn(model, pad_id=int(pad))
    with build_engine(FLAGS.engine, serve_dir, tokenizer, cfg, model) as engine:
        summaries = evaluate(engine, tokenizer, datasets, cfg, FLAGS.out, entropy_fn, progress=FLAGS.progress,
                             label=pathlib.Path(FLAGS.out).name)
    for name, s in summaries.items():
        logging.info("%s: %s", name, {k: round(v, 4) for k, v in s["pass_at_k"].items()})
    logging.info("results written to %s", FLAGS.out)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
