"""Device mesh, the logical-axis rule set, host gathers and multi-host initialisation.

Every parameter carries a ``logical_axes`` metadata tuple (one name per dimension, e.g. the q
projection kernel ``[hidden, heads*head_dim]`` has ``('embed', 'heads')``). A *rule set* maps each
logical name to a mesh axis, a tuple of mesh axes, or ``None`` (replicated). The mesh always has the
three axes ``('data', 'fsdp', 'tp')``:

* ``data``: pure data parallelism (parameters replicated),
* ``fsdp``: data parallelism with parameters/optimizer state sharded (ZeRO-3 style),
* ``tp``:   tensor parallelism over heads / MLP width / vocabulary.

One rule set governs everything: parameters (:func:`param_shardings`, :func:`create_sharded`),
batches (:func:`batch_sharding`, the ``batch`` name), activations (:func:`with_logical_constraint`),
the JAX sampler's rows and its KV cache (:mod:`rlvr_jax.rollout.rows`) and the decode-attention kernel's
``shard_map``. The rules in force are those of the innermost :func:`use_rules` block
(:func:`active_rules`), else :data:`DEFAULT_RULES`; every function taking ``rules=None`` uses them.
A custom rule set (config ``mesh.rules``, see :func:`config_rules`) lists only the names it changes; the
others keep their default.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Mapping, Sequence

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


# ---------------------------------------------------------------------------------------------
# Mesh
# ---------------------------------------------------------------------------------------------
def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """``{"data": d, "fsdp": f, "tp": t}`` for ``num_devices``: the single -1 axis takes the remaining
    devices, missing axes are 1. The one mesh-shape resolver (:func:`make_mesh`, and through
    ``rlvr_jax.config.resolve_mesh_shape`` the config validation, which names the field); a ``ValueError`` for
    unknown axes, bad sizes or a product that is not ``num_devices``."""
    given = {str(k): int(v) for k, v in dict(shape).items()}
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}")
    sizes = {a: given.get(a, 1) for a in MESH_AXES}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ValueError(f"at most one axis may be -1, got {given}")
    for k, v in sizes.items():
        if v == 0 or v < -1:
            raise ValueError(f"axis {k!r} has size {v}; sizes are >= 1 or -1")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(f"{given}: fixed axes (product {fixed}) do not divide the {num_devices} devices")
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"{given} has {fixed} devices but {num_devices} are available")
    return sizes


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds a ``('data', 'fsdp', 'tp')`` mesh from e.g. ``{"data": 1, "fsdp": -1, "tp": 1}``.

    The sizes are resolved by :func:`resolve_mesh_shape` (at most one axis ``-1``, missing axes 1, the product
    must equal the number of devices; a ``ValueError`` naming the sizes otherwise).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape or {"data": 1, "fsdp": -1, "tp": 1}, len(devices))
    axis_shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        dev_array = mesh_utils.create_device_mesh(axis_shape, devices=devices)
    except Exception:  # non-TPU topologies the helper cannot lay out: plain row-major order
        dev_array = np.asarray(devices, dtype=object).reshape(axis_shape)
    return Mesh(dev_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


# ---------------------------------------------------------------------------------------------
# Rule sets
# ---------------------------------------------------------------------------------------------
_ACTIVE: list[Rules] = []  # process-wide stack (threads started inside a use_rules block see it too)


def _target(name: str, target) -> Any:
    if target is None or target == ():
        return None
    axes = (target,) if isinstance(target, str) else tuple(target)
    bad = [a for a in axes if a not in MESH_AXES]
    if bad or not axes:
        raise ValueError(f"sharding rule {name!r} -> {target!r}: mesh axes must be among {MESH_AXES} or None")
    return axes[0] if len(axes) == 1 else axes


def resolve_rules(rules: Rules | Mapping[str, Any] | None = None) -> Rules:
    """A complete rule set: ``None`` -> :func:`active_rules`; else the given entries over the defaults.

    Entries are ``(logical_name, target)`` pairs or a mapping; a target is a mesh axis, a tuple of mesh
    axes, or ``None``. Raises ``ValueError`` naming an entry that is malformed or names no mesh axis.
    """
    if rules is None:
        return active_rules()
    pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    merged = dict(DEFAULT_RULES)
    for entry in pairs:
        if isinstance(entry, str) or len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"sharding rule {entry!r} is not a (logical_name, mesh_axes_or_None) pair")
        name, target = entry
        merged[name] = _target(name, target)
    return tuple(merged.items())


def active_rules() -> Rules:
    """The rule set of the innermost :func:`use_rules` block, else :data:`DEFAULT_RULES`."""
    return _ACTIVE[-1] if _ACTIVE else DEFAULT_RULES


@contextlib.contextmanager
def use_rules(rules: Rules | Mapping[str, Any] | None) -> Iterator[Rules]:
    """Makes ``rules`` (resolved by :func:`resolve_rules`) the active rule set inside the block.

    Parameter and batch shardings built with ``rules=None``, activation constraints traced inside the
    block, the sampler's rows and cache, and the decode kernel all use it. Yields the resolved rules.
    """
    resolved = resolve_rules(rules)
    _ACTIVE.append(resolved)
    try:
        yield resolved
    finally:
        _ACTIVE.pop()


def config_rules(cfg) -> Rules:
    """The rule set of a training config: ``cfg.mesh.rules`` entries over the defaults (``()`` = defaults)."""
    return resolve_rules(tuple(tuple(r) for r in (cfg.mesh.rules or ())))


def logical_to_spec(logical_axes: Sequence[str | None], rules=None) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec``; unknown names raise, ``None`` stays replicated.

    ``rules=None`` uses the active rules. A mesh axis already used by an earlier dimension is not reused
    (it would be an invalid spec).
    """
    rd = dict(resolve_rules(rules))
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


