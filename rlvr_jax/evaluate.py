r"""pass@k evaluation of a checkpoint (``python -m rlvr_jax.evaluate`` / ``rlvr-eval``).

Settings are an ml_collections config (:mod:`rlvr_jax.evaluation.cli_config`, also ``configs/eval.py``), every
field overridable as ``--config.FIELD=value``; ``--config=configs/eval.py:PRESET`` starts from a sampling preset
(``qwen25math``, ``qwen3``). Example (the NSR paper's Qwen2.5-Math protocol on the three benchmarks)::

    python -m rlvr_jax.evaluate --config=configs/eval.py:qwen25math \
        --config.checkpoint=checkpoints/Qwen2.5-Math-7B --config.datasets=math_test,aime2025,amc23 \
        --config.data_dir=../shared/data --config.engine=vllm --config.out=runs/eval/base

    # overlay earlier outputs (tables + one PNG):
    python -m rlvr_jax.evaluate --config.compare=runs/eval/base,runs/eval/nsr --config.out=runs/eval/compare

Writes per-sample records, pass@k CSV/Markdown tables, greedy accuracy, answer- and token-level entropy and
a pass@k PNG (see :mod:`rlvr_jax.evaluation.runner`). Re-running with the same ``out`` resumes.
``checkpoint`` is a Hugging Face directory (config.json + safetensors: the trainer's ``final_hf`` export, or
any checkpoint written by ``rlvr_jax.models.save_hf``) or a training run's orbax checkpoint directory (its
latest step's policy parameters; ``tokenizer`` is then required, and ``engine=vllm`` serves an HF export
of them written under ``out``).
"""
from __future__ import annotations

import pathlib

import ml_collections

from rlvr_jax.evaluation import cli_config
from rlvr_jax.evaluation.cli_config import split_list, to_eval_config, validate_eval_config

DEFAULT_CONFIG = cli_config.__file__  # --config's default: get_config() without a preset


def load_policy(checkpoint: str, dtype: str):
    """``(model, model_config)`` from a Hugging Face directory, or from a training run's orbax checkpoints
    (``<out_dir>`` or ``<out_dir>/checkpoints``: the latest step's policy parameters)."""
    path = pathlib.Path(checkpoint)
    if (path / "config.json").exists():
        from rlvr_jax.models import load_hf

        return load_hf(path, dtype=dtype)
    if path.is_dir():
        from rlvr_jax.trainer.checkpointing import load_policy_checkpoint

        model, cfg, step = load_policy_checkpoint(str(path), dtype=dtype)
        print(f"[evaluate] policy from orbax checkpoint step {step} in {path}", flush=True)
        return model, cfg
    raise FileNotFoundError(f"checkpoint={checkpoint!r} is neither a Hugging Face directory (config.json) nor a "
                            f"training run's orbax checkpoint directory")


def build_engine(c: ml_collections.ConfigDict, serve_dir: str, tokenizer, model=None):
    """The rollout engine named by ``c.engine``: the JAX sampler on ``model`` or a vLLM server on ``serve_dir``
    (its log in ``<out>/vllm_server.log``)."""
    from rlvr_jax.data.templates import stop_token_ids
    from rlvr_jax.rollout import make_engine

    if c.engine == "jax":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return make_engine("jax", model=model, pad_id=int(pad), eos_token_ids=stop_token_ids(tokenizer),
                           max_batch_size=int(c.max_batch_size), max_new_tokens_limit=int(c.max_new_tokens))
    return make_engine("vllm", model_dir=serve_dir, log_path=str(pathlib.Path(c.out) / "vllm_server.log"))


def _load_tokenizer(path: str):
    """The Hugging Face tokenizer in ``path``; a directory without one is the user's error (one line)."""
    from transformers import AutoTokenizer

    from rlvr_jax.cli.errors import UserError
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load a tokenizer from {path!r} (set --config.tokenizer): {first}") from e


