"""Orbax checkpoints of the whole training state, automatic resume, and a SIGTERM/SIGINT guard.

A checkpoint at RL step ``s`` (= ``s`` completed steps) holds two items:
  * ``state``: a pytree of arrays (policy params, optimizer state, critic, RNG key data, counters), saved
    sharded as its flat list of leaves and restored onto the shapes, dtypes and shardings of a template
    pytree (the tree paths are stored in ``meta`` and must match), so resume is bit-exact;
  * ``meta``: JSON (step, data-loader position, the config, anything small).
The manager keeps the last ``keep`` checkpoints; ``latest_step`` finds the newest one in the directory.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves every ``every`` steps (and when forced), keeps the last ``keep``; process-aware via orbax."""

    def __init__(self, directory: str, keep: int = 3, every: int = 1):
        if keep < 1 or every < 1:
            raise ValueError(f"Checkpointer needs keep >= 1 and every >= 1, got keep={keep}, every={every}")
        self.directory = os.path.abspath(directory)
        self.every = int(every)
        options = ocp.CheckpointManagerOptions(max_to_keep=int(keep), create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> bool:
        """Saves when ``step`` is a multiple of ``every`` or ``force``; returns whether it saved."""
        if not (force or self.should_save(step)):
            return False
        if step in self._manager.all_steps():
            return False
        leaves, paths = _flatten(state)
        meta = dict(meta, step=int(step), state_paths=paths)
        self._manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                                              meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
        return True

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``(state, meta)`` at ``step`` (default latest) with ``template``'s shapes, dtypes, shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        leaves, paths = _flatten(template)
        if meta.get("state_paths") != paths:
            saved = meta.get("state_paths") or []
            diff = sorted(set(saved) ^ set(paths))[:5]
            raise ValueError(f"checkpoint step {step} in {self.directory} holds a different state tree than "
                             f"this run ({len(saved)} vs {len(paths)} arrays; e.g. {diff}): was the config changed?")
        abstract = {k: _abstract(v) for k, v in leaves.items()}
        out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        treedef = jax.tree.structure(template)
        restored = jax.tree.unflatten(treedef, [out["state"][k] for k in sorted(out["state"])])
        return restored, meta

    def restore_subtree(self, template: Any, prefix: str, step: int | None = None) -> tuple[Any, dict]:
        """Restores only the arrays under ``prefix`` (a ``keystr`` path such as ``"['policy']['params']"``)
        onto ``template``'s structure, shapes, dtypes and shardings; the rest (optimizer state, critic...)
        is never read. Returns ``(subtree, meta)``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        saved = {p: i for i, p in enumerate(meta.get("state_paths") or [])}
        leaves, paths = _flatten(template)
        missing = [prefix + p for p in paths if prefix + p not in saved]
        if missing:
            raise ValueError(f"checkpoint step {step} in {self.directory} has no arrays {missing[:3]} "
                             f"({len(missing)} of {len(paths)} missing under {prefix})")
        abstract = {f"{saved[prefix + p]:06d}": _abstract(leaf) for p, leaf in zip(paths, leaves.values())}
        restore_args = {k: ocp.ArrayRestoreArgs(sharding=a.sharding) if a.sharding is not None
                        else ocp.RestoreArgs(restore_type=np.ndarray) for k, a in abstract.items()}
        item_dir = os.path.join(self.directory, str(step), "state")
        out = ocp.PyTreeCheckpointer().restore(
            item_dir, args=ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True))
        ordered = [out[f"{saved[prefix + p]:06d}"] for p in paths]
        return jax.tree.unflatten(jax.tree.structure(template), ordered), meta

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _flatten(tree) -> tuple[dict[str, Any], list[str]]:
    """Leaves as ``{"000000": leaf, ...}`` (any pytree, e.g. nnx.State, saves the same way) and their paths."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = {f"{i:06d}": leaf for i, (_, leaf) in enumerate(flat)}
    return leaves, [jax.tree_util.keystr(p) for p, _ in flat]


def _abstract(x):
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a request the loop honours at its next safe point (checkpoint, then exit).

    Use as a context manager around the training loop; handlers are only installed from the main thread and
    the previous handlers are restored on exit. A second signal while a request is pending falls through to
    the previous handler (so a double Ctrl-C still interrupts).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._requested = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signal_received: int | None = None

    def _handler(self, signum, frame):
        if self._requested.is_set():
            prev = self._previous.get(signum)
            if callable(prev):
                prev(signum, frame)
            elif prev == signal.SIG_DFL:
                raise KeyboardInterrupt
            return
        self.signal_received = signum
        self._requested.set()

    def request(self) -> None:
        """Asks for a checkpoint-and-exit as if a signal had arrived (tests, programmatic stops)."""
        self._requested.set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def requested_anywhere(self) -> bool:
        """True when any process got a signal (all processes must stop at the same step)."""
        flag = self.requested
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            flag = bool(np.asarray(multihost_utils.process_allgather(np.array([flag], np.int32))).any())
        return flag

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, prev in self._previous.items():
            signal.signal(s, prev)
        self._previous.clear()


POLICY_PARAMS = "['policy']['params']"


def load_policy_checkpoint(directory: str, step: int | None = None, dtype: str = "float32"):
    """The policy of a training run from its orbax checkpoints, reading only the policy parameters.

    ``directory`` is a run's checkpoint directory (``<out_dir>/checkpoints``) or its ``out_dir``. The model's
    shapes come from the config saved with the checkpoint (``model.hf_path``'s config.json or
    ``model.preset``). Returns ``(model, model_config, step)``.
    """
    from flax import nnx

    from rlvr_jax.models import Decoder, ModelConfig, get_preset

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint directory {directory!r}")
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        directory = os.path.join(directory, "checkpoints")
    ckpt = Checkpointer(directory)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no orbax checkpoint in {directory}")
        meta = dict(ckpt._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        m = (meta.get("config") or {}).get("model") or {}
        overrides = dict(dtype=dtype, param_dtype=m.get("param_dtype") or "float32")
        if m.get("hf_path"):
            cfg = ModelConfig.from_json_file(os.path.join(m["hf_path"], "config.json")).replace(**overrides)
        elif m.get("preset"):
            cfg = get_preset(m["preset"], **overrides)
        else:
            raise ValueError(f"checkpoint {directory} step {step}: its saved config names no model.hf_path/preset")
        graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: Decoder(cfg)), nnx.Param, ...)
        template = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), params)
        params, _ = ckpt.restore_subtree(template, POLICY_PARAMS, step)  # host numpy arrays
        params = jax.device_put(params)
        rest = jax.device_put(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), rest))
        return nnx.merge(graphdef, params, rest), cfg, step
    finally:
        ckpt.close()
