"""Config validation, run before any compute: one :class:`ConfigError` naming the first bad field."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import ml_collections

from rlvr_jax.models.config import ATTENTION_IMPLS, DECODE_ATTENTION_IMPLS, DTYPES
from rlvr_jax.objectives.types import AGG_MODES as LOSS_AGG_MODES
from rlvr_jax.objectives.types import FORMS, KL_ESTIMATORS
from rlvr_jax.rewards.result import REWARD_FORMATS
from rlvr_jax.rollout import ENGINES

# The vocabularies below have no other home: the config is where they are chosen (update_plan.py reads
# algo.adv_estimator, learner.py optim.schedule).
ADV_ESTIMATORS = ("correctness", "raw", "grpo", "gae")
SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A bad config value; ``field`` is its dotted path (e.g. ``train.mini_batch_size``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field {field!r}: {message}")


@dataclasses.dataclass(frozen=True)
class Batching:
    """Derived batch layout of one RL step (all sizes global)."""

    prompt_batch_size: int   # prompts per RL step
    n: int                   # rollouts per prompt
    num_mini_batches: int    # optimizer updates per epoch
    mini_batch_prompts: int  # prompts per update
    micro_batch_size: int    # sequences per accumulation micro-batch
    ppo_epochs: int

    @property
    def updates_per_step(self) -> int:
        return self.ppo_epochs * self.num_mini_batches


def resolve_batching(cfg: ml_collections.ConfigDict) -> Batching:
    """``num_mini_batches`` (if > 0) wins over ``mini_batch_size``; both must divide the prompt batch."""
    t = cfg.train
    pbs = int(t.prompt_batch_size)
    if pbs < 1:
        raise ConfigError("train.prompt_batch_size", f"must be >= 1, got {pbs}")
    if int(t.num_mini_batches) > 0:
        nmb = int(t.num_mini_batches)
        if pbs % nmb:
            raise ConfigError("train.num_mini_batches",
                              f"{nmb} does not divide train.prompt_batch_size={pbs}")
        mbs = pbs // nmb
    else:
        mbs = int(t.mini_batch_size)
        if mbs < 1 or pbs % mbs:
            raise ConfigError("train.mini_batch_size",
                              f"{mbs} must be >= 1 and divide train.prompt_batch_size={pbs}")
        nmb = pbs // mbs
    return Batching(pbs, int(cfg.rollout.n), nmb, mbs, int(t.micro_batch_size), int(t.ppo_epochs))


def resolve_mesh_shape(shape, num_devices: int, field: str = "mesh.shape") -> dict[str, int]:
    """:func:`rlvr_jax.sharding.resolve_mesh_shape` (the one resolver), its ``ValueError`` raised as a
    :class:`ConfigError` on ``field``."""
    from rlvr_jax.sharding import resolve_mesh_shape as resolve

    try:
        return resolve(shape, num_devices)
    except ValueError as e:
        raise ConfigError(field, str(e)) from None


def _objective_known(name: str) -> bool:
    from rlvr_jax.objectives import get_objective
    try:
        get_objective(name)
    except (KeyError, ValueError):
        return False
    return True


def _dataset_file_missing(data_dir: str, name: str) -> str | None:
    """Returns a description of the missing local file for dataset ``name``, or None when present."""
    from rlvr_jax.data import REGISTRY
    if name.startswith("rg:"):  # Reasoning Gym: generated procedurally, no file
        return None
    from rlvr_jax.data.code import code_dataset_missing, is_code_dataset
    if is_code_dataset(name):  # lcb, lcb:START:END, humaneval
        return code_dataset_missing(data_dir, name)
    if name.endswith((".jsonl", ".json", ".parquet")):
        return None if os.path.exists(name) else f"data file {name!r} does not exist"
    if name not in REGISTRY:
        return f"unknown dataset {name!r}; expected one of {sorted(REGISTRY)}, 'rg:<task>' or a file path"
    stem = REGISTRY[name]
    for ext in (".jsonl", ".parquet"):
        if os.path.exists(os.path.join(data_dir, stem + ext)):
            return None
    return f"no {stem}.jsonl / {stem}.parquet in data.data_dir={data_dir!r}"


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(field, message)


# ---- algorithm fidelity (issue 12): selection mode, advantages vs reward format, verl's options ----
def _unknown_algorithm(name: str) -> str:
    from rlvr_jax.objectives import list_objectives
    return f"unknown algorithm {name!r}; valid names: {', '.join(list_objectives())}"


def _validate_algorithm_fidelity(cfg: ml_collections.ConfigDict) -> None:
    """Sample selection, advantages that cannot work with the reward format, dual clip and clamps."""
    from rlvr_jax.objectives import SELECTION_MODES
    from rlvr_jax.objectives.selection import selection_rule
    a, d, m = cfg.algo, cfg.data, cfg.model
    _check(a.sample_selection in SELECTION_MODES, "algo.sample_selection",
           f"{a.sample_selection!r} not in {SELECTION_MODES}")
    _check(isinstance(a.whiten_advantages, bool), "algo.whiten_advantages",
           f"must be True or False, got {a.whiten_advantages!r}")
    _check(a.clip_ratio_c == 0 or a.clip_ratio_c > 1, "algo.clip_ratio_c",
           f"dual clip needs c > 1 (or 0 = off), got {a.clip_ratio_c}")
    _check(a.log_ratio_clamp >= 0, "algo.log_ratio_clamp", f"must be >= 0 (0 = off), got {a.log_ratio_clamp}")
    _check(a.kl_value_clamp >= 0, "algo.kl_value_clamp", f"must be >= 0 (0 = off), got {a.kl_value_clamp}")
    _check(cfg.train.off_policy_steps in (0, 1), "train.off_policy_steps",
           f"must be 0 (synchronous) or 1 (one-step off-policy), got {cfg.train.off_policy_steps!r}")
    from rlvr_jax.trainer.rollout_correction import CORRECTIONS
    _check(a.rollout_correction in CORRECTIONS, "algo.rollout_correction",
           f"{a.rollout_correction!r} not in {CORRECTIONS}")
    _check(float(a.rollout_correction_cap) > 1.0, "algo.rollout_correction_cap",
           f"the cap C must be > 1 (weights are truncated at C, sequences kept within [1/C, C]), "
           f"got {a.rollout_correction_cap}")
    # {0,1} rewards used as advantages: the incorrect samples get A = 0, so NSR learns nothing and W-REINFORCE /
    # REINFORCE lose their negative term. "correctness" gives +1 / -1 whatever the reward format.
    if a.adv_estimator == "raw" and d.reward_format == "01":
        _check(selection_rule(a.name) == "positive", "algo.adv_estimator",
               f"'raw' advantages with data.reward_format='01' give the incorrect samples A = 0: {a.name!r} "
               "would lose its negative-sample term; use algo.adv_estimator='correctness' (+1 / -1 from "
               "correctness, whatever the reward format)")
    if m.tokenizer_path.startswith("builtin:"):
        from rlvr_jax.data.byte_tokenizer import BUILTIN_TOKENIZERS
        _check(m.tokenizer_path in BUILTIN_TOKENIZERS, "model.tokenizer_path",
               f"unknown built-in tokenizer {m.tokenizer_path!r}; valid: {', '.join(BUILTIN_TOKENIZERS)}")


def _validate_model(m: ml_collections.ConfigDict) -> None:
    _check(bool(m.hf_path) != bool(m.preset), "model.hf_path",
           f"set exactly one of model.hf_path ({m.hf_path!r}) and model.preset ({m.preset!r})")
    _check(m.dtype in DTYPES, "model.dtype", f"{m.dtype!r} not in {DTYPES}")
    _check(m.param_dtype in DTYPES, "model.param_dtype", f"{m.param_dtype!r} not in {DTYPES}")
    impls = tuple(i for i in ATTENTION_IMPLS if i is not None)  # None is ModelConfig's "use the default"
    _check(m.attention_impl in impls, "model.attention_impl", f"{m.attention_impl!r} not in {impls}")
    _check(m.decode_attention_impl in DECODE_ATTENTION_IMPLS, "model.decode_attention_impl",
           f"{m.decode_attention_impl!r} not in {DECODE_ATTENTION_IMPLS}")
    _check(int(m.logprob_chunk_size) >= 1, "model.logprob_chunk_size", f"must be >= 1, got {m.logprob_chunk_size}")
    _check(bool(m.hf_path) or bool(m.tokenizer_path), "model.tokenizer_path",
           f"model.preset={m.preset!r} has no tokenizer: set model.tokenizer_path to a tokenizer directory")
    if m.preset:
        from rlvr_jax.models import get_preset
        try:
            get_preset(m.preset)
        except (KeyError, ValueError) as e:
            raise ConfigError("model.preset", f"unknown preset {m.preset!r} ({e})") from None


def _validate_remedies(cfg: ml_collections.ConfigDict) -> None:
    """The remedies' fields (docs/objectives.md "Remedies"): unlikeliness reward, zero-success gating, SimKO."""
    a, n = cfg.algo, int(cfg.rollout.n)
    beta, m = float(a.unlikeliness_beta), a.gate_max_correct
    _check(0.0 <= beta <= 1.0, "algo.unlikeliness_beta", f"must be in [0, 1] (0 = off), got {beta}")
    _check(beta == 0 or a.adv_estimator == "grpo", "algo.unlikeliness_beta",
           f"reshapes the rewards before group normalisation, so it needs algo.adv_estimator='grpo' (got "
           f"{a.adv_estimator!r}: the advantages would not see it)")
    _check(isinstance(m, int) and (m == -1 or 0 <= m < n), "algo.gate_max_correct",  # -1: off, whatever n is
           f"must be -1 (off) or an integer in [0, rollout.n={n}) (at rollout.n it would gate nothing), got {m!r}")
    _check(m < 0 or a.sample_selection == "drop", "algo.gate_max_correct",
           f"gated-out prompts must leave the batch: set algo.sample_selection='drop' (got "
           f"{a.sample_selection!r}, which would keep them in the loss's denominator, KL and entropy terms)")
    _check(int(a.simko_top_k) >= 1, "algo.simko_top_k", f"must be >= 1, got {a.simko_top_k}")
    _check(0.0 <= float(a.simko_alpha) <= 1.0, "algo.simko_alpha", f"must be in [0, 1], got {a.simko_alpha}")
    _check(0.0 <= float(a.simko_tau) <= 1.0, "algo.simko_tau", f"must be in [0, 1], got {a.simko_tau}")
    _check(float(a.simko_lambda) >= 0.0, "algo.simko_lambda", f"must be >= 0, got {a.simko_lambda}")
    _check(a.name != "simko" or a.adv_estimator == "grpo", "algo.adv_estimator",
           f"simko splits correct / incorrect responses by the sign of group-relative advantages: needs 'grpo', "
           f"got {a.adv_estimator!r}")
    _check(not a.schedule, "algo.schedule", "a phase of a schedule cannot have a schedule")


