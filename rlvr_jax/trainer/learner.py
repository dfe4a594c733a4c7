"""The learner: jitted, sharded policy (and critic) updates with exact micro-batch gradient accumulation.

Batches are :class:`rlvr_jax.batch.TrainBatch` values (the sequence layout is documented there). For a
response token j of row n,

    logp[n, j] = log pi(response_ids[n, j] | prompt, response[:j]),   entropy[n, j] = H(pi(. | same prefix)),

computed by ``rlvr_jax.models.logprobs.token_logprobs`` (chunked, float32, raw temperature-1 distribution =
the rollout engines' log-prob convention). The exact accumulation of micro-batch gradients and the optimizer
are in ``rlvr_jax.trainer.trainable``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rlvr_jax.batch import (SEQUENCE_FIELDS, TrainBatch, micro_batches, pack_sequences, pad_rows,  # noqa: F401
                            round_up, take_rows)
from rlvr_jax.models.logprobs import token_logprobs
from rlvr_jax.sharding import to_host
from rlvr_jax.objectives import get_objective, hparams_from_config, loss_denominator
from rlvr_jax.objectives.types import ObjectiveHParams
from rlvr_jax.sharding import batch_sharding
from rlvr_jax.trainer.trainable import Trainable, make_optimizer, make_schedule  # noqa: F401  (re-exported)


# ------------------------------------------------------------------------------------------------
# Pure model functions
# ------------------------------------------------------------------------------------------------
def response_hidden(model, prompt_ids, prompt_mask, response_ids, response_mask):
    """Hidden states predicting each response token: ``[N, R, H]``.

    The packed row ``[left pads | prompt | response | right pads]`` is first rotated left by its number of
    prompt pads, giving ``[prompt | response | pads]`` with every real token at its true position
    ``0 .. len-1``. All padding then trails the real tokens, so plain causal attention (no mask array: the
    cuDNN causal kernel) gives the real tokens exactly what the padded layout with a padding mask gives
    them. Response token ``j`` of row ``n`` is predicted by the hidden state at ``P - 1 + j - pads_n``.
    ``response_mask`` is not needed for that (response padding is trailing already).
    """
    del response_mask
    N, P = prompt_ids.shape
    R = response_ids.shape[1]
    T = P + R
    ids = jnp.concatenate([prompt_ids, response_ids], axis=1)
    pads = P - jnp.sum(prompt_mask != 0, axis=1).astype(jnp.int32)  # [N]
    cols = jnp.arange(T, dtype=jnp.int32)[None, :]
    aligned = jnp.take_along_axis(ids, (cols + pads[:, None]) % T, axis=1)
    h = model.hidden(aligned)
    rows = (P - 1 + jnp.arange(R, dtype=jnp.int32))[None, :] - pads[:, None]  # [N, R], >= 0
    return jnp.take_along_axis(h, rows[:, :, None], axis=1)


def sequence_logprobs(model, mb: TrainBatch, chunk_size: int, top_k: int = 0):
    """``(logp [N, R], entropy [N, R])`` of the response tokens under ``model`` (float32); with ``top_k > 0``
    also ``(topk_logp_sum, is_top1)`` (SimKO's, ``rlvr_jax.models.logprobs``).

    The output projection's matmuls (forward and backward) run in the model's compute dtype with float32
    accumulation, as in the samplers, and the gradient of a float32 master ``[H, V]`` matrix is summed in
    float32 (see ``rlvr_jax.models.logprobs``).
    """
    mb = TrainBatch.of(mb)
    h = response_hidden(model, mb.prompt_ids, mb.prompt_mask, mb.response_ids, mb.response_mask)
    return token_logprobs(h, model.unembed_matrix(), mb.response_ids, chunk_size=chunk_size,
                          compute_dtype=model.config.dtype, top_k=top_k)


class ValueModel(nnx.Module):
    """PPO critic: a decoder backbone (initialised from the policy) and a linear value head on its hidden
    states; ``V[n, j]`` is the value of the state just before response token j."""

    def __init__(self, backbone, rngs: nnx.Rngs):
        self.backbone = backbone
        h = backbone.config.hidden_size
        self.head = nnx.Linear(h, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def values(self, mb: TrainBatch):
        h = response_hidden(self.backbone, mb.prompt_ids, mb.prompt_mask, mb.response_ids, mb.response_mask)
        return self.head(h.astype(jnp.float32))[..., 0]


def value_loss(values, old_values, returns, mask, clip: float | None):
    """verl's clipped value loss (PPO critic), token sums over the valid tokens:

        l_t = 0.5 max((V_t - G_t)^2, (V_old,t + clip(V_t - V_old,t, -c, c) - G_t)^2),   c = ``algo.value_clip``,

    with G the GAE returns and V_old the values before the update; ``clip`` None or <= 0 gives the unclipped
    0.5 (V_t - G_t)^2. ``vf_clipfrac`` counts the tokens where the clipped branch is the larger one.
    """
    m = mask != 0
    unclipped = jnp.square(values - returns)
    if clip is None or clip <= 0:
        clipped_sq = unclipped
    else:
        clipped_sq = jnp.square(old_values + jnp.clip(values - old_values, -clip, clip) - returns)
    per_tok = jnp.where(m, 0.5 * jnp.maximum(unclipped, clipped_sq), 0.0)
    clipped = jnp.where(m, clipped_sq > unclipped, False)
    metrics = {"vf_loss": jax.lax.stop_gradient(jnp.sum(per_tok)),
               "vf_clipfrac": jnp.sum(clipped).astype(jnp.float32),
               "vpred": jax.lax.stop_gradient(jnp.sum(jnp.where(m, values, 0.0))),
               "n_tokens": jnp.sum(m).astype(jnp.float32)}
    return jnp.sum(per_tok), metrics


# ------------------------------------------------------------------------------------------------
# The learner
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LearnerOptions:
    """The learner's slice of the config (see rlvr_jax/config/base.py)."""

    objective: str
    hp: ObjectiveHParams
    micro_batch_size: int
    length_bucket: int
    logprob_chunk_size: int
    lr: float
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    total_updates: int = 1
    use_reference: bool = False
    use_critic: bool = False
    critic_lr: float = 1e-5
    critic_warmup_steps: int = 0
    value_clip: float = 0.5
    mu_dtype: str = "float32"

    @classmethod
    def from_config(cls, cfg, total_updates: int) -> "LearnerOptions":
        a, o, t = cfg.algo, cfg.optim, cfg.train
        return cls(objective=a.name, hp=hparams_from_config(cfg), micro_batch_size=int(t.micro_batch_size),
                   length_bucket=int(t.length_bucket), logprob_chunk_size=int(cfg.model.logprob_chunk_size),
                   lr=float(o.lr), weight_decay=float(o.weight_decay), b1=float(o.b1), b2=float(o.b2),
                   eps=float(o.eps), grad_clip=float(o.grad_clip), warmup_steps=int(o.warmup_steps),
                   schedule=o.schedule, min_lr_ratio=float(o.min_lr_ratio), total_updates=int(total_updates),
                   use_reference=bool(a.use_reference), use_critic=a.adv_estimator == "gae",
                   critic_lr=float(o.critic_lr), critic_warmup_steps=int(o.critic_warmup_steps),
                   value_clip=float(a.value_clip), mu_dtype=str(o.mu_dtype))


class Learner:
    """Policy (+ optional frozen reference and PPO critic) on a mesh.

    ``compute_logprobs(batch)`` gives old-policy / reference log-probs; ``update(minibatch)`` does one exact
    accumulated optimizer step. Batches are host :class:`~rlvr_jax.batch.TrainBatch` values (from
    :func:`~rlvr_jax.batch.pack_sequences`, with ``old_logp``, ``advantages`` and optionally ``ref_logp`` /
    ``rollout_is_weights`` set; ``old_values`` / ``returns`` for the critic), identical on every process; a
    mapping with the field names is accepted too (``TrainBatch.of``). Each computation places only the fields
    it reads on the mesh, sharded over the batch axis per the rules.
    """

    def __init__(self, model: nnx.Module, opts: LearnerOptions, mesh, rules=None, critic_backbone=None):
        self.opts, self.mesh, self.rules = opts, mesh, rules
        self.objective = get_objective(opts.objective)
        sched = make_schedule(opts.lr, opts.warmup_steps, opts.total_updates, opts.schedule, opts.min_lr_ratio)
        tx = make_optimizer(sched, opts.weight_decay, opts.b1, opts.b2, opts.eps, opts.grad_clip, opts.mu_dtype)
        self.policy = Trainable(model, tx, sched, self._policy_loss, mesh)
        self.ref_params = None
        if opts.use_reference:  # a frozen copy of the initial policy
            self.ref_params = jax.tree.map(jnp.copy, self.policy.state["params"])
        self.critic = None
        if opts.use_critic:
            if critic_backbone is None:
                raise ValueError("LearnerOptions.use_critic needs a critic_backbone (a decoder to start from)")
            vm = ValueModel(critic_backbone, rngs=nnx.Rngs(0))
            csched = make_schedule(opts.critic_lr, opts.critic_warmup_steps, opts.total_updates)
            ctx = make_optimizer(csched, opts.weight_decay, opts.b1, opts.b2, opts.eps, opts.grad_clip,
                                 opts.mu_dtype)
            self.critic = Trainable(vm, ctx, csched, self._critic_loss, mesh)
        self._logprob_fn = jax.jit(self._logprob_impl)
        self._value_fn = jax.jit(self._value_impl)

    # ---- loss functions (pure in (module, micro-batch)) ----
    def _policy_loss(self, model, mb: TrainBatch):
        top_k = self.opts.hp.simko_top_k if self.opts.objective == "simko" else 0
        outs = sequence_logprobs(model, mb, self.opts.logprob_chunk_size, top_k=top_k)
        inputs = mb.objective_inputs(*outs[:2])
        if top_k:  # SimKO's top-K log-prob sum and top-1 flag (objectives/simko.py)
            inputs.update(topk_logp_sum=outs[2], is_top1=outs[3])
        out = self.objective(inputs, self.opts.hp)
        return out.loss_sum, out.metrics

    def set_objective(self, name: str, hp: ObjectiveHParams) -> None:
        """Switches the policy loss to objective ``name`` with ``hp`` (a phase of ``algo.schedule``); parameters
        and optimizer state are kept, the update function is traced again for the new loss."""
        if (name, hp) == (self.opts.objective, self.opts.hp):
            return
        self.objective = get_objective(name)
        self.opts = dataclasses.replace(self.opts, objective=name, hp=hp)
        self.policy.retrace()

    def _critic_loss(self, vm, mb: TrainBatch):
        return value_loss(vm.values(mb), mb.old_values, mb.returns, mb.response_mask, self.opts.value_clip)

    def _logprob_impl(self, params, mb: TrainBatch):
        return sequence_logprobs(self.policy.module(params), mb, self.opts.logprob_chunk_size)

    def _value_impl(self, params, mb: TrainBatch):
        return self.critic.module(params).values(mb)

    # ---- placement ----
    def put(self, mb: TrainBatch) -> TrainBatch:
        """Places a host micro-batch on the mesh (batch axis per the rules), multi-host safe."""
        def place(v):
            sh = batch_sharding(self.mesh, v.ndim, self.rules)
            return jax.make_array_from_callback(v.shape, sh, lambda idx: v[idx])
        return jax.tree.map(place, TrainBatch.of(mb))

    def _stacked(self, batch: TrainBatch) -> TrainBatch:
        """Micro-batches stacked to ``[M, micro, ...]`` on the mesh (micro axis sharded over the batch rule)."""
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *micro_batches(batch, self.opts.micro_batch_size))

        def place(v):
            spec = batch_sharding(self.mesh, v.ndim - 1, self.rules).spec
            sh = NamedSharding(self.mesh, PartitionSpec(None, *spec))
            return jax.make_array_from_callback(v.shape, sh, lambda idx: v[idx])
        return jax.tree.map(place, stacked)

    # ---- forward-only passes ----
    def _forward_all(self, fn, params, batch: TrainBatch) -> list:
        """``fn(params, micro_batch)`` on every micro-batch of the sequence fields, gathered to the host and
        concatenated (padding rows removed)."""
        seqs = batch.only()
        with jax.set_mesh(self.mesh):
            outs = [fn(params, self.put(mb)) for mb in micro_batches(seqs, self.opts.micro_batch_size)]
        return [np.concatenate([to_host(o) for o in parts])[:batch.num_rows]
                for parts in zip(*[o if isinstance(o, tuple) else (o,) for o in outs])]

    def compute_logprobs(self, batch: TrainBatch, reference: bool = False, params=None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(logp, entropy)`` ``[N, R]`` numpy of the current (or reference, or the given ``params``') policy; 0 at
        padding."""
        batch = TrainBatch.of(batch)
        if params is None:
            params = self.ref_params if reference else self.policy.state["params"]
        if params is None:
            raise ValueError("compute_logprobs(reference=True) without a reference model (algo.use_reference)")
        logp, ent = self._forward_all(self._logprob_fn, params, batch)
        m = batch.response_mask != 0
        return np.where(m, logp, 0.0).astype(np.float32), np.where(m, ent, 0.0).astype(np.float32)

    def compute_values(self, batch: TrainBatch) -> np.ndarray:
        batch = TrainBatch.of(batch)
        (v,) = self._forward_all(self._value_fn, self.critic.state["params"], batch)
        return np.where(batch.response_mask != 0, v, 0.0).astype(np.float32)

    # ---- updates ----
    def _denominator(self, batch: TrainBatch) -> float:
        """The global loss denominator of a mini-batch, from its mask alone (exact accumulation)."""
        return float(loss_denominator(batch.response_mask, self.opts.hp.agg_mode, self.opts.hp.agg_max_len))

    def update(self, minibatch: TrainBatch) -> dict[str, float]:
        """One optimizer update of the policy on ``minibatch`` (all rows); returns verl-named metrics."""
        mb = TrainBatch.of(minibatch).only("old_logp", "advantages", "ref_logp", "rollout_is_weights")
        sums, info = self.policy.update(self._stacked(mb), self._denominator(mb))
        n = max(sums["n_tokens"], 1.0)
        return {"actor/pg_loss": sums["pg_loss"] / n, "actor/pg_clipfrac": sums["pg_clipfrac"] / n,
                "actor/pg_clipfrac_lower": sums["pg_clipfrac_lower"] / n,
                "actor/ppo_kl": sums["ppo_kl"] / n, "actor/entropy": sums["entropy"] / n,
                "actor/kl_loss": sums["kl"] / n, "actor/kept_token_frac": sums["n_kept"] / n,
                "actor/loss": info["loss"], "actor/grad_norm": info["grad_norm"], "actor/lr": info["lr"],
                "actor/skipped": float(info["skipped"])}

    def update_critic(self, minibatch: TrainBatch) -> dict[str, float]:
        """One optimizer update of the critic (clipped value loss, token mean) on ``minibatch``."""
        mb = TrainBatch.of(minibatch).only("old_values", "returns")
        denom = float(np.sum(mb.response_mask != 0))
        sums, info = self.critic.update(self._stacked(mb), denom)
        n = max(sums["n_tokens"], 1.0)
        return {"critic/vf_loss": sums["vf_loss"] / n, "critic/vf_clipfrac": sums["vf_clipfrac"] / n,
                "critic/vpred_mean": sums["vpred"] / n, "critic/grad_norm": info["grad_norm"],
                "critic/lr": info["lr"], "critic/skipped": float(info["skipped"])}

    # ---- state for checkpoints ----
    def train_state(self) -> dict[str, Any]:
        s = {"policy": self.policy.state}
        if self.critic is not None:
            s["critic"] = self.critic.state
        if self.ref_params is not None:
            s["ref_params"] = self.ref_params
        return s

    def load_train_state(self, s: dict[str, Any]) -> None:
        self.policy.state = s["policy"]
        if self.critic is not None:
            self.critic.state = s["critic"]
        if self.ref_params is not None:
            self.ref_params = s["ref_params"]

    def policy_model(self) -> nnx.Module:
        """The current policy as an nnx module (shares the learner's arrays; for export / weight sync)."""
        return self.policy.module()
