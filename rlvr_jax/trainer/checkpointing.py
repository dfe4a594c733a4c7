"""Orbax checkpoints of the whole training state, automatic resume, and a SIGTERM/SIGINT guard.

A checkpoint at RL step ``s`` (= ``s`` completed steps) holds two items:
  * ``state``: a pytree of arrays (policy params, optimizer state, critic, RNG key data, counters), saved
    sharded as its flat list of leaves and restored onto the shapes, dtypes and shardings of a template
    pytree (the tree paths are stored in ``meta`` and must match), so resume is bit-exact;
  * ``meta``: JSON (step, data-loader position, the config, anything small) and ``state_checksums``, two 32-bit
    checksums per leaf (:mod:`rlvr_jax.trainer.integrity`) computed when saving and verified when restoring.
The manager keeps the last ``keep`` checkpoints; ``latest_step`` finds the newest one in the directory.

A checkpoint that cannot be read (truncated or zeroed files, broken metadata) or whose arrays do not match their
checksums raises :class:`CorruptCheckpointError` naming its directory; :meth:`Checkpointer.restore_newest_good`
then falls back to the newest readable one with a loud warning, or stops listing every path it tried.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rlvr_jax.trainer.integrity import checksum_mismatches, tree_checksums

logger = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that cannot be read or fails its checksums; ``path`` is its directory."""

    def __init__(self, path: str, reason: str):
        self.path = path
        super().__init__(f"corrupt checkpoint {path}: {reason}")


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
        meta = dict(meta, step=int(step), state_paths=paths, state_checksums=tree_checksums(leaves))
        self._manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                                              meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
        return True

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``(state, meta)`` at ``step`` (default latest) with ``template``'s shapes, dtypes, shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = self._read_meta(step)
        leaves, paths = _flatten(template)
        if meta.get("state_paths") != paths:
            saved = meta.get("state_paths") or []
            diff = sorted(set(saved) ^ set(paths))[:5]
            raise ValueError(f"checkpoint step {step} in {self.directory} holds a different state tree than "
                             f"this run ({len(saved)} vs {len(paths)} arrays; e.g. {diff}): was the config changed?")
        abstract = {k: _abstract(v) for k, v in leaves.items()}
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as e:  # noqa: BLE001 - tensorstore / orbax raise many types for damaged files
            where = self._first_unreadable(step, abstract, paths)
            raise CorruptCheckpointError(self.step_dir(step), f"its state cannot be read{where} "
                                                              f"({type(e).__name__}: {_first_line(e)})") from e
        self._verify(step, out["state"], meta, paths)
        treedef = jax.tree.structure(template)
        restored = jax.tree.unflatten(treedef, [out["state"][k] for k in sorted(out["state"])])
        return restored, meta

    def restore_newest_good(self, template: Any) -> tuple[Any, dict, int] | None:
        """``(state, meta, step)`` of the newest checkpoint that reads back and matches its checksums; None when
        the directory holds none. Each corrupt one is named in a loud warning and skipped; when every
        checkpoint is corrupt, raises :class:`CorruptCheckpointError` listing their paths. A checkpoint of a
        different state tree (changed config) is an error, not a fallback."""
        steps = sorted(self.all_steps(), reverse=True)
        bad: list[CorruptCheckpointError] = []
        for step in steps:
            try:
                state, meta = self.restore(template, step)
            except CorruptCheckpointError as e:
                bad.append(e)
                _loud(f"WARNING: {e}; " + ("falling back to an older checkpoint" if step != steps[-1]
                                           else "no older checkpoint is left"))
                continue
            if bad:
                moved = self._quarantine([int(os.path.basename(b.path)) for b in bad])
                _loud(f"WARNING: resumed from step {step} ({self.step_dir(step)}) instead of the newest step "
                      f"{steps[0]}: {len(bad)} corrupt checkpoint(s) skipped and moved to {moved}: "
                      f"{', '.join(b.path for b in bad)}")
            return state, meta, step
        if bad:
            raise CorruptCheckpointError(
                self.directory, "every checkpoint in it is corrupt: " + "; ".join(str(b) for b in bad)
                + " -- move them away (or set checkpoint.resume=False) to start over")
        return None

    def _first_unreadable(self, step: int, abstract: dict, paths: list[str]) -> str:
        """``" (array <path>)"`` for the first array that fails to read alone, ``""`` if none does (failure path
        only: one partial restore per array)."""
        item_dir = os.path.join(self.step_dir(step), "state")
        for k, a in abstract.items():
            args = {k: ocp.ArrayRestoreArgs(sharding=a.sharding) if a.sharding is not None
                    else ocp.RestoreArgs(restore_type=np.ndarray)}
            try:
                ocp.PyTreeCheckpointer().restore(
                    item_dir, args=ocp.args.PyTreeRestore({k: a}, restore_args=args, partial_restore=True))
            except Exception:  # noqa: BLE001
                return f" (array {paths[int(k)]})"
        return ""

    def _quarantine(self, steps: list[int]) -> str:
        """Moves corrupt step directories to ``<directory>/corrupt/`` (kept for inspection, out of the way of the
        redone steps' saves) and reloads the manager; returns that folder."""
        dest = os.path.join(self.directory, "corrupt")
        if jax.process_index() == 0:
            os.makedirs(dest, exist_ok=True)
            for s in steps:
                target = os.path.join(dest, str(s))
                n = 0
                while os.path.exists(target):
                    n += 1
                    target = os.path.join(dest, f"{s}.{n}")
                os.replace(self.step_dir(s), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("rlvr_jax:checkpoint_quarantine")
        self._manager.reload()
        return dest

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(int(step)))

    def _read_meta(self, step: int) -> dict:
        try:
            return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        except Exception as e:  # noqa: BLE001 - a truncated / missing meta JSON surfaces as several types
            raise CorruptCheckpointError(self.step_dir(step), f"its metadata cannot be read "
                                                              f"({type(e).__name__}: {_first_line(e)})") from e

    def _verify(self, step: int, arrays: dict, meta: dict, paths: list[str]) -> None:
        """Compares restored arrays (``{"000123": array}``) with the checksums saved in ``meta``."""
        saved = meta.get("state_checksums")
        if saved is None:
            logger.warning("checkpoint %s has no checksums (written before they were recorded): not verified",
                           self.step_dir(step))
            return
        bad = checksum_mismatches(arrays, saved)
        if bad:
            names = [paths[int(k)] if int(k) < len(paths) else k for k in bad]
            raise CorruptCheckpointError(self.step_dir(step), f"{len(bad)} array(s) do not match the checksums "
                                                              f"recorded when it was saved: {names[:5]}")

    def restore_subtree(self, template: Any, prefix: str, step: int | None = None) -> tuple[Any, dict]:
        """Restores only the arrays under ``prefix`` (a ``keystr`` path such as ``"['policy']['params']"``)
        onto ``template``'s structure, shapes, dtypes and shardings; the rest (optimizer state, critic...)
        is never read. Returns ``(subtree, meta)``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = self._read_meta(step)
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
        try:
            out = ocp.PyTreeCheckpointer().restore(
                item_dir, args=ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True))
        except Exception as e:  # noqa: BLE001
            raise CorruptCheckpointError(self.step_dir(step), f"its state cannot be read "
                                                              f"({type(e).__name__}: {_first_line(e)})") from e
        self._verify(step, out, meta, list(saved))
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


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else repr(e))[:limit]


def _loud(message: str) -> None:
    """A warning that cannot be missed: the log and stderr, framed."""
    logger.warning(message)
    bar = "!" * 100
    print(f"{bar}\n{message}\n{bar}", file=sys.stderr, flush=True)


def _abstract(x):
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


class PreemptionGuard:
    """SIGTERM / SIGINT: the first one stops the run with a checkpoint of the last completed step, the second
    aborts at once.

    First signal: says so on stderr ("checkpointing after this step; again to abort"), sets the request the loop
    checks after every step and (single process) asks the JAX sampler to stop at its next return to the host
    (:mod:`rlvr_jax.rollout.stop`; the trainer then discards the interrupted step and saves the last completed
    one), so a stop lands within seconds even during a long generation. Second signal: exits immediately
    (``os._exit(128 + signum)``: no checkpoint, the run resumes from its last saved one).

    Python runs signal handlers only on the main thread between bytecodes, never while that thread waits for a
    compiled XLA call; so the guard also reads the signal numbers from ``signal.set_wakeup_fd`` on a watcher
    thread, which acts (prints, requests, aborts) while the main thread is blocked. Each delivery is handled
    once, by whichever of the two reads it first. Installed only from the main thread; the previous handlers and
    wakeup fd are restored on exit. Use around the whole run (a signal during start-up stops before the first
    step).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._requested = threading.Event()
        self._previous: dict[int, Any] = {}
        self._lock = threading.RLock()  # the main-thread handler may interrupt its own _drain
        self._count = 0
        self._sock: tuple | None = None
        self._old_wakeup = -1
        self.signal_received: int | None = None

    # ---- one delivery
    def _on_signal(self, signum: int) -> None:
        from rlvr_jax.rollout.stop import request_stop
        self._count += 1
        name = signal.Signals(signum).name
        if self._count == 1:
            self.signal_received = signum
            self._requested.set()
            if jax.process_count() == 1:  # multi-host: every process must stop at the same step boundary
                request_stop()
            print(f"[train] {name}: checkpointing after this step (a generation in flight stops at its next "
                  f"compiled chunk, and the last completed step is saved), then exiting; {name} again to abort at "
                  f"once without a checkpoint", file=sys.stderr, flush=True)
            return
        print(f"[train] {name} again: aborting now without a checkpoint (the run resumes from its last saved one)",
              file=sys.stderr, flush=True)
        os._exit(128 + int(signum))

    def _drain(self) -> None:
        """Handles every signal number waiting in the wakeup socket (non-blocking, under the lock)."""
        with self._lock:
            if self._sock is None:
                return
            while True:
                try:
                    data = self._sock[0].recv(64)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                if not data:
                    return
                for b in data:
                    if b in self.SIGNALS:
                        self._on_signal(b)

    def _watch(self, sock) -> None:
        import select
        while True:
            try:
                select.select([sock], [], [])
            except (OSError, ValueError):
                return
            if self._sock is None:
                return
            self._drain()

    def _handler(self, signum, frame):
        if self._sock is not None:
            self._drain()  # the watcher may not have run yet: handle it now (once)
        else:
            with self._lock:
                self._on_signal(signum)

    def request(self) -> None:
        """Asks for a checkpoint-and-exit as if a signal had arrived (tests, programmatic stops)."""
        from rlvr_jax.rollout.stop import request_stop
        self._requested.set()
        if jax.process_count() == 1:
            request_stop()

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
        from rlvr_jax.rollout.stop import clear_stop
        clear_stop()
        if threading.current_thread() is threading.main_thread():
            import socket
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            self._sock = (r, w)
            self._old_wakeup = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
            threading.Thread(target=self._watch, args=(r,), name="signal-watcher", daemon=True).start()
        return self

    def __exit__(self, *exc):
        from rlvr_jax.rollout.stop import clear_stop
        for s, prev in self._previous.items():
            signal.signal(s, prev)
        self._previous.clear()
        if self._sock is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            with self._lock:
                r, w = self._sock
                self._sock = None
                w.close()  # wakes the watcher (end of stream), which then sees _sock is None and ends
            r.close()
        clear_stop()


@contextlib.contextmanager
def atomic_directory(path: str, is_writer: bool = True):
    """Yields a temporary sibling of ``path`` to fill; on success it replaces ``path`` by renames (an existing
    ``path`` is moved aside first and removed last), so ``path`` is always either the old or the new complete
    directory, never a half-written one. On an exception the temporary directory is removed. Non-writer
    processes (multi-host) get the same temporary path and do nothing else."""
    path = os.path.abspath(path)
    tmp = f"{path}.tmp"
    if is_writer and os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        yield tmp
    except BaseException:
        if is_writer:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not is_writer:
        return
    old = f"{path}.old"
    if os.path.exists(old):
        shutil.rmtree(old)
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


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
        meta = ckpt._read_meta(step)
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