def axis_size(mesh_shape: Mapping[str, int], entry) -> int:
    """Number of shards of one ``PartitionSpec`` entry (a mesh axis, a tuple of them, or None)."""
    if entry is None or entry is PartitionSpec.UNCONSTRAINED:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh_shape[a] for a in names)


def mesh_axes_for(mesh, logical: str, size: int | None = None, rules=None) -> tuple[str, ...] | None:
    """The mesh axes a logical name maps to that ``mesh`` has, or None (replicated).

    With ``size``, None also when those axes do not divide it (e.g. ``batch`` rows of the sampler, kv
    heads of the decode kernel).
    """
    entry = logical_to_spec((logical,), rules)[0]
    if entry is None:
        return None
    names = tuple(a for a in ((entry,) if isinstance(entry, str) else entry) if a in mesh.axis_names)
    if not names or (size is not None and size % axis_size(dict(mesh.shape), names)):
        return None
    return names


def check_divisible(shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, what: str) -> None:
    """Raises a ``ValueError`` naming ``what`` if a sharded dimension is not divisible by its mesh axes."""
    mshape = dict(mesh.shape)
    for dim, (size, entry) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        k = axis_size(mshape, entry)
        if size % k:
            raise ValueError(f"{what}: dimension {dim} of shape {tuple(shape)} has size {size}, not divisible "
                             f"by mesh axes {entry} of total size {k} (mesh {mshape})")


# ---------------------------------------------------------------------------------------------
# Parameters, batches, activations
# ---------------------------------------------------------------------------------------------
def param_specs(model_or_state, rules=None):
    """``PartitionSpec`` for every ``nnx.Param`` of a model (a pytree shaped like ``nnx.state(model)``)."""
    from flax import nnx

    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
    rules = resolve_rules(rules)

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
    """Moves every parameter of an existing ``model`` onto ``mesh`` per the rules (in place); returns it.

    To build a model, prefer :func:`create_sharded` (no device ever holds the whole model).
    """
    from flax import nnx

    shardings = param_shardings(model, mesh, rules)
    state = nnx.state(model)
    # The shardings tree is the prefix: it has a NamedSharding where the state has an nnx.Variable.
    new_state = jax.tree.map(lambda s, v: jax.device_put(v, s), shardings, state)
    nnx.update(model, new_state)
    return model


def create_sharded(ctor, mesh: Mesh, rules=None):
    """Builds ``ctor()`` (an nnx module, e.g. ``lambda: Decoder(cfg, nnx.Rngs(0))``) directly sharded.

    The module is traced abstractly (``nnx.eval_shape``) to get each parameter's sharding, then its
    state is initialised inside ``jit`` with those output shardings, so every device computes only its
    own shards and no device ever holds the full unsharded model (unlike ``shard_model(ctor(), mesh)``).
    The values equal those of ``ctor()`` for the same seeds.
    """
    from flax import nnx

    abstract = nnx.eval_shape(ctor)
    graphdef, _ = nnx.split(abstract)
    shardings = param_shardings(abstract, mesh, rules)
    state = jax.jit(lambda: nnx.state(ctor()), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def batch_sharding(mesh: Mesh, ndim: int = 2, rules=None) -> NamedSharding:
    """Sharding of a batch array ``[B, ...]``: leading axis over the ``batch`` rule (default data x fsdp)."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def with_logical_constraint(x, logical_axes: Sequence[str | None], rules=None):
    """``with_sharding_constraint`` by logical names under the active mesh; identity without a mesh.

    ``rules=None`` uses the active rules (:func:`use_rules`) at trace time. Dimensions that the mapped
    mesh axes do not divide are left replicated.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    spec = logical_to_spec(logical_axes, rules)
    mshape = dict(mesh.shape)
    entries = [e if x.shape[i] % axis_size(mshape, e) == 0 else None for i, e in enumerate(spec)]
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*entries))


# ---------------------------------------------------------------------------------------------
# Host transfers and multi-host start-up
# ---------------------------------------------------------------------------------------------
def to_host(x) -> np.ndarray:
    """The full value of ``x`` as a numpy array on this process.

    ``x`` may be a sharded ``jax.Array`` whose shards live on other hosts (not fully addressable): then
    every process must call this (a collective ``process_allgather``). Numpy arrays and scalars pass.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


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
