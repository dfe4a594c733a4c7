"""The evaluator's command-line config (``python -m rlvr_jax.evaluate --config=configs/eval.py:PRESET``).

:func:`get_config` is the ml_collections config of ``rlvr_jax.evaluate``; ``configs/eval.py`` re-exports it and
it is also the default of ``--config``, so ``python -m rlvr_jax.evaluate --config.checkpoint=... --config.out=...``
needs no file. The argument picks a sampling preset of :data:`SAMPLING_PRESETS` (``qwen25math``, ``qwen3``; none
by default); overrides given on the command line (``--config.n=8``) are applied after it, so they win.
List-valued fields (``datasets``, ``ks``, ``compare``) are comma-separated strings.
:func:`validate_eval_config` checks the values before any model is loaded (a :class:`ConfigError` naming the
field) and :func:`to_eval_config` turns the sampling / grading fields into the runner's :class:`EvalConfig`.
"""
from __future__ import annotations

import json
import pathlib
import re

import ml_collections

from rlvr_jax.config.validate import ConfigError
from rlvr_jax.evaluation.config import SAMPLING_PRESETS, EvalConfig, training_template
from rlvr_jax.models.config import DTYPES
from rlvr_jax.rollout import ENGINES


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """The evaluator's settings; ``arg`` is a sampling preset name (or empty for the defaults below)."""
    c = ml_collections.ConfigDict(dict(
        checkpoint="",          # HF directory (config.json + safetensors) or a training run's orbax checkpoints
        tokenizer="",           # tokenizer directory (default: checkpoint)
        out="",                 # output directory (required); re-running with the same out resumes
        compare="",             # comma-separated earlier output dirs to overlay (tables + PNG) into out
        datasets="math500",     # comma-separated: math500, math_test, aime2024, aime2025, amc23, math_train,
                                # rg:<task>, humaneval, lcb, lcb:START:END, or .jsonl/.parquet paths
        data_dir="",            # folder with the benchmark files (default: $RLVR_DATA_DIR or ../shared/data)
        max_problems=0,         # evaluate only the first N problems of each dataset (0 = all)
        # qwen_boxed | qwen3_nothink | chat | plain; code: qwen_code | qwen3_nothink_code; auto: the training
        # run's (data.template of the config.json beside a run's final_hf / checkpoints), else qwen_boxed.
        # A preset sets its model's training template (configs/<algo>_<model>.py).
        template="auto",
        rg_size=200,            # problems per Reasoning Gym dataset
        rg_seed=0,              # Reasoning Gym generator seed
        n=16,                   # samples per problem
        ks="",                  # comma-separated k values for pass@k (default 1,2,4,...,n)
        temperature=0.6,
        top_p=0.95,             # 1 disables
        top_k=-1,               # <= 0 disables
        max_new_tokens=3072,
        seed=0,
        greedy=True,            # also decode greedily once per problem (greedy accuracy)
        engine="jax",           # jax (in-process sampler) | vllm (a vLLM server on the checkpoint)
        dtype="bfloat16",       # JAX compute dtype (jax engine and token entropy)
        max_batch_size=64,      # jax engine: most sequences per compiled generate call
        prompt_batch_size=8,    # problems per generate call
        grade_workers=0,        # grader processes (0 = min(4, cpus))
        grade_timeout_s=10.0,   # hard per-response grading timeout
        token_entropy="auto",   # auto (on for the jax engine, off for vllm: it loads the model twice) | on | off
        save_text=False,        # keep decoded responses in the records
        progress=True,          # progress bar with ETA
    ))
    if arg:
        if arg not in SAMPLING_PRESETS:
            raise ConfigError("config", f"unknown sampling preset {arg!r}; expected one of {sorted(SAMPLING_PRESETS)}")
        c.update(SAMPLING_PRESETS[arg])
        c.template = training_template(arg)
    return c


def run_config_of(checkpoint: str) -> tuple[pathlib.Path, dict] | None:
    """``(path, config)`` of the training run a checkpoint belongs to: the trainer's ``config.json`` in the
    checkpoint directory itself (a run's ``out_dir``) or in its parent (``<out_dir>/final_hf`` or
    ``<out_dir>/checkpoints``); None when there is none (a Hugging Face config.json is not a run's)."""
    if not checkpoint:
        return None
    p = pathlib.Path(checkpoint).resolve()
    for d in (p, p.parent):
        f = d / "config.json"
        try:
            cfg = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict) and isinstance(cfg.get("data"), dict) and "algo" in cfg:
            return f, cfg
    return None


