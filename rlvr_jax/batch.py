"""The typed rollout batch (``TrainBatch``) that flows from the rollout engine to the objectives, and its helpers.

Sequence layout. A batch of N sequences is ``prompt_ids [N, P]`` (left-padded, ``prompt_mask``) followed by
``response_ids [N, R]`` (right-padded, ``response_mask``); P and R are rounded up to multiples of
``length_bucket`` so that only a few shapes are ever compiled. Response token j sits at position P + j and is
predicted by the hidden state at P + j - 1. Every per-token field is ``[N, R]``, aligned with ``response_ids``.

The batch is a ``flax.struct`` dataclass, i.e. a pytree: the same value is a host numpy batch (built by
:func:`pack_sequences`, filled in by the RL step's phases with :meth:`TrainBatch.replace`), a device batch
(the learner places every leaf on the mesh) and a jit argument. Fields that are not set are ``None`` (no leaf),
so a batch without a reference model or critic compiles without those inputs.

One home each for: packing (:func:`pack_sequences`), prompt left-padding (:func:`left_pad`, also used by the
samplers), row padding (:func:`pad_rows`), row selection
(:func:`take_rows`), micro-batching (:func:`micro_batches`) and the masked token mean (:func:`token_mean`). The host gather of a
(possibly multi-host sharded) device array is :func:`rlvr_jax.sharding.to_host`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import numpy as np
from flax import struct

from rlvr_jax.objectives.terms import IS_WEIGHT_KEY

SEQUENCE_FIELDS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask")


@struct.dataclass
class TrainBatch:
    """One RL step's rows. Set by: pack_sequences (the four sequence arrays), the old-log-prob phase
    (``old_logp``, ``ref_logp``), the advantage phase (``advantages``; PPO: ``old_values``, ``returns``) and
    the rollout correction (``rollout_is_weights``, token_tis only; seq_mask zeroes ``response_mask`` rows)."""

    prompt_ids: Any                  # [N, P] int32, left-padded
    prompt_mask: Any                 # [N, P] int32, 1 at real prompt tokens
    response_ids: Any                # [N, R] int32, right-padded
    response_mask: Any               # [N, R] float32, 1 at response tokens that count
    old_logp: Any = None             # [N, R] log pi_old(y_t): the behaviour policy, recomputed by the learner
    ref_logp: Any = None             # [N, R] log pi_ref(y_t) (algo.use_reference)
    advantages: Any = None           # [N, R] A_t
    rollout_is_weights: Any = None   # [N, R] min(pi_old / pi_rollout, C) (token_tis); = terms.IS_WEIGHT_KEY
    old_values: Any = None           # [N, R] critic values V(s_t) before the update (PPO)
    returns: Any = None              # [N, R] GAE returns, the critic's targets (PPO)

    @classmethod
    def of(cls, x: "TrainBatch | Mapping[str, Any]") -> "TrainBatch":
        """``x`` itself, or a mapping with the field names as a TrainBatch (unknown keys are an error)."""
        if isinstance(x, cls):
            return x
        unknown = sorted(set(x) - set(cls.__dataclass_fields__))
        if unknown:
            raise KeyError(f"TrainBatch has no field(s) {unknown}; fields: {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(x))

    @property
    def num_rows(self) -> int:
        return int(np.shape(self.prompt_ids)[0])

    def only(self, *names: str) -> "TrainBatch":
        """The same batch with every optional field not in ``names`` unset (what one computation reads)."""
        drop = {k: None for k in self.__dataclass_fields__ if k not in SEQUENCE_FIELDS and k not in names}
        return self.replace(**drop)

    def objective_inputs(self, logp, entropy) -> dict:
        """The objectives' per-token inputs (rlvr_jax.objectives.types): the current policy's ``logp`` and
        ``entropy`` with this batch's constants; unset fields are left out."""
        out = {"logp": logp, "entropy": entropy, "mask": self.response_mask, "old_logp": self.old_logp,
               "advantages": self.advantages, "ref_logp": self.ref_logp,
               IS_WEIGHT_KEY: self.rollout_is_weights}
        return {k: v for k, v in out.items() if v is not None}


def round_up(x: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(x / multiple)) * multiple)


def left_pad(seqs, length: int, pad_id: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` of shape ``[rows, length]`` (rows defaults to ``len(seqs)``): each sequence right-aligned
    (left-padded with ``pad_id``), mask 1 on its tokens. Rows past ``len(seqs)`` are padding rows holding one
    dummy real token in the last position, so no attention row is empty (their outputs are discarded).
    The one prompt-padding helper of the trainer and both sampler schedulers."""
    rows = len(seqs) if rows is None else rows
    ids, mask = np.full((rows, length), pad_id, np.int32), np.zeros((rows, length), np.int32)
    for i, p in enumerate(seqs):
        if len(p) > length:
            raise ValueError(f"sequence {i} has {len(p)} tokens, more than the padded length {length}")
        if len(p):
            ids[i, length - len(p):] = p
            mask[i, length - len(p):] = 1
    mask[len(seqs):, -1] = 1
    return ids, mask


def pack_sequences(prompts, responses, length_bucket: int, pad_id: int = 0) -> TrainBatch:
    """Left-pads prompts and right-pads responses to bucketed lengths (numpy; see the module docstring)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    n = len(prompts)
    P = round_up(max((len(p) for p in prompts), default=1), length_bucket)
    R = round_up(max((len(r) for r in responses), default=1), length_bucket)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
    pid, pm = left_pad(prompts, P, pad_id)
    rid, rm = np.full((n, R), pad_id, np.int32), np.zeros((n, R), np.float32)
    for i, r in enumerate(responses):
        rid[i, :len(r)] = r
        rm[i, :len(r)] = 1
    return TrainBatch(prompt_ids=pid, prompt_mask=pm, response_ids=rid, response_mask=rm)


def pad_rows(batch: TrainBatch, multiple: int) -> TrainBatch:
    """Appends all-zero rows (masks 0: they contribute nothing) so the row count divides ``multiple``; the
    padding rows keep one real (pad-id) prompt token so no attention row is empty."""
    batch = TrainBatch.of(batch)
    extra = (-batch.num_rows) % multiple
    if extra == 0:
        return batch

    def pad(v, last_one=False):
        fill = np.zeros((extra,) + v.shape[1:], v.dtype)
        if last_one:
            fill[:, -1] = 1
        return np.concatenate([v, fill], axis=0)

    padded = jax.tree.map(pad, batch)
    return padded.replace(prompt_mask=pad(batch.prompt_mask, last_one=True))


def take_rows(batch: TrainBatch, idx) -> TrainBatch:
    return jax.tree.map(lambda v: v[idx], TrainBatch.of(batch))


def micro_batches(batch: TrainBatch, micro_batch_size: int) -> list[TrainBatch]:
    """``batch`` padded (:func:`pad_rows`) and cut into consecutive micro-batches of ``micro_batch_size`` rows."""
    batch = pad_rows(batch, micro_batch_size)
    return [jax.tree.map(lambda v, s=s: v[s:s + micro_batch_size], batch)
            for s in range(0, batch.num_rows, micro_batch_size)]


def token_mean(x, mask) -> float:
    """sum(x * mask) / max(sum(mask), 1): the mean of ``x`` over the valid tokens (host float)."""
    mask = np.asarray(mask)
    return float((np.asarray(x) * mask).sum() / max(mask.sum(), 1))
