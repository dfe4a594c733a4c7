"""The learner: jitted, sharded policy (and critic) updates with exact micro-batch gradient accumulation.

Sequence layout. A batch of N sequences is ``prompt_ids [N, P]`` (left-padded, ``prompt_mask``) followed by
``response_ids [N, R]`` (right-padded, ``response_mask``); P and R are rounded up to multiples of
``length_bucket`` so that only a few shapes are ever compiled. Response token j sits at position P + j and is
predicted by the hidden state at P + j - 1, so

    logp[n, j] = log pi(response_ids[n, j] | prompt, response[:j]),   entropy[n, j] = H(pi(. | same prefix)),

computed by ``rlvr_jax.models.logprobs.token_logprobs`` (chunked, float32, raw temperature-1 distribution =
the rollout engines' log-prob convention).

Exact accumulation. An update over a mini-batch of micro-batches m = 1..M minimises
``L = sum_m loss_sum_m / D`` with ``D = sum_m denom_m``. D depends only on the masks (``loss_denominator``),
so it is computed first and every micro-batch contributes ``grad(loss_sum_m) / D``; the summed gradient equals
the gradient of one big batch (up to float32 summation order). Then: global-norm of the gradient (reported as
``actor/grad_norm``, before clipping), clipping, AdamW. A non-finite loss or gradient norm skips the update
(parameters and optimizer state unchanged) and is counted.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlvr_jax.models.logprobs import token_logprobs
from rlvr_jax.objectives import get_objective, hparams_from_config, loss_denominator
from rlvr_jax.objectives.terms import IS_WEIGHT_KEY
from rlvr_jax.objectives.types import ObjectiveHParams
from jax.sharding import NamedSharding, PartitionSpec

from rlvr_jax.sharding import batch_sharding

Batch = dict[str, np.ndarray]


# ------------------------------------------------------------------------------------------------
# Host-side batch packing
# ------------------------------------------------------------------------------------------------
def round_up(x: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(x / multiple)) * multiple)


def pack_sequences(prompts, responses, length_bucket: int, pad_id: int = 0) -> Batch:
    """Left-pads prompts and right-pads responses to bucketed lengths (numpy; see module docstring)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    n = len(prompts)
    P = round_up(max((len(p) for p in prompts), default=1), length_bucket)
    R = round_up(max((len(r) for r in responses), default=1), length_bucket)
    out = {"prompt_ids": np.full((n, P), pad_id, np.int32), "prompt_mask": np.zeros((n, P), np.int32),
           "response_ids": np.full((n, R), pad_id, np.int32), "response_mask": np.zeros((n, R), np.float32)}
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        out["prompt_ids"][i, P - len(p):] = p
        out["prompt_mask"][i, P - len(p):] = 1
        out["response_ids"][i, :len(r)] = r
        out["response_mask"][i, :len(r)] = 1
    return out


def pad_rows(batch: Batch, multiple: int) -> Batch:
    """Appends all-zero rows (masks 0: they contribute nothing) so the row count divides ``multiple``."""
    n = next(iter(batch.values())).shape[0]
    extra = (-n) % multiple
    if extra == 0:
        return batch
    out = {}
    for k, v in batch.items():
        fill = np.zeros((extra,) + v.shape[1:], v.dtype)
        if k == "prompt_mask":  # keep one real (pad-id) prompt token so attention rows are never empty
            fill[:, -1] = 1
        out[k] = np.concatenate([v, fill], axis=0)
    return out


def take_rows(batch: Batch, idx) -> Batch:
    return {k: v[idx] for k, v in batch.items()}


def micro_batches(batch: Batch, micro_batch_size: int) -> list[Batch]:
    batch = pad_rows(batch, micro_batch_size)
    n = next(iter(batch.values())).shape[0]
    return [{k: v[s:s + micro_batch_size] for k, v in batch.items()} for s in range(0, n, micro_batch_size)]


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


def sequence_logprobs(model, mb: Batch, chunk_size: int):
    """``(logp [N, R], entropy [N, R])`` of the response tokens under ``model`` (float32).

    The output projection's matmuls (forward and backward) run in the model's compute dtype with float32
    accumulation, as in the samplers, and the gradient of a float32 master ``[H, V]`` matrix is summed in
    float32 (see ``rlvr_jax.models.logprobs``).
    """
    h = response_hidden(model, mb["prompt_ids"], mb["prompt_mask"], mb["response_ids"], mb["response_mask"])
    return token_logprobs(h, model.unembed_matrix(), mb["response_ids"], chunk_size=chunk_size,
                          compute_dtype=model.config.dtype)


