"""The papers' setups as small edits of the base config; ``configs/*.py`` combine one model and one algorithm.

Sources: the NSR paper ("The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning") Sec. 3.1 and
Appendix D.1, and the two-stage dynamics paper ("The Debate on RLVR Reasoning Capability Boundary") Appendix C.2.
Shared by both: 1,024 prompts x 8 rollouts, mini-batch 256 prompts (4 updates per step; PSR / NSR: ceil(kept
rows / 2,048)), lr 1e-6, clip 0.2, temperature 1.0, trained on the MATH training split. Where the NSR paper's
text and its released code differ, the presets follow the code (entropy bonus 1e-3, not the 1e-4 of D.1; no
mini-batch shuffling; whitened GAE advantages; PSR / NSR drop the samples they do not learn from); the table
in docs/training.md lists every hyper-parameter three ways.
"""
from __future__ import annotations

import ml_collections

from rlvr_jax.config.base import get_base_config

MODELS = ("qwen25math", "qwen3", "llama32", "tiny")
# One spelling per algorithm: the objectives registry's names (rlvr_jax.objectives.OBJECTIVES).
ALGORITHMS = ("ppo", "grpo", "psr", "nsr", "w_reinforce", "reinforce", "dapo", "gspo", "grpo_n", "gspo_n",
              "grpo_unlikely", "grpo_gated", "nsr_gated", "simko")
# Scheduled algorithms (rlvr_jax/config/schedule.py): a name for a chain of the algorithms above. NSR paper
# Appendix E suggests NSR as a warm-up before standard RL; the first quarter of the run is our choice (the
# paper names no length), W-REINFORCE after it is the paper's own best objective.
SCHEDULES = {"nsr_warmup": "nsr:25%,w_reinforce"}


def set_model(c: ml_collections.ConfigDict, model: str) -> ml_collections.ConfigDict:
    """Model, context length and template of each paper model."""
    if model == "qwen25math":
        # Qwen2.5-Math-7B: 4,096-token context (NSR paper Sec. 3.1; also its max_position_embeddings).
        c.model.hf_path = "checkpoints/Qwen2.5-Math-7B"
        c.data.template = "qwen_boxed"
        c.data.max_prompt_len = 1024
        c.rollout.max_new_tokens = 3072
        c.rollout.vllm.max_model_len = 4096
    elif model == "qwen3":
        # Qwen3-4B in non-thinking mode (empty <think></think> block); 32,768-token context (NSR paper Sec. 3.1).
        c.model.hf_path = "checkpoints/Qwen3-4B"
        c.data.template = "qwen3_nothink"
        c.data.max_prompt_len = 1024
        c.rollout.max_new_tokens = 32768 - 1024
        c.rollout.vllm.max_model_len = 32768
        c.model.remat = "full"
    elif model == "llama32":
        # Llama-3.2-3B-Instruct, 4,096-token context. The two-stage paper (C.2) used one uniform
        # Qwen-style prompt for all models, which is what "qwen_boxed" writes.
        c.model.hf_path = "checkpoints/Llama-3.2-3B-Instruct"
        c.data.template = "qwen_boxed"
        c.data.max_prompt_len = 1024
        c.rollout.max_new_tokens = 3072
        c.rollout.vllm.max_model_len = 4096
    elif model == "tiny":
        # A random 2-layer model that trains in seconds on a laptop CPU (CI and newcomers).
        c.model.preset = "tiny-qwen3"
        c.model.tokenizer_path = "builtin:bytes"  # built offline (rlvr_jax.data.byte_tokenizer): 261 ids <= 512
        c.model.dtype = "float32"
        c.data.template = "qwen_boxed"
        c.data.max_prompt_len = 192
        c.data.grade_workers = 1
        c.rollout.max_new_tokens = 16
        c.rollout.vllm.max_model_len = 512
        c.rollout.vllm.gpu_memory_utilization = 0.2
        c.rollout.vllm.enforce_eager = True
        c.train.total_steps = 4
        c.train.prompt_batch_size = 4
        c.train.mini_batch_size = 2
        c.train.micro_batch_size = 8
        c.train.length_bucket = 16
        c.optim.lr = 1e-3
        c.model.logprob_chunk_size = 16
        c.checkpoint.every = 2
        c.checkpoint.keep = 2
        c.logging.eval_every = 2
        c.logging.eval_n = 4
        c.logging.tensorboard = False
    else:
        raise ValueError(f"unknown model setup {model!r}; expected one of {MODELS}")
    return c


# Every algorithm field for every algorithm: the only source of an algorithm's settings (docs/training.md has
# the paper-text / released-code / this-table comparison). NSR paper = its released verl fork
# (TianHongZXY/RLVR-Decomposed); two-stage paper = its Appendix C.2 (no released code to compare with).
_COMMON = dict(lam=0.1, use_clip=True, clip_eps_low=0.2, clip_eps_high=0.2, clip_ratio_c=0.0, log_ratio_clamp=20.0,
               kl_value_clamp=0.0, kl_coef=0.0, kl_in_reward=False, kl_estimator="k3", use_reference=False,
               # NSR paper D.1 writes 1e-4; its released code runs verl's default 1e-3 (no script overrides it)
               entropy_coef=1e-3, loss_agg_mode="token-mean", form="clipped", adv_estimator="correctness",
               norm_adv_by_std=True, whiten_advantages=False, sample_selection="mask", gamma=1.0, gae_lambda=1.0,
               # PPO's value clip: verl's critic.cliprange_value default 0.5 (the released code keeps it)
               value_clip=0.5, rollout_correction="none", rollout_correction_cap=2.0,
               # the remedies (docs/objectives.md "Remedies"): off unless a preset below sets them; SimKO's
               # constants are its released scripts' (K = 3, alpha = 0.01, tau = 0.8, lambda = 1.1), read only by simko
               schedule="", unlikeliness_beta=0.0, gate_max_correct=-1, simko_top_k=3, simko_alpha=0.01,
               simko_tau=0.8, simko_lambda=1.1)
