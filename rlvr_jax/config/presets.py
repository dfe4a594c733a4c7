"""The papers' setups as small edits of the base config; ``configs/*.py`` combine one model and one algorithm.

Sources: the NSR paper ("The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning") Sec. 3.1 and
Appendix D.1, and the two-stage dynamics paper ("The Debate on RLVR Reasoning Capability Boundary") Appendix C.2.
Shared by both: 1,024 prompts x 8 rollouts, mini-batch 256 prompts (4 updates per step), lr 1e-6, clip 0.2,
temperature 1.0, entropy bonus 1e-4, trained on the MATH training split.
"""
from __future__ import annotations

import ml_collections

from rlvr_jax.config.base import get_base_config

MODELS = ("qwen25math", "qwen3", "llama32", "tiny")
ALGORITHMS = ("ppo", "grpo", "psr", "nsr", "wreinforce", "dapo", "gspo", "grpo_n", "gspo_n", "reinforce")


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
        c.model.tokenizer_path = "checkpoints/tiny_tokenizer"  # any tokenizer with <= 512 ids (ChatML specials)
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


def set_algorithm(c: ml_collections.ConfigDict, algo: str) -> ml_collections.ConfigDict:
    """Objective, advantages, KL and clipping of each algorithm."""
    a = c.algo
    if algo == "ppo":
        # NSR paper D.1: KL 1e-3 applied to the reward (advantage), critic lr 1e-5, GAE with verl's gamma=lam=1.
        a.name, a.adv_estimator = "ppo", "gae"
        a.kl_coef, a.kl_in_reward, a.use_reference, a.kl_estimator = 1e-3, True, True, "k1"
    elif algo in ("grpo", "gspo", "grpo_n", "gspo_n"):
        # GRPO: KL 1e-3 in the loss (NSR paper D.1); the two-stage paper (C.2) uses the same for GSPO and the -N
        # variants, with clip 0.2 for all (GSPO's own paper uses sequence-level clip 3e-4/4e-4).
        a.name, a.adv_estimator = algo, "grpo"
        a.kl_coef, a.kl_in_reward, a.use_reference, a.kl_estimator = 1e-3, False, True, "k3"
    elif algo == "dapo":
        # DAPO baseline: no KL, no reference, clip-higher 0.2 / 0.28, token-mean.
        a.name, a.adv_estimator = "dapo", "grpo"
        a.kl_coef, a.use_reference = 0.0, False
        a.clip_eps_low, a.clip_eps_high = 0.2, 0.28
    elif algo in ("psr", "nsr", "reinforce"):
        # Raw +-1 reward as the advantage, no normalisation (it would zero the signal, NSR paper D.3), no KL,
        # no reference model.
        a.name, a.adv_estimator = algo, "raw"
        a.kl_coef, a.use_reference = 0.0, False
    elif algo == "wreinforce":
        # W-REINFORCE (Eq. 11): lambda = 0.1 on positives, -1 on negatives.
        a.name, a.adv_estimator, a.lam = "w_reinforce", "raw", 0.1
        a.kl_coef, a.use_reference = 0.0, False
    else:
        raise ValueError(f"unknown algorithm setup {algo!r}; expected one of {ALGORITHMS}")
    return c


def experiment(algo: str, model: str) -> ml_collections.ConfigDict:
    """The base config with one paper model and one algorithm; output under runs/<algo>_<model>."""
    c = set_algorithm(set_model(get_base_config(), model), algo)
    c.logging.out_dir = f"runs/{algo}_{model}"
    return c