def _load_datasets(c: ml_collections.ConfigDict, template: str) -> dict:
    from rlvr_jax.config.validate import ConfigError
    from rlvr_jax.data import load_dataset
    from rlvr_jax.data.code import check_code_template

    names = split_list(c.datasets)
    try:
        check_code_template(names, template)
    except ValueError as e:
        raise ConfigError("template", str(e)) from None
    loaded = [load_dataset(name, c.data_dir or None, rg_size=int(c.rg_size), rg_seed=int(c.rg_seed))
              for name in names]
    datasets = {ds.name: ds for ds in loaded}  # registry names, rg:<task>, or a data file's stem
    if len(datasets) != len(loaded):
        raise ConfigError("datasets", f"has repeated names: {[ds.name for ds in loaded]}")
    return datasets


def run(c: ml_collections.ConfigDict) -> dict:
    """Evaluates (and/or compares) as ``c`` says; returns ``{dataset: summary}`` (empty for a comparison only)."""
    validate_eval_config(c)
    if split_list(c.compare):
        from rlvr_jax.evaluation.runner import compare

        compare(split_list(c.compare), c.out)
        if not c.checkpoint:
            return {}
    from rlvr_jax.config.validate import ConfigError
    from rlvr_jax.evaluation.runner import evaluate, make_model_token_entropy_fn

    cfg = to_eval_config(c)
    is_hf = (pathlib.Path(c.checkpoint) / "config.json").exists()
    if not is_hf and not c.tokenizer:
        raise ConfigError("tokenizer", f"is required: checkpoint {c.checkpoint!r} has no config.json, so it is read "
                                       "as a training run's orbax checkpoints, which hold no tokenizer")
    tokenizer = _load_tokenizer(c.tokenizer or c.checkpoint)
    datasets = _load_datasets(c, cfg.template)
    want_entropy = c.engine == "jax" if c.token_entropy == "auto" else c.token_entropy == "on"
    model = None
    if c.engine == "jax" or want_entropy or not is_hf:
        model = load_policy(c.checkpoint, c.dtype)[0]
    serve_dir = c.checkpoint
    if c.engine == "vllm" and not is_hf:  # vLLM reads HF directories: export the restored policy once
        from rlvr_jax.models import save_hf

        serve_dir = str(pathlib.Path(c.out) / "policy_hf")
        save_hf(model, serve_dir, source_dir=c.tokenizer or None)
    entropy_fn = None
    if want_entropy:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        entropy_fn = make_model_token_entropy_fn(model, pad_id=int(pad))
    with build_engine(c, serve_dir, tokenizer, model) as engine:
        summaries = evaluate(engine, tokenizer, datasets, cfg, c.out, entropy_fn, progress=bool(c.progress),
                             label=pathlib.Path(c.out).name)
    return summaries


def main(argv):
    """The CLI's job: evaluates, returns the closing summary (printed by ``run_cli``)."""
    from absl import app, flags

    from rlvr_jax.cli.outputs import eval_summary

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; settings are --config.FIELD=value")
    c = flags.FLAGS.config
    validate_eval_config(c)
    print(f"[evaluate] {c.checkpoint or 'comparison'} on {c.datasets if c.checkpoint else c.compare}, "
          f"n={int(c.n)}, {c.engine} engine -> {c.out}", flush=True)
    return eval_summary(c.out, run(c), bool(split_list(c.compare)))


def cli() -> None:
    """The ``rlvr-eval`` console script and ``python -m rlvr_jax.evaluate`` (``--help`` lists the fields)."""
    from absl import flags
    from ml_collections import config_flags

    from rlvr_jax.cli import HelpConfig, run_cli
    from rlvr_jax.config.overrides import exit_on_unknown_overrides

    exit_on_unknown_overrides(default=DEFAULT_CONFIG)  # a misspelled --config.x names the valid fields
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "evaluator config file (configs/eval.py[:preset]); "
                                        "default: rlvr_jax/evaluation/cli_config.py", lock_config=True)
    run_cli(main, usage=__doc__, log_path=lambda: _log_path(flags.FLAGS.config.out),
            help_config=HelpConfig(DEFAULT_CONFIG, comments_from=(cli_config.get_config,)))


def _log_path(out: str) -> str | None:
    return str(pathlib.Path(out) / "log.txt") if out else None


if __name__ == "__main__":
    cli()