def resolve_template(c: ml_collections.ConfigDict) -> str:
    """Sets ``c.template`` when it is ``auto``: the training run's template (its config.json), else qwen_boxed.
    An explicit template that differs from the run's is kept, with a warning line. Returns the template."""
    found = run_config_of(c.checkpoint)
    trained = found[1]["data"].get("template") if found else None
    if c.template == "auto":
        c.template = trained or "qwen_boxed"
        if trained:
            print(f"[evaluate] template {trained!r}: the training run's ({found[0]})", flush=True)
    elif trained and trained != c.template and not c.template.endswith("_code"):
        print(f"[evaluate] WARNING: template {c.template!r} differs from the {trained!r} the policy was trained "
              f"with ({found[0]}); --config.template=auto uses the training run's", flush=True)
    return c.template


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(field, message)


def validate_eval_config(c: ml_collections.ConfigDict) -> None:
    """Raises :class:`ConfigError` naming the first bad field of the evaluator config ``c`` (after resolving
    ``template=auto``: :func:`resolve_template`)."""
    if c.template == "auto":
        resolve_template(c)
    _check(bool(c.out), "out", "is required (the output directory)")
    _check(bool(c.checkpoint) or bool(split_list(c.compare)), "checkpoint",
           "is required (a Hugging Face or orbax checkpoint directory), unless compare is given alone")
    if c.checkpoint:
        _check(pathlib.Path(c.checkpoint).is_dir(), "checkpoint", f"{c.checkpoint!r} is not a directory")
        _check(bool(split_list(c.datasets)), "datasets", "names no dataset")
    from rlvr_jax.data.templates import TEMPLATES
    _check(c.template in TEMPLATES, "template", f"{c.template!r} not in {sorted(TEMPLATES)} (or auto)")
    _check(c.engine in ENGINES, "engine", f"{c.engine!r} not in {ENGINES}")
    _check(c.dtype in DTYPES, "dtype", f"{c.dtype!r} not in {DTYPES}")
    _check(c.token_entropy in ("auto", "on", "off"), "token_entropy", f"{c.token_entropy!r} not in auto | on | off")
    _check(int(c.max_batch_size) >= 1, "max_batch_size", f"must be >= 1, got {c.max_batch_size}")
    _check(int(c.grade_workers) >= 0, "grade_workers", f"must be >= 0 (0 = default), got {c.grade_workers}")
    _check(float(c.grade_timeout_s) > 0, "grade_timeout_s", f"must be > 0, got {c.grade_timeout_s}")
    _check(int(c.max_problems) >= 0, "max_problems", f"must be >= 0 (0 = all), got {c.max_problems}")
    _check(int(c.rg_size) >= 1, "rg_size", f"must be >= 1, got {c.rg_size}")
    try:
        [int(k) for k in split_list(c.ks)]
    except ValueError:
        raise ConfigError("ks", f"{c.ks!r} is not a comma-separated list of integers") from None
    try:
        to_eval_config(c)
    except ValueError as e:  # EvalConfig's / SamplingParams' own checks name "Class.field"
        m = re.match(r"(?:EvalConfig|SamplingParams)\.(\w+)", str(e))
        raise ConfigError(m.group(1) if m and m.group(1) in c else "config", str(e)) from None


def to_eval_config(c: ml_collections.ConfigDict) -> EvalConfig:
    """The runner's :class:`EvalConfig` (samples, grading, resume fingerprint) from the CLI config ``c``."""
    return EvalConfig(
        n=int(c.n), ks=tuple(int(k) for k in split_list(c.ks)), temperature=float(c.temperature),
        top_p=float(c.top_p), top_k=int(c.top_k), max_new_tokens=int(c.max_new_tokens), seed=int(c.seed),
        template=c.template, greedy=bool(c.greedy), max_problems=int(c.max_problems),
        prompt_batch_size=int(c.prompt_batch_size), grade_timeout_s=float(c.grade_timeout_s),
        grade_workers=int(c.grade_workers) or None, save_text=bool(c.save_text),
        policy=str(pathlib.Path(c.checkpoint).resolve()) if c.checkpoint else "", engine=c.engine)