class ValueModel(nnx.Module):
    """PPO critic: a decoder backbone (initialised from the policy) and a linear value head on its hidden
    states; ``V[n, j]`` is the value of the state just before response token j."""

    def __init__(self, backbone, rngs: nnx.Rngs):
        self.backbone = backbone
        h = backbone.config.hidden_size
        self.head = nnx.Linear(h, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def values(self, mb: Batch):
        h = response_hidden(self.backbone, mb["prompt_ids"], mb["prompt_mask"], mb["response_ids"],
                            mb["response_mask"])
        return self.head(h.astype(jnp.float32))[..., 0]


def value_loss(values, old_values, returns, mask, clip: float):
    """verl's clipped value loss, token sums: 0.5 max((V - G)^2, (clip(V, V_old +- c) - G)^2)."""
    m = mask != 0
    vc = old_values + jnp.clip(values - old_values, -clip, clip)
    per_tok = 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(vc - returns))
    per_tok = jnp.where(m, per_tok, 0.0)
    clipped = jnp.where(m, jnp.square(vc - returns) > jnp.square(values - returns), False)
    metrics = {"vf_loss": jax.lax.stop_gradient(jnp.sum(per_tok)),
               "vf_clipfrac": jnp.sum(clipped).astype(jnp.float32),
               "vpred": jax.lax.stop_gradient(jnp.sum(jnp.where(m, values, 0.0))),
               "n_tokens": jnp.sum(m).astype(jnp.float32)}
    return jnp.sum(per_tok), metrics


# ------------------------------------------------------------------------------------------------
# Optimizer
# ------------------------------------------------------------------------------------------------
def make_schedule(lr: float, warmup_steps: int, total_updates: int, kind: str = "constant",
                  min_lr_ratio: float = 0.0) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps`` updates, then constant or cosine to ``min_lr_ratio*lr``."""
    if kind == "constant":
        after = optax.constant_schedule(lr)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(lr, max(1, total_updates - warmup_steps), alpha=min_lr_ratio)
    else:
        raise ValueError(f"unknown lr schedule {kind!r}; expected constant or cosine")
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), after], [warmup_steps])


def make_optimizer(schedule: optax.Schedule, weight_decay: float, b1: float, b2: float, eps: float,
                   grad_clip: float, mu_dtype: str | None = None) -> optax.GradientTransformation:
    """Global-norm clipping (``grad_clip <= 0`` disables it) followed by AdamW.

    ``mu_dtype`` stores Adam's first moment in that dtype (e.g. ``"bfloat16"``: 2 bytes less to read and
    write per parameter and update, and 2 bytes less memory); the second moment keeps the parameters' dtype.
    """
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                             mu_dtype=None if mu_dtype in (None, "", "float32") else jnp.dtype(mu_dtype)))
    return optax.chain(*parts)


# ------------------------------------------------------------------------------------------------
# A trainable module: params + optimizer state + jitted accumulate / apply
# ------------------------------------------------------------------------------------------------
def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _mesh_sharding(x, mesh):
    """``x``'s sharding if it is a NamedSharding on ``mesh``, else replicated on ``mesh``."""
    sh = getattr(x, "sharding", None)
    if isinstance(sh, NamedSharding) and sh.mesh == mesh:
        return sh
    return NamedSharding(mesh, PartitionSpec())