_ALGO = {
    # NSR paper D.1: KL 1e-3 (k1) applied to the reward, critic lr 1e-5, GAE gamma = lambda = 1, advantages
    # whitened over the batch (verl's compute_gae_advantage_return).
    "ppo": dict(adv_estimator="gae", kl_coef=1e-3, kl_in_reward=True, use_reference=True, kl_estimator="k1",
                whiten_advantages=True),
    # NSR paper D.1: KL 1e-3 in the loss (k3 = verl's low_var_kl, whose value the released code clamps to
    # [-10, 10]), token-mean (the released code's masked_mean).
    "grpo": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0),
    # Two-stage paper C.2: GRPO's settings with clip 0.2 for GSPO and the -N variants (GSPO's own paper clips
    # the sequence ratio at 3e-4 / 4e-4), entropy bonus 1e-4 as its text says.
    "gspo": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0, entropy_coef=1e-4),
    "grpo_n": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0, entropy_coef=1e-4),
    "gspo_n": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0, entropy_coef=1e-4),
    # DAPO baseline: no KL, no reference, clip-higher 0.2 / 0.28, token-mean, no entropy bonus.
    "dapo": dict(adv_estimator="grpo", clip_eps_high=0.28, entropy_coef=0.0),
    # NSR paper: advantages from correctness, no normalisation (it would zero the signal, D.3), no KL. PSR and
    # NSR train only on the samples they learn from (the released trainer subsets the batch): "drop".
    "psr": dict(sample_selection="drop"),
    "nsr": dict(sample_selection="drop"),
    # W-REINFORCE (Eq. 11): lambda = 0.1 on positives, -1 on negatives; nothing dropped in the released code.
    "w_reinforce": dict(lam=0.1),
    "reinforce": dict(),
    # Remedies, each GRPO's (or NSR's) preset above plus the one change, so that the difference to that row of a
    # comparison is the remedy alone.
    # Unlikeliness reward (He, Fried, Welleck 2025): correct samples' rewards scaled by 1 - beta * rank / G;
    # beta = 0.25 is their released training script's rank_penalty.
    "grpo_unlikely": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0,
                          unlikeliness_beta=0.25),
    # Zero-success gating: only prompts with at most m correct rollouts train. GRPO needs m >= 1 (a group with no
    # success has zero group-relative advantages), so m = 1: the prompts with a single, rare success. The
    # gated-out rows leave the batch ("drop"), as PSR's / NSR's unselected rows do.
    "grpo_gated": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0,
                       gate_max_correct=1, sample_selection="drop"),
    # NSR restricted to the prompts with no correct rollout (m = 0, the argument's strict form).
    "nsr_gated": dict(sample_selection="drop", gate_max_correct=0),
    # SimKO (Peng et al. 2025): GRPO's preset with SimKO's token weights (objectives/simko.py). Its paper trains
    # without KL; we keep GRPO's KL 1e-3 so that the difference to grpo is the reweighting alone.
    "simko": dict(adv_estimator="grpo", kl_coef=1e-3, use_reference=True, kl_value_clamp=10.0),
}


def _unknown(algo: str) -> ValueError:
    return ValueError(f"unknown algorithm {algo!r}; valid names: {', '.join(ALGORITHMS + tuple(SCHEDULES))}")


def set_algorithm(c: ml_collections.ConfigDict, algo: str) -> ml_collections.ConfigDict:
    """Sets every ``algo`` field of ``c`` to algorithm ``algo``'s preset (see ``_ALGO``), ``algo.name`` included.
    A scheduled algorithm (``SCHEDULES``) gets the common fields and its ``algo.schedule``; each phase then
    trains with its own preset (rlvr_jax.config.schedule)."""
    if algo in SCHEDULES:
        c.algo.update({**_COMMON, "schedule": SCHEDULES[algo], "name": algo})
        return c
    if algo not in _ALGO:
        raise _unknown(algo)
    c.algo.update({**_COMMON, **_ALGO[algo], "name": algo})
    return c


def preset_hparams(algo: str):
    """The ObjectiveHParams the trainer builds for algorithm ``algo``'s preset (L of seq-mean-token-sum-norm:
    the base config's rollout.max_new_tokens)."""
    from rlvr_jax.objectives import hparams_from_config
    return hparams_from_config(set_algorithm(get_base_config(), algo))


def experiment(algo: str, model: str) -> ml_collections.ConfigDict:
    """The base config with one paper model and one algorithm; output under runs/<algo>_<model>."""
    c = set_algorithm(set_model(get_base_config(), model), algo)
    c.logging.out_dir = f"runs/{algo}_{model}"
    return c
