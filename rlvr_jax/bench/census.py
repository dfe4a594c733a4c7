"""Matmul census of a traced program: FLOPs per operand-dtype pair, counted from its jaxpr.

A ``dot_general`` with output shape ``O`` and contracting sizes ``C`` costs ``2 * prod(O) * prod(C)`` FLOPs.
Sub-jaxprs are walked recursively (``jit``, ``remat``, ``custom_vjp``...), and a ``scan`` body counts
``length`` times; ``while`` bodies have no static trip count and are reported separately, counted once.
Tracing needs only shapes, so the census of a 4B-parameter training step runs on a laptop CPU in seconds
(parameters given as ``jax.ShapeDtypeStruct``). It shows where float32 matmuls remain in a bf16 step and
how many matmul FLOPs rematerialisation adds over the model-FLOPs formula.
"""
from __future__ import annotations

import collections
import math

import jax


def _subjaxprs(params):
    from jax.extend import core as jcore
    for p in params.values():
        for sub in (p if isinstance(p, (tuple, list)) else [p]):
            if isinstance(sub, jcore.ClosedJaxpr):
                yield sub.jaxpr
            elif isinstance(sub, jcore.Jaxpr):
                yield sub


def dot_products(closed_jaxpr):
    """Yields ``(lhs_dtype, rhs_dtype, out_shape, flops, in_while)`` for every ``dot_general`` of a jaxpr,
    sub-jaxprs included; ``flops`` already multiplied by the trip counts of enclosing ``scan`` loops."""

    def walk(jaxpr, mult: float, in_while: bool):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                a, b = (v.aval for v in eqn.invars)
                (ca, _), _ = eqn.params["dimension_numbers"]
                out_shape = tuple(eqn.outvars[0].aval.shape)
                flops = 2.0 * math.prod(out_shape) * math.prod(a.shape[d] for d in ca) * mult
                yield str(a.dtype), str(b.dtype), out_shape, flops, in_while
                continue
            sub_mult = mult * eqn.params["length"] if name == "scan" else mult
            for sub in _subjaxprs(eqn.params):
                yield from walk(sub, sub_mult, in_while or name == "while")

    yield from walk(closed_jaxpr.jaxpr, 1.0, False)


def matmul_census(closed_jaxpr) -> dict:
    """``{"by_dtype": {"bfloat16 x bfloat16": flops, ...}, "total": flops, "in_while": flops, "count": n}``."""
    by_dtype: dict[str, float] = collections.defaultdict(float)
    totals = {"total": 0.0, "in_while": 0.0, "count": 0}
    for lhs, rhs, _, flops, in_while in dot_products(closed_jaxpr):
        by_dtype[f"{lhs} x {rhs}"] += flops
        totals["total"] += flops
        totals["count"] += 1
        if in_while:
            totals["in_while"] += flops
    return {"by_dtype": dict(by_dtype), **totals}


def learner_step_census(preset: str, batch: int, seq_len: int, prompt_len: int, remat: str,
                        logprob_chunk_size: int, objective: str = "grpo") -> dict:
    """Census of the gradient of the learner's policy loss at the preset's real shapes (abstract: no
    parameter is allocated). Float32 master parameters, bfloat16 compute, as ``bench_learner`` runs it, traced
    as for a GPU."""
    import jax.numpy as jnp
    from flax import nnx

    from rlvr_jax.bench import flops as flops_mod
    from rlvr_jax.trainer.learner import sequence_logprobs
    from rlvr_jax.models import Decoder, get_preset
    from rlvr_jax.models.precision import traced_for
    from rlvr_jax.objectives import get_objective
    from rlvr_jax.objectives.types import ObjectiveHParams

    cfg = get_preset(preset, dtype="bfloat16", param_dtype="float32", remat=remat)
    model = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    resp = seq_len - prompt_len
    sds = jax.ShapeDtypeStruct
    mb = {"prompt_ids": sds((batch, prompt_len), jnp.int32), "prompt_mask": sds((batch, prompt_len), jnp.int32),
          "response_ids": sds((batch, resp), jnp.int32), "response_mask": sds((batch, resp), jnp.float32),
          "old_logp": sds((batch, resp), jnp.float32), "advantages": sds((batch, resp), jnp.float32)}
    objective = get_objective(objective)

    def loss(p, mb):
        m = nnx.merge(graphdef, p, rest)
        logp, ent = sequence_logprobs(m, mb, logprob_chunk_size)
        out = objective({"logp": logp, "old_logp": mb["old_logp"], "mask": mb["response_mask"],
                         "advantages": mb["advantages"], "entropy": ent}, ObjectiveHParams())
        return out.loss_sum

    with traced_for("gpu"):  # the accelerator's program (XLA:CPU widens bf16 operands: models.precision)
        census = matmul_census(jax.make_jaxpr(jax.grad(loss))(params, mb))
    model_flops = flops_mod.train_flops_per_token(cfg, seq_len) * batch * seq_len
    f32 = sum(v for k, v in census["by_dtype"].items() if "float32" in k)
    return {"preset": preset, "batch": batch, "seq_len": seq_len, "remat": remat, **census,
            "model_flops": model_flops, "traced_over_model_flops": census["total"] / model_flops,
            "float32_operand_share": f32 / census["total"] if census["total"] else 0.0}