class Trainable:
    """One optimised module (policy or critic). ``state = {'params', 'opt_state', 'step', 'skipped'}`` is a
    pytree of arrays (checkpointed as is); ``loss_fn(module, micro_batch) -> (loss_sum, metric_sums)``.

    :meth:`update` is one jitted function per micro-batch shape: a ``lax.scan`` over the stacked
    micro-batches ``[M, micro, ...]`` accumulating ``grad(loss_sum_m) / D``, then clip + AdamW, skipped when
    the loss or the gradient norm is not finite.
    """

    def __init__(self, module: nnx.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
                 loss_fn: Callable, mesh):
        self.graphdef, params, self.rest = nnx.split(module, nnx.Param, ...)
        self.tx, self.schedule, self.loss_fn, self.mesh = tx, schedule, loss_fn, mesh
        with jax.set_mesh(mesh):
            opt_state = jax.jit(tx.init)(params)
        state = {"params": params, "opt_state": opt_state, "step": jnp.zeros((), jnp.int32),
                 "skipped": jnp.zeros((), jnp.int32)}
        # Pin every leaf to a sharding on the mesh, and keep it across updates: one compile per shape.
        self.state_shardings = jax.tree.map(lambda x: _mesh_sharding(x, mesh), state)
        self.state = jax.device_put(state, self.state_shardings)
        replicated = NamedSharding(mesh, PartitionSpec())
        self._update = jax.jit(self._update_impl, donate_argnums=(0,),
                               out_shardings=(self.state_shardings, replicated, replicated))

    def module(self, params=None):
        return nnx.merge(self.graphdef, self.state["params"] if params is None else params, self.rest)

    def _update_impl(self, state, stacked, inv_denom):
        params = state["params"]

        def scalar(p, mb):
            loss_sum, metrics = self.loss_fn(nnx.merge(self.graphdef, p, self.rest), mb)
            return loss_sum * inv_denom, (loss_sum, metrics)

        grad_fn = jax.grad(scalar, has_aux=True)

        def body(acc, mb):
            grads, (loss_sum, metrics) = grad_fn(params, mb)
            return jax.tree.map(jnp.add, acc, (grads, loss_sum, metrics)), None

        first = jax.tree.map(lambda x: x[0], stacked)
        if jax.tree.leaves(stacked)[0].shape[0] == 1:
            # One micro-batch: no accumulator, which saves a float32 copy of the parameters in device memory.
            grads, (loss_sum, metrics) = grad_fn(params, first)
        else:
            _, (_, metric_shapes) = jax.eval_shape(scalar, params, first)
            zeros = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
                     jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), metric_shapes))
            (grads, loss_sum, metrics), _ = jax.lax.scan(body, zeros, stacked)
        loss = loss_sum * inv_denom
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
        updates, new_opt = self.tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        new_state = {"params": pick(new_params, params), "opt_state": pick(new_opt, state["opt_state"]),
                     "step": state["step"] + ok.astype(jnp.int32),
                     "skipped": state["skipped"] + (~ok).astype(jnp.int32)}
        info = {"grad_norm": grad_norm, "lr": jnp.asarray(self.schedule(state["step"]), jnp.float32),
                "skipped": ~ok, "loss": loss}
        return new_state, info, metrics

    def update(self, stacked: dict, denom: float) -> tuple[dict, dict]:
        """One optimizer update over stacked device micro-batches with global denominator ``denom``.
        Returns ``(metric_sums, info)`` as host floats; info has grad_norm, lr, skipped, loss."""
        inv = jnp.float32(1.0 / max(float(denom), 1.0))
        with jax.set_mesh(self.mesh):
            self.state, info, metrics = self._update(self.state, stacked, inv)
        return ({k: float(v) for k, v in metrics.items()}, {k: np.asarray(v).item() for k, v in info.items()})


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
                   mu_dtype=str(o.mu_dtype))