def _validate_algorithm(cfg: ml_collections.ConfigDict) -> None:
    a = cfg.algo
    _check(_objective_known(a.name), "algo.name", _unknown_algorithm(a.name))
    _validate_remedies(cfg)
    _check(a.lam >= 0, "algo.lam", f"lambda must be >= 0, got {a.lam}")
    _check(0 <= a.clip_eps_low < 1, "algo.clip_eps_low", f"must be in [0, 1), got {a.clip_eps_low}")
    _check(a.clip_eps_high >= 0, "algo.clip_eps_high", f"must be >= 0, got {a.clip_eps_high}")
    _check(a.kl_coef >= 0, "algo.kl_coef", f"must be >= 0, got {a.kl_coef}")
    _check(a.kl_estimator in KL_ESTIMATORS, "algo.kl_estimator", f"{a.kl_estimator!r} not in {KL_ESTIMATORS}")
    _check(not (a.kl_coef > 0 and not a.use_reference), "algo.use_reference",
           f"algo.kl_coef={a.kl_coef} > 0 needs a reference model (set algo.use_reference=True)")
    _check(a.entropy_coef >= 0, "algo.entropy_coef", f"must be >= 0, got {a.entropy_coef}")
    _check(a.loss_agg_mode in LOSS_AGG_MODES, "algo.loss_agg_mode", f"{a.loss_agg_mode!r} not in {LOSS_AGG_MODES}")
    _check(a.form in FORMS, "algo.form", f"{a.form!r} not in {FORMS}")
    _check(a.adv_estimator in ADV_ESTIMATORS, "algo.adv_estimator",
           f"{a.adv_estimator!r} not in {ADV_ESTIMATORS}")
    _check((a.adv_estimator == "gae") == (a.name == "ppo"), "algo.adv_estimator",
           f"{a.adv_estimator!r} with algo.name={a.name!r}: GAE (critic) is used by, and only by, ppo")
    _validate_algorithm_fidelity(cfg)
    _check(0 <= a.gamma <= 1, "algo.gamma", f"must be in [0, 1], got {a.gamma}")
    _check(0 <= a.gae_lambda <= 1, "algo.gae_lambda", f"must be in [0, 1], got {a.gae_lambda}")
    _check(a.value_clip >= 0, "algo.value_clip", f"must be >= 0 (0 = unclipped value loss), got {a.value_clip}")


