"""One RL step's advantages, sample selection and mini-batches (host-side numpy; used by rlvr_jax.train).

Order, as the NSR paper's released trainer (a verl fork) does it:

1. advantages for every row (``compute_advantages``): from correctness (PSR / NSR / W-REINFORCE / REINFORCE:
   +1 / -1 whatever the reward format), group-normalised (GRPO family), or GAE on the critic (PPO), then,
   with ``algo.whiten_advantages``, whitened over all valid tokens of the batch (verl's PPO);
2. the rows the objective learns from (``rlvr_jax.objectives.selection.kept_rows``: the same sign rule the
   objective applies to its tokens), reported as ``train/kept_samples``;
3. the mini-batches (``actor_minibatches``):
   * ``algo.sample_selection = "mask"``: the prompt batch is split into ``num_mini_batches`` equal groups of
     prompts (all n rollouts of a prompt together), unselected rows stay in (masked by the objective);
   * ``"drop"``: only the kept rows, in batch order, cut into consecutive mini-batches of
     ``mini_batch_prompts * n`` rows; the remainder forms a last, smaller mini-batch. Each mini-batch is one
     optimizer update of its own token-mean (the last one weighted like the others: its loss is the mean over
     its own kept tokens). No kept row: no update. Row counts that do not divide the mesh are padded by the
     learner with all-zero rows (mask 0: zero weight), never by dropping data.
   With ``train.shuffle_minibatches`` the prompts are permuted (seeded by step and epoch) first; the papers'
   code does not shuffle.
4. the rows of a mini-batch (``minibatch_batch``); a "drop" mini-batch is padded with all-zero rows (mask 0:
   no loss, no gradient, no denominator) to a power-of-two number of micro-batches, so the varying row counts
   compile at most log2(micro-batches per full mini-batch) + 1 update shapes, not one per count.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from rlvr_jax.batch import TrainBatch, pad_rows, take_rows, token_mean as _token_mean
from rlvr_jax.objectives import advantages as adv_lib
from rlvr_jax.objectives import group_shaping


def compute_advantages(cfg, rewards: np.ndarray, correct: np.ndarray, batch: TrainBatch, learner
                       ) -> tuple[TrainBatch, dict]:
    """``batch`` with per-token ``advantages`` [N, R] (rows grouped by prompt, n consecutive rows each), and
    extra metrics. For GAE also with ``old_values`` (the critic's, ``learner.compute_values``) and ``returns``
    (from the raw advantages, before whitening)."""
    a = cfg.algo
    mask = batch.response_mask
    critic: dict = {}
    extra: dict[str, float] = {}
    if a.adv_estimator == "correctness":
        adv = adv_lib.correctness_advantages(correct, mask)
    elif a.adv_estimator == "raw":
        adv = adv_lib.raw_reward_advantages(rewards, mask)
    elif a.adv_estimator == "grpo":
        if float(a.unlikeliness_beta) > 0:  # the unlikeliness reward (objectives/group_shaping.py), by pi_old
            seq_logp = group_shaping.sequence_mean_logp(batch.old_logp, mask)
            rewards = group_shaping.unlikeliness_rewards(rewards, correct, seq_logp, int(cfg.rollout.n),
                                                         float(a.unlikeliness_beta))
            extra["train/unlikeliness_reward_mean"] = float(np.mean(rewards))
        seq = adv_lib.group_normalized_advantages(rewards, int(cfg.rollout.n), scale_by_std=bool(a.norm_adv_by_std))
        adv = adv_lib.broadcast_to_tokens(seq, mask)
    elif a.adv_estimator == "gae":
        values = learner.compute_values(batch)
        clamps = dict(log_ratio_clamp=float(a.log_ratio_clamp) or None, value_clamp=float(a.kl_value_clamp) or None)
        if a.kl_in_reward and a.kl_coef > 0:
            tok_r = adv_lib.kl_shaped_rewards(rewards, batch.old_logp, batch.ref_logp, mask,
                                              float(a.kl_coef), a.kl_estimator, **clamps)
            kl = adv_lib.kl_estimate(jnp.asarray(batch.old_logp), jnp.asarray(batch.ref_logp),
                                     jnp.asarray(mask) != 0, a.kl_estimator, **clamps)
            extra["actor/reward_kl_penalty"] = float(jnp.sum(kl) / max(mask.sum(), 1))
        else:
            tok_r = adv_lib.kl_shaped_rewards(rewards, batch.old_logp, batch.old_logp, mask, 0.0)
        adv, returns = adv_lib.gae(tok_r, values, mask, float(a.gamma), float(a.gae_lambda))
        critic = dict(old_values=values, returns=np.asarray(returns, np.float32))
        extra["critic/values/mean"] = _token_mean(values, mask)
        extra["critic/returns/mean"] = _token_mean(returns, mask)
    else:
        raise ValueError(f"unknown algo.adv_estimator {a.adv_estimator!r}")
    if a.whiten_advantages:
        extra["critic/advantages_before_whiten/mean"] = _token_mean(adv, mask)
        adv = adv_lib.masked_whiten(adv, mask)
    adv = np.asarray(adv, np.float32) * (mask != 0)
    extra["critic/advantages/mean"] = _token_mean(adv, mask)
    return batch.replace(advantages=adv, **critic), extra


def gate(cfg, correct: np.ndarray, batch: TrainBatch, kept: np.ndarray) -> tuple[TrainBatch, np.ndarray, dict]:
    """Zero-success gating (``algo.gate_max_correct = m >= 0``, objectives/group_shaping.py): the rows of
    prompts with more than m correct rollouts get zero advantages and leave the kept rows (so "drop" removes them
    from the batch). Returns the batch, the kept rows and ``train/gated_prompt_ratio`` (prompts that train)."""
    m = int(cfg.algo.gate_max_correct)
    if m < 0:
        return batch, kept, {}
    n = int(cfg.rollout.n)
    keep = group_shaping.gate_rows(correct, n, m)
    adv = np.where(keep[:, None], batch.advantages, 0.0).astype(np.float32)
    return batch.replace(advantages=adv), kept & keep, {"train/gated_prompt_ratio": float(keep[::n].mean())}


def minibatch_rows(num_prompts: int, n: int, num_mini_batches: int, rng: np.random.Generator | None):
    """Row indices of each mini-batch: prompts (shuffled when ``rng``) split evenly, all n rollouts together."""
    order = rng.permutation(num_prompts) if rng is not None else np.arange(num_prompts)
    groups = np.split(order, num_mini_batches)
    return [np.concatenate([np.arange(p * n, (p + 1) * n) for p in np.sort(g)]) for g in groups]


def drop_minibatch_rows(kept: np.ndarray, n: int, mini_batch_rows: int, rng: np.random.Generator | None):
    """``"drop"``: the kept rows (prompts permuted when ``rng``, rows in order within a prompt) cut into
    consecutive mini-batches of ``mini_batch_rows``; the last may be smaller; [] when nothing is kept."""
    kept = np.asarray(kept, bool)
    num_prompts = kept.shape[0] // n
    order = rng.permutation(num_prompts) if rng is not None else np.arange(num_prompts)
    rows = np.concatenate([np.flatnonzero(kept[p * n:(p + 1) * n]) + p * n for p in order]) if num_prompts else []
    rows = np.asarray(rows, np.int64)
    return [rows[s:s + mini_batch_rows] for s in range(0, len(rows), mini_batch_rows)]


def num_updates_per_epoch(mode: str, kept_count: int, batching) -> int:
    """Optimizer updates per PPO epoch: fixed ("mask") or ceil(kept rows / mini-batch rows) ("drop")."""
    if mode == "mask":
        return batching.num_mini_batches
    return math.ceil(kept_count / (batching.mini_batch_prompts * batching.n))


def actor_minibatches(cfg, batching, kept: np.ndarray, step: int, epoch: int) -> list[np.ndarray]:
    """Row indices of the mini-batches of one PPO epoch of RL step ``step`` (see the module docstring)."""
    rng = (np.random.default_rng([int(cfg.train.seed), step, epoch]) if cfg.train.shuffle_minibatches else None)
    if cfg.algo.sample_selection == "drop":
        return drop_minibatch_rows(kept, batching.n, batching.mini_batch_prompts * batching.n, rng)
    return minibatch_rows(batching.prompt_batch_size, batching.n, batching.num_mini_batches, rng)


def selection_metrics(kept: np.ndarray, mask: np.ndarray, num_updates: int) -> dict:
    """kept_samples / kept_ratio (rows the gradient uses), kept_token_frac f (their share of the valid tokens:
    the factor between "mask" and "drop", objectives/selection.py) and the number of updates made."""
    valid = np.asarray(mask) != 0
    return {"train/kept_samples": int(kept.sum()), "train/kept_ratio": float(kept.mean()),
            "train/kept_token_frac": float(valid[kept].sum() / max(valid.sum(), 1)),
            "actor/num_updates": int(num_updates), "actor/no_update": int(num_updates == 0)}


def bucket_rows(n_rows: int, micro_batch_size: int, full_rows: int) -> int:
    """Rows a "drop" mini-batch of ``n_rows`` is padded to: ``micro * 2^ceil(log2(ceil(n_rows / micro)))``,
    at most the full mini-batch's ``full_rows`` rounded up to a whole number of micro-batches."""
    micro = int(micro_batch_size)
    m = max(1, math.ceil(n_rows / micro))
    cap = max(1, math.ceil(full_rows / micro))
    return micro * min(1 << (m - 1).bit_length(), cap)


def minibatch_batch(cfg, batching, batch: TrainBatch, rows) -> TrainBatch:
    """The host batch of one mini-batch: ``rows`` of ``batch``, zero-padded to its shape bucket for "drop"."""
    mb = take_rows(batch, rows)
    if cfg.algo.sample_selection == "drop":
        mb = pad_rows(mb, bucket_rows(len(rows), batching.micro_batch_size, batching.mini_batch_prompts * batching.n))
    return mb