def _to_host(x) -> np.ndarray:
    """A (possibly multi-host sharded) array as a full numpy array on every process."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


class Learner:
    """Policy (+ optional frozen reference and PPO critic) on a mesh.

    ``compute_logprobs(batch)`` gives old-policy / reference log-probs; ``update(minibatch)`` does one exact
    accumulated optimizer step. Batches are host numpy dicts from :func:`pack_sequences` plus per-token
    ``old_logp``, ``advantages`` (and ``ref_logp``; ``old_values``/``returns`` for the critic), identical on
    every process; they are placed on the mesh sharded over the batch axis.
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
    def _policy_loss(self, model, mb):
        logp, ent = sequence_logprobs(model, mb, self.opts.logprob_chunk_size)
        batch = {"logp": logp, "old_logp": mb["old_logp"], "mask": mb["response_mask"],
                 "advantages": mb["advantages"], "entropy": ent}
        for key in ("ref_logp", IS_WEIGHT_KEY):
            if key in mb:
                batch[key] = mb[key]
        out = self.objective(batch, self.opts.hp)
        return out.loss_sum, out.metrics

    def _critic_loss(self, vm, mb):
        v = vm.values(mb)
        return value_loss(v, mb["old_values"], mb["returns"], mb["response_mask"], self.opts.value_clip)

    def _logprob_impl(self, params, mb):
        return sequence_logprobs(self.policy.module(params), mb, self.opts.logprob_chunk_size)

    def _value_impl(self, params, mb):
        return self.critic.module(params).values(mb)

    # ---- placement ----
    def put(self, mb: Batch) -> dict:
        """Places a host micro-batch on the mesh (batch axis over data x fsdp), multi-host safe."""
        out = {}
        for k, v in mb.items():
            sh = batch_sharding(self.mesh, v.ndim, self.rules)
            out[k] = jax.make_array_from_callback(v.shape, sh, lambda idx, v=v: v[idx])
        return out

    def _micro(self, batch: Batch, keys) -> list[dict]:
        return [self.put({k: mb[k] for k in keys if k in mb})
                for mb in micro_batches(batch, self.opts.micro_batch_size)]

    def _stacked(self, batch: Batch, keys) -> dict:
        """Micro-batches stacked to ``[M, micro, ...]`` on the mesh (micro axis sharded over the batch rule)."""
        mbs = micro_batches({k: batch[k] for k in keys if k in batch}, self.opts.micro_batch_size)
        out = {}
        for k in mbs[0]:
            v = np.stack([mb[k] for mb in mbs])
            spec = batch_sharding(self.mesh, v.ndim - 1, self.rules).spec
            sh = NamedSharding(self.mesh, PartitionSpec(None, *spec))
            out[k] = jax.make_array_from_callback(v.shape, sh, lambda idx, v=v: v[idx])
        return out

    # ---- forward-only passes ----
    def _forward_all(self, fn, params, batch: Batch):
        n = batch["prompt_ids"].shape[0]
        outs = []
        keys = ("prompt_ids", "prompt_mask", "response_ids", "response_mask")
        with jax.set_mesh(self.mesh):
            for mb in self._micro(batch, keys):
                outs.append(fn(params, mb))
        return outs, n

    def compute_logprobs(self, batch: Batch, reference: bool = False, params=None) -> tuple[np.ndarray, np.ndarray]:
        """``(logp, entropy)`` ``[N, R]`` numpy of the current (or reference, or the given ``params``') policy; 0 at
        padding."""
        if params is None:
            params = self.ref_params if reference else self.policy.state["params"]
        if params is None:
            raise ValueError("compute_logprobs(reference=True) without a reference model (algo.use_reference)")
        outs, n = self._forward_all(self._logprob_fn, params, batch)
        logp = np.concatenate([_to_host(o[0]) for o in outs])[:n]
        ent = np.concatenate([_to_host(o[1]) for o in outs])[:n]
        m = batch["response_mask"] != 0
        return np.where(m, logp, 0.0).astype(np.float32), np.where(m, ent, 0.0).astype(np.float32)

    def compute_values(self, batch: Batch) -> np.ndarray:
        outs, n = self._forward_all(self._value_fn, self.critic.state["params"], batch)
        v = np.concatenate([_to_host(o) for o in outs])[:n]
        return np.where(batch["response_mask"] != 0, v, 0.0).astype(np.float32)

    # ---- updates ----
    def _denominator(self, batch: Batch) -> float:
        """The global loss denominator of a mini-batch, from its mask alone (exact accumulation)."""
        return float(loss_denominator(batch["response_mask"], self.opts.hp.agg_mode, self.opts.hp.agg_max_len))

    def update(self, minibatch: Batch) -> dict[str, float]:
        """One optimizer update of the policy on ``minibatch`` (all rows); returns verl-named metrics."""
        keys = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "old_logp", "advantages", "ref_logp",
                IS_WEIGHT_KEY)
        sums, info = self.policy.update(self._stacked(minibatch, keys), self._denominator(minibatch))
        n = max(sums["n_tokens"], 1.0)
        return {"actor/pg_loss": sums["pg_loss"] / n, "actor/pg_clipfrac": sums["pg_clipfrac"] / n,
                "actor/pg_clipfrac_lower": sums["pg_clipfrac_lower"] / n,
                "actor/ppo_kl": sums["ppo_kl"] / n, "actor/entropy": sums["entropy"] / n,
                "actor/kl_loss": sums["kl"] / n, "actor/kept_token_frac": sums["n_kept"] / n,
                "actor/loss": info["loss"], "actor/grad_norm": info["grad_norm"], "actor/lr": info["lr"],
                "actor/skipped": float(info["skipped"])}

    def update_critic(self, minibatch: Batch) -> dict[str, float]:
        keys = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "old_values", "returns")
        denom = float(np.sum(minibatch["response_mask"] != 0))
        sums, info = self.critic.update(self._stacked(minibatch, keys), denom)
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
