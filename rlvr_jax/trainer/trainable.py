"""One optimised module (policy or critic) with exact accumulated AdamW updates, and the optimizer.

Exact accumulation. An update over a mini-batch of micro-batches m = 1..M minimises
``L = sum_m loss_sum_m / D`` with ``D = sum_m denom_m``. D depends only on the masks (``loss_denominator``),
so it is computed first and every micro-batch contributes ``grad(loss_sum_m) / D``; the summed gradient equals
the gradient of one big batch (up to float32 summation order). Then: global-norm of the gradient (reported as
``actor/grad_norm``, before clipping), clipping, AdamW. A non-finite loss or gradient norm skips the update
(parameters and optimizer state unchanged) and is counted.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

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
        self.retrace()

    def retrace(self) -> None:
        """A fresh jitted update: the next call traces ``loss_fn`` again (after what it reads has changed,
        e.g. the learner's objective at a phase switch of ``algo.schedule``)."""
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def update_impl(state, stacked, inv_denom):  # a new function object: jit's trace caches cannot match it
            return self._update_impl(state, stacked, inv_denom)

        self._update = jax.jit(update_impl, donate_argnums=(0,),
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

    def update(self, stacked, denom: float) -> tuple[dict, dict]:
        """One optimizer update over stacked device micro-batches (a pytree of ``[M, micro, ...]`` arrays) with
        global denominator ``denom``.
        Returns ``(metric_sums, info)`` as host floats; info has grad_norm, lr, skipped, loss."""
        inv = jnp.float32(1.0 / max(float(denom), 1.0))
        with jax.set_mesh(self.mesh):
            self.state, info, metrics = self._update(self.state, stacked, inv)
        return ({k: float(v) for k, v in metrics.items()}, {k: np.asarray(v).item() for k, v in info.items()})