def _validate_rollout_and_data(cfg: ml_collections.ConfigDict) -> None:
    r, a, d = cfg.rollout, cfg.algo, cfg.data
    _check(r.engine in ENGINES, "rollout.engine", f"{r.engine!r} not in {ENGINES}")
    _check(r.n >= 1, "rollout.n", f"must be >= 1, got {r.n}")
    _check(r.temperature > 0, "rollout.temperature", f"training samples need temperature > 0, got {r.temperature}")
    _check(0 < r.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
    _check(r.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {r.max_new_tokens}")
    if r.get("jax") is not None:  # the in-process sampler's scheduler (rlvr_jax.rollout.continuous)
        from rlvr_jax.rollout.jax_sampler import SCHEDULERS
        _check(r.jax.scheduler in SCHEDULERS, "rollout.jax.scheduler", f"{r.jax.scheduler!r} not in {SCHEDULERS}")
        _check(int(r.jax.decode_steps) >= 1, "rollout.jax.decode_steps", f"must be >= 1, got {r.jax.decode_steps}")
        _check(int(r.jax.refill_rows) >= 0, "rollout.jax.refill_rows",
               f"must be >= 0 (0 = an eighth of the slots), got {r.jax.refill_rows}")
    _check(not (a.adv_estimator == "grpo" and r.n < 2), "rollout.n",
           f"group-normalised advantages need rollout.n >= 2, got {r.n}")
    # data
    _check(d.max_prompt_len >= 1, "data.max_prompt_len", f"must be >= 1, got {d.max_prompt_len}")
    _check(d.reward_format in REWARD_FORMATS, "data.reward_format",
           f"{d.reward_format!r} not in {tuple(REWARD_FORMATS)}")
    from rlvr_jax.data.code import CODE_TEMPLATES, is_code_dataset
    _check(not is_code_dataset(d.train) or d.template in CODE_TEMPLATES, "data.template",
           f"{d.template!r} asks for a boxed answer; code dataset {d.train!r} needs one of {CODE_TEMPLATES}")


def _validate_optim_train_logging(cfg: ml_collections.ConfigDict) -> Batching:
    o, t, ck, lg = cfg.optim, cfg.train, cfg.checkpoint, cfg.logging
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(0 <= o.b1 < 1 and 0 <= o.b2 < 1, "optim.b1", f"betas must be in [0, 1), got ({o.b1}, {o.b2})")
    _check(o.schedule in SCHEDULES, "optim.schedule", f"{o.schedule!r} not in {SCHEDULES}")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _check(o.critic_lr > 0, "optim.critic_lr", f"must be > 0, got {o.critic_lr}")
    _check(o.mu_dtype in ("float32", "bfloat16"), "optim.mu_dtype",
           f"{o.mu_dtype!r} not in ('float32', 'bfloat16')")
    # train / batching
    _check(t.total_steps >= 1, "train.total_steps", f"must be >= 1, got {t.total_steps}")
    _check(t.ppo_epochs >= 1, "train.ppo_epochs", f"must be >= 1, got {t.ppo_epochs}")
    _check(t.micro_batch_size >= 1, "train.micro_batch_size", f"must be >= 1, got {t.micro_batch_size}")
    _check(t.max_nonfinite_in_a_row >= 1, "train.max_nonfinite_in_a_row",
           f"must be >= 1, got {t.max_nonfinite_in_a_row}")
    _check(t.length_bucket >= 1, "train.length_bucket", f"must be >= 1, got {t.length_bucket}")
    batching = resolve_batching(cfg)
    # checkpoint / logging
    _check(ck.every >= 1, "checkpoint.every", f"must be >= 1, got {ck.every}")
    _check(ck.keep >= 1, "checkpoint.keep", f"must be >= 1, got {ck.keep}")
    _check(bool(lg.out_dir), "logging.out_dir", "must be set")
    _check(lg.every >= 1, "logging.every", f"must be >= 1, got {lg.every}")
    _check(lg.eval_every >= 0, "logging.eval_every", f"must be >= 0, got {lg.eval_every}")
    _check(lg.eval_n >= 1, "logging.eval_n", f"must be >= 1, got {lg.eval_n}")
    return batching


def _validate_files(cfg: ml_collections.ConfigDict) -> None:
    """The model / data / checkpoint files the config names exist."""
    m, d, ck, lg = cfg.model, cfg.data, cfg.checkpoint, cfg.logging
    if m.hf_path:
        _check(os.path.isfile(os.path.join(m.hf_path, "config.json")), "model.hf_path",
               f"no config.json in {m.hf_path!r}")
    if m.tokenizer_path and not m.tokenizer_path.startswith("builtin:"):  # builtin:* is built offline
        _check(os.path.isdir(m.tokenizer_path), "model.tokenizer_path", f"{m.tokenizer_path!r} is not a directory")
    from rlvr_jax.data.datasets import DEFAULT_DATA_DIR_ENV, resolve_data_dir
    data_dir = resolve_data_dir(d.data_dir)  # empty: $RLVR_DATA_DIR, else ../shared/data
    if not d.train.startswith("rg:") and not d.train.endswith((".jsonl", ".json", ".parquet")):
        where = "" if d.data_dir else f" (the default: set data.data_dir or ${DEFAULT_DATA_DIR_ENV})"
        _check(os.path.isdir(data_dir), "data.data_dir", f"{data_dir!r} is not a directory{where}")
    missing = _dataset_file_missing(data_dir, d.train)
    _check(missing is None, "data.train", str(missing))
    for name in tuple(lg.eval_datasets) if lg.eval_every > 0 else ():
        missing = _dataset_file_missing(data_dir, name)
        _check(missing is None, "logging.eval_datasets", str(missing))
    if ck.init_from:
        _check(os.path.isdir(ck.init_from), "checkpoint.init_from", f"{ck.init_from!r} does not exist")


def validate_config(cfg: ml_collections.ConfigDict, check_files: bool = True,
                    num_devices: int | None = None) -> Batching:
    """Checks ``cfg`` and returns its :class:`Batching`.

    ``check_files``: also require the model / data / checkpoint files to exist.
    ``num_devices``: when given, the mesh must fit it and the micro-batch must split over its data axes.
    """
    _validate_model(cfg.model)
    _check(isinstance(cfg.algo.schedule, str), "algo.schedule", f"must be a string, got {cfg.algo.schedule!r}")
    if cfg.algo.schedule.strip():  # each phase is validated as its own config (rlvr_jax/config/schedule.py)
        from rlvr_jax.config import schedule
        schedule.validate_schedule(cfg, lambda pc: (_validate_algorithm(pc), _validate_rollout_and_data(pc)))
    else:
        _validate_algorithm(cfg)
    _validate_rollout_and_data(cfg)
    batching = _validate_optim_train_logging(cfg)
    t = cfg.train
    # mesh
    from rlvr_jax.sharding import config_rules
    try:
        rules = config_rules(cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError("mesh.rules", str(e)) from None
    if num_devices is not None:
        shape = resolve_mesh_shape(cfg.mesh.shape, num_devices)
        row_axes = dict(rules)["batch"] or ()
        row_axes = (row_axes,) if isinstance(row_axes, str) else row_axes
        dp = math.prod(shape[a] for a in row_axes)
        _check(t.micro_batch_size % dp == 0, "train.micro_batch_size",
               f"{t.micro_batch_size} is not divisible by the data-parallel size {'*'.join(row_axes) or 1}={dp} "
               f"(the mesh axes of the 'batch' sharding rule) of mesh {shape}")
    if check_files:
        _validate_files(cfg)
    # reliability checks: values that would fail after start-up, writable output dirs (rlvr_jax/config/checks.py)
    from rlvr_jax.config import checks
    checks.check_values(cfg)
    if check_files:
        checks.check_output_dirs(cfg)
    return batching


def as_plain(cfg: Any) -> Any:
    """The config as plain JSON-able python (ConfigDict -> dict, tuples -> lists)."""
    if isinstance(cfg, (ml_collections.ConfigDict, dict)):
        return {k: as_plain(v) for k, v in (cfg.items() if isinstance(cfg, dict) else cfg.items())}
    if isinstance(cfg, (list, tuple)):
        return [as_plain(v) for v in cfg]
    return cfg
