"""Device mesh, logical-axis rules and multi-host initialisation.

Every parameter carries a ``logical_axes`` metadata tuple (one name per dimension, e.g. the q
projection kernel ``[hidden, heads*head_dim]`` has ``('embed', 'heads')``). A *rule set* maps each
logical name to a mesh axis, a tuple of mesh axes, or ``None`` (replicated). The mesh always has the
three axes ``('data', 'fsdp', 'tp')``:

* ``data``: pure data parallelism (parameters replicated),
* ``fsdp``: data parallelism with parameters/optimizer state sharded (ZeRO-3 style),
* ``tp``:   tensor parallelism over heads / MLP width / vocabulary.

Batches are sharded over ``('data', 'fsdp')`` on their leading axis. Activations are constrained with
:func:`with_logical_constraint`, a no-op when no mesh is active (``jax.set_mesh``).
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tp")

Rules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tp"),
    ("embed", "fsdp"),
    ("mlp", "tp"),
    ("heads", "tp"),
    ("kv_heads", "tp"),
    ("norm", None),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tp"),
    ("head_dim", None),
)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds a ``('data', 'fsdp', 'tp')`` mesh from e.g. ``{"data": 1, "fsdp": -1, "tp": 1}``.

    At most one axis may be ``-1`` (it takes the remaining devices); missing axes are 1. Raises a
    ``ValueError`` naming the sizes when the product does not equal the number of devices.
    """
    shape = dict(shape or {"data": 1, "fsdp": -1, "tp": 1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    auto = [a for a, s in sizes.items() if s == -1]
    if len(auto) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ValueError(f"mesh axis {a!r} must be a positive size or -1, got {s}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if auto:
        if n % fixed:
            raise ValueError(f"mesh {shape}: {n} devices are not divisible by the fixed axes' product {fixed}")
        sizes[auto[0]] = n // fixed
    if math.prod(sizes.values()) != n:
        raise ValueError(f"mesh {sizes} has {math.prod(sizes.values())} positions but there are {n} devices")
    axis_shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        dev_array = mesh_utils.create_device_mesh(axis_shape, devices=devices)
    except Exception:  # non-TPU topologies the helper cannot lay out: plain row-major order
        dev_array = np.asarray(devices, dtype=object).reshape(axis_shape)
    return Mesh(dev_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _rules_dict(rules: Rules | Mapping[str, Any] | None) -> dict[str, Any]:
    if rules is None:
        rules = DEFAULT_RULES
    return dict(rules.items() if isinstance(rules, Mapping) else rules)


def logical_to_spec(logical_axes: Sequence[str | None], rules=None) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec``; unknown names raise, ``None`` stays replicated.

    A mesh axis already used by an earlier dimension is not reused (it would be an invalid spec).
    """
    rd = _rules_dict(rules)
    used: set[str] = set()
    out = []
    for name in logical_axes:
        if name is None:
            out.append(None)
            continue
        if name not in rd:
            raise KeyError(f"logical axis {name!r} has no sharding rule; rules cover {sorted(rd)}")
        target = rd[name]
        axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
    return PartitionSpec(*out)


def _axis_size(mesh_shape: Mapping[str, int], entry) -> int:
    if entry is None:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh_shape[a] for a in names)


def check_divisible(shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, what: str) -> None:
    """Raises a ``ValueError`` naming ``what`` if a sharded dimension is not divisible by its mesh axes."""
    mshape = dict(mesh.shape)
    for dim, (size, entry) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        k = _axis_size(mshape, entry)
        if size % k:
            raise ValueError(f"{what}: dimension {dim} of shape {tuple(shape)} has size {size}, not divisible "
                             f"by mesh axes {entry} of total size {k} (mesh {mshape})")


def param_specs(model_or_state, rules=None):
    """``PartitionSpec`` for every ``nnx.Param`` of a model (a pytree shaped like ``nnx.state(model)``)."""
    from flax import nnx

    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)

    def spec(v):
        axes = v.get_metadata().get("logical_axes") if isinstance(v, nnx.Variable) else None
        if axes is None:
            return PartitionSpec()
        return logical_to_spec(axes, rules)

    return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_shardings(model, mesh: Mesh, rules=None):
    """``NamedSharding`` per parameter (same tree as ``nnx.state(model)``), checking divisibility."""
    from flax import nnx

    state = nnx.state(model)
    specs = param_specs(state, rules)
    flat_specs = dict(nnx.to_flat_state(specs))
    for path, v in nnx.to_flat_state(state):
        s = flat_specs[path]
        s = s.get_value() if isinstance(s, nnx.Variable) else s
        check_divisible(v.shape, s, mesh, "parameter " + ".".join(map(str, path)))
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_model(model, mesh: Mesh, rules=None):
    """Moves every parameter of ``model`` onto ``mesh`` per the rules (in place); returns the model."""
    from flax import nnx

    shardings = param_shardings(model, mesh, rules)
    state = nnx.state(model)
    # The shardings tree is the prefix: it has a NamedSharding where the state has an nnx.Variable.
    new_state = jax.tree.map(lambda s, v: jax.device_put(v, s), shardings, state)
    nnx.update(model, new_state)
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2, rules=None) -> NamedSharding:
    """Sharding of a batch array ``[B, ...]``: leading axis over the ``batch`` rule (data x fsdp)."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


_ACTIVE_RULES: list[Rules] = []


class use_rules:
    """Context manager selecting the rule set used by :func:`with_logical_constraint`."""

    def __init__(self, rules):
        self.rules = tuple(_rules_dict(rules).items())

    def __enter__(self):
        _ACTIVE_RULES.append(self.rules)
        return self

    def __exit__(self, *exc):
        _ACTIVE_RULES.pop()


def with_logical_constraint(x, logical_axes: Sequence[str | None]):
    """``with_sharding_constraint`` by logical names under the active mesh; identity without a mesh.

    Dimensions that the mapped mesh axes do not divide are left unconstrained.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    spec = logical_to_spec(logical_axes, _ACTIVE_RULES[-1] if _ACTIVE_RULES else None)
    mshape = dict(mesh.shape)
    entries = [e if x.shape[i] % _axis_size(mshape, e) == 0 else None for i, e in enumerate(spec)]
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*entries))


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> bool:
    """Initialises multi-host JAX from arguments or the environment; returns True if it did.

    Arguments win over the variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``. With none of them set, nothing happens (single process) unless ``auto`` is
    true, which calls ``jax.distributed.initialize()`` without arguments so that JAX detects the
    cluster itself (Cloud TPU pods, SLURM, Open MPI). Calling it again after success is a no-op.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator is None and num_processes is None and process_id is None:
        if not auto:
            return False
        jax.distributed.initialize()
        return True
    if coordinator is None or num_processes is None or process_id is None:
        raise ValueError("multi-host init needs coordinator, num_processes and process_id together; got "
                         f"coordinator={coordinator!r}, num_processes={num_processes!r}, process_id={process_id!r}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} out of range for num_processes {num_processes}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def create_sharded(ctor, mesh: Mesh, rules=None):
    """Builds ``ctor()`` (an nnx module, e.g. ``lambda: Decoder(cfg, nnx.Rngs(0))``) directly sharded.

    Parameters are initialised inside ``jit`` with per-parameter output shardings, so no device ever
    holds the full unsharded model (unlike ``shard_model(ctor(), mesh)``).
    """
    from flax import nnx

    abstract = nnx.eval_shape(ctor)
    graphdef, _ = nnx.split(abstract)
    shardings = param_shardings(abstract, mesh, rules)
    state = jax.jit(lambda: nnx.state(ctor()), out_shardings=shardings)()
    return nnx.merge(graphdef, state)
