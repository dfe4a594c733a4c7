"""Where the JAX sampler's rows and KV cache live on a mesh: the ``batch`` rule of one rule set.

:class:`RowSharding` is built once per sampler from the model, the mesh and a rule set (default: the
rules active at construction, :func:`rlvr_jax.sharding.active_rules`). Rows (prompts x samples) are split
over the mesh axes of the logical ``batch`` axis that the mesh has; a KV cache leaf is constrained per
the model's ``cache_logical_axes()`` (the :class:`rlvr_jax.models.Decoder` names, e.g. ``kv_heads`` over
``tp``) or, for a model without it, on its batch axis only (found from shapes) with the other dimensions
left to the compiler. :meth:`RowSharding.context` enters the mesh and the same rules, so the model's
activation constraints and the decode kernel's ``shard_map`` traced inside follow them too.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from rlvr_jax.sharding import axis_size, logical_to_spec, mesh_axes_for, resolve_rules, use_rules


def cache_batch_axes(model):
    """Per cache leaf of ``model.init_cache``, the axis that grows with the batch size (from shapes), or None."""
    a = jax.eval_shape(lambda: model.init_cache(2, 8))
    b = jax.eval_shape(lambda: model.init_cache(3, 8))

    def axis(x, y):
        diff = [i for i, (u, v) in enumerate(zip(x.shape, y.shape)) if u != v]
        return diff[0] if len(diff) == 1 else None
    return jax.tree.map(axis, a, b)


class RowSharding:
    """Row and cache placement of a sampler (module docstring). ``mesh=None``: everything on one device."""

    def __init__(self, model, mesh: Optional[jax.sharding.Mesh] = None, rules=None):
        self.mesh = mesh
        self.rules = resolve_rules(rules)
        self.batch_axis = cache_batch_axes(model)
        names = getattr(model, "cache_logical_axes", None)
        self.cache_logical = names() if callable(names) else None
        if mesh is None:
            self.axes: tuple[str, ...] = ()
        else:
            self.axes = mesh_axes_for(mesh, "batch", rules=self.rules) or ()
        self.multiple = math.prod(mesh.shape[a] for a in self.axes) if self.axes else 1

    @property
    def _entry(self):
        return None if not self.axes else (self.axes[0] if len(self.axes) == 1 else self.axes)

    def context(self):
        """The mesh (``jax.set_mesh``) and this rule set (``use_rules``), for calls that trace the model."""
        stack = contextlib.ExitStack()
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(use_rules(self.rules))
        return stack

    def row_spec(self, ndim: int) -> PartitionSpec:
        return PartitionSpec(self._entry, *([None] * (ndim - 1)))

    def put(self, x: np.ndarray) -> jax.Array:
        """Host array with rows on axis 0 -> device array split over the row axes (global view)."""
        if self.mesh is None:
            return jnp.asarray(x)
        sharding = NamedSharding(self.mesh, self.row_spec(x.ndim))
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    def replicated(self, x: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.make_array_from_callback(x.shape, NamedSharding(self.mesh, PartitionSpec()), lambda i: x[i])

    def constrain(self, x):
        """Traced ``[rows, ...]`` array pinned to the row sharding (identity without a mesh)."""
        if self.mesh is None or not self.axes:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.row_spec(x.ndim)))

    def cache_specs(self, cache):
        """``PartitionSpec`` per cache leaf (same tree as ``cache``; arrays or shape structs)."""
        auto = self.mesh is not None and any(t == AxisType.Auto for t in self.mesh.axis_types)
        other = PartitionSpec.UNCONSTRAINED if auto else None  # explicit axes do not allow UNCONSTRAINED
        mshape = dict(self.mesh.shape) if self.mesh is not None else {}

        if self.cache_logical is not None:
            def spec(x, names):
                s = logical_to_spec(names, self.rules)
                return PartitionSpec(*[e if x.shape[i] % axis_size(mshape, e) == 0 else other
                                       for i, e in enumerate(s)])
            return jax.tree.map(spec, cache, self.cache_logical)  # names tuples sit at the cache's leaves

        def by_shape(x, axis):
            if axis is None:
                return PartitionSpec(*([other] * x.ndim))
            entries = [other] * x.ndim
            entries[axis] = self._entry
            return PartitionSpec(*entries)
        return jax.tree.map(by_shape, cache, self.batch_axis)

    def constrain_cache(self, cache):
        """Traced cache pinned to :meth:`cache_specs` (identity without a mesh)."""
        if self.mesh is None:
            return cache
        return jax.tree.map(lambda x, s: jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, s)),
                            cache, self.cache_specs(cache))
