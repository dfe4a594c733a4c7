"""Weight transports: how the learner's weights reach the vLLM servers (``VLLMEngine.sync_weights``).

A transport *exports* a version once (``export``), then every server *loads* it (``load``, one call per server,
run in parallel by the engine for several replicas), then the engine *commits* it (it becomes the version a
restarted server is restored from; the previous one is dropped). A failed push is ``discard``-ed and the
previous version stays the recovery point.

* ``FilesystemTransport`` ("filesystem"): ``save_hf`` into ``<sync_root>/version_<v>`` (HF safetensors), then
  ``POST /collective_rpc rlvr_reload_weights`` (every worker re-reads the files). Works wherever the servers see
  the directory (another machine with a shared filesystem too); costs one file write and one read per version.
* ``SharedMemoryTransport`` ("shm"): the weights go, in the Hugging Face layout and dtype, into a segment file on
  ``/dev/shm`` (vllm_shm.py) and every worker loads them from zero-copy views of it (``rlvr_load_shm``). Same
  host only. Two segment files alternate, so the committed version stays intact while the next one is written.

Both check versions: the worker records the version it loaded (``rlvr_weight_version``) and ``load`` verifies
what every worker reports. The GPU path (NCCL / CUDA IPC through vLLM's weight-transfer endpoints) would be a
third implementation of the same four methods; see docs/vllm.md.
"""
from __future__ import annotations

import abc
import dataclasses
import os
import pathlib
import re
import shutil
import tempfile
import time
import uuid
import weakref
from typing import Any, Callable, Iterator

from rlvr_jax.rollout import vllm_shm

TRANSPORTS = ("filesystem", "shm")


@dataclasses.dataclass
class SyncRecord:
    """What one ``sync_weights`` call did. ``nbytes`` is the size of the exported weights; ``load_seconds`` the
    wall time of the (parallel) loads, ``replica_load_seconds`` each server's own."""

    version: int
    transport: str
    seconds: float
    export_seconds: float
    load_seconds: float
    nbytes: int
    path: str | None = None
    replica_load_seconds: tuple[float, ...] = ()

    @property
    def seconds_per_gb(self) -> float:
        return self.seconds / (self.nbytes / 1e9) if self.nbytes else float("nan")


@dataclasses.dataclass
class Export:
    """One exported version: where it is (``path``), its size, and the seconds the export took."""

    version: int
    path: str
    nbytes: int
    seconds: float
    owned: bool = True  # the transport made it (and deletes it when it is superseded)
    slot: int = 0


class WeightVersionError(RuntimeError):
    """A server reports another weight version than the one it was given."""


def check_versions(results: Any, version: int, url: str) -> None:
    """Every worker's result of a load or ``rlvr_weight_version`` call names ``version``."""
    rows = (results or {}).get("results") if isinstance(results, dict) else None
    if not rows:
        raise WeightVersionError(f"{url}: the workers returned no version (response {results!r})")
    got = [r.get("version") if isinstance(r, dict) else r for r in rows]
    if any(g is None or int(g) != int(version) for g in got):
        raise WeightVersionError(f"{url}: workers hold weight versions {got}, expected {version}")


class WeightTransport(abc.ABC):
    """Moves learner weights into running vLLM servers (module docstring)."""

    name: str = "abstract"
    verifies_version: bool = True  # load() checks the version every worker reports

    def __init__(self):
        self.latest: Export | None = None
        self.worker_seconds: list[dict] = []  # the phases of the last load, as each worker timed them (if it did)

    @abc.abstractmethod
    def export(self, model_or_params: Any, version: int) -> Export:
        """Writes ``version`` once, where every server can load it from."""

    @abc.abstractmethod
    def load(self, client, exported: Export) -> None:
        """Makes the server behind ``client`` use ``exported`` (raises if a worker reports another version)."""

    def commit(self, exported: Export) -> None:
        """``exported`` becomes the recovery point; the previous version is released."""
        previous, self.latest = self.latest, exported
        if previous is not None and previous.path != exported.path:
            self._release(previous)

    def discard(self, exported: Export) -> None:
        """A push that failed: ``exported`` is released, the committed version stays the recovery point."""
        if self.latest is None or exported.path != self.latest.path:
            self._release(exported)

    def _release(self, exported: Export) -> None:
        """Frees what ``exported`` holds (nothing by default)."""

    def push(self, model_or_params: Any, version: int, client) -> SyncRecord:
        """export + load + commit for one server."""
        exported = self.export(model_or_params, version)
        t0 = time.perf_counter()
        try:
            self.load(client, exported)
        except BaseException:
            self.discard(exported)
            raise
        load_s = time.perf_counter() - t0
        self.commit(exported)
        return SyncRecord(version=int(version), transport=self.name, seconds=exported.seconds + load_s,
                          export_seconds=exported.seconds, load_seconds=load_s, nbytes=exported.nbytes,
                          path=exported.path, replica_load_seconds=(load_s,))

    def restore(self, client) -> None:
        """Re-applies the committed version to a (re)started server (no-op if nothing was pushed yet)."""
        if self.latest is not None:
            self.load(client, self.latest)

    def close(self) -> None:
        """Releases files or segments held by the transport."""


def _worker_seconds(results: Any) -> list[dict]:
    rows = (results or {}).get("results") if isinstance(results, dict) else None
    return [r["seconds"] for r in rows or () if isinstance(r, dict) and isinstance(r.get("seconds"), dict)]


# ---------------------------------------------------------------------------------------------------------
# Filesystem
# ---------------------------------------------------------------------------------------------------------
def _default_save_fn(model: Any, path: str) -> None:
    from rlvr_jax.models import save_hf  # imported lazily: the launcher/client need no JAX
    save_hf(model, path)


def _dir_nbytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class FilesystemTransport(WeightTransport):
    """Exports HF safetensors to ``<sync_root>/version_<v>`` and asks vLLM to reload them.

    ``model_or_params`` is passed to ``save_fn(model_or_params, path)`` (default:
    ``rlvr_jax.models.save_hf``). A ``str``/``PathLike`` is taken as an already exported HF
    directory: it is loaded as is and never deleted. ``sync_root`` should be a local disk (or
    /dev/shm when host memory allows) visible to the server; ``None`` makes a temporary
    directory that ``close`` removes. ``reload_method`` is the worker method called through
    /collective_rpc: ``rlvr_reload_weights`` needs the server to run with rlvr_jax's worker
    extension (the launcher adds it; the worker then reports the version it loaded, which is checked);
    plain ``reload_weights`` works on any dev-mode server but leaves tied LM heads stale on the CPU build
    (see vllm_worker_ext.py) and reports no version.
    """

    name = "filesystem"

    def __init__(self, sync_root: str | os.PathLike | None = None,
                 save_fn: Callable[[Any, str], None] | None = None,
                 reload_method: str = "rlvr_reload_weights",
                 reload_timeout_s: float | None = None):
        super().__init__()
        self._owns_root = sync_root is None
        self.sync_root = pathlib.Path(tempfile.mkdtemp(prefix="rlvr_vllm_sync_") if sync_root is None
                                      else sync_root)
        self.sync_root.mkdir(parents=True, exist_ok=True)
        self.save_fn = save_fn or _default_save_fn
        self.reload_method = reload_method
        self.reload_timeout_s = reload_timeout_s
        self.verifies_version = reload_method == "rlvr_reload_weights"

    @property
    def latest_path(self) -> pathlib.Path | None:
        return None if self.latest is None else pathlib.Path(self.latest.path)

    def export(self, model_or_params: Any, version: int) -> Export:
        t0 = time.perf_counter()
        if isinstance(model_or_params, (str, os.PathLike)):
            path = pathlib.Path(model_or_params)
            if not any(path.glob("*.safetensors")):
                raise FileNotFoundError(f"no *.safetensors in weights directory {str(path)!r}")
            return Export(int(version), str(path.resolve()), _dir_nbytes(path), time.perf_counter() - t0,
                          owned=False)
        final = self.sync_root / f"version_{int(version):08d}"
        suffix = 0
        while final.exists():  # the same version synced again: never overwrite what is served
            suffix += 1
            final = self.sync_root / f"version_{int(version):08d}_{suffix}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.save_fn(model_or_params, str(partial))
        if not any(partial.glob("*.safetensors")):
            raise RuntimeError(f"save_fn wrote no *.safetensors into {str(partial)!r}")
        os.rename(partial, final)  # the server only ever sees complete directories
        return Export(int(version), str(final.resolve()), _dir_nbytes(final), time.perf_counter() - t0)

    def load(self, client, exported: Export) -> None:
        kwargs = {"weights_path": exported.path}
        if self.verifies_version:
            kwargs["version"] = str(exported.version)
        results = client.collective_rpc(self.reload_method, kwargs, timeout_s=self.reload_timeout_s)
        if self.verifies_version:
            check_versions(results, exported.version, client.base_url)
        self.worker_seconds = _worker_seconds(results)
        client.reset_prefix_cache()

    def _release(self, exported: Export) -> None:
        if exported.owned:
            shutil.rmtree(exported.path, ignore_errors=True)

    def close(self) -> None:
        if self.latest is not None:
            self._release(self.latest)
        self.latest = None
        if self._owns_root:
            shutil.rmtree(self.sync_root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Shared memory
# ---------------------------------------------------------------------------------------------------------
def default_shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


_SEGMENT_RE = re.compile(r"^rlvr_weights_(\d+)_[0-9a-f]+\.\d$")


def remove_stale_segments(directory: str) -> list[str]:
    """Removes segment files left by processes that no longer run (a SIGKILLed trainer); returns them."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _SEGMENT_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # its owner runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def hf_host_tensors(model: Any, dtype: str | None = None
                    ) -> tuple[list[tuple[str, tuple[int, ...], str]], Callable[[], Iterator]]:
    """``(name, shape, dtype)`` of every tensor of a JAX ``Decoder`` in Hugging Face layout, and a function
    yielding ``(name, numpy array)`` in that layout and dtype. Transposes and casts run as compiled JAX
    programs on the learner's devices (on an accelerator: before the device-to-host copy)."""
    import jax
    import numpy as np

    from rlvr_jax.models.hf_io import hf_tensor_map
    from rlvr_jax.sharding import to_host

    entries = hf_tensor_map(model)
    out_dt = np.dtype(jax.numpy.dtype(dtype or model.config.param_dtype))
    name = out_dt.name
    table = [(n, tuple(reversed(v.shape)) if t else tuple(v.shape), name) for n, v, t in entries]

    def arrays(window: int = 4):
        # JAX dispatches asynchronously: the next tensors' transposes run while this one is copied out
        pending: list = []
        for n, v, t in entries:
            x = v.get_value()
            pending.append((n, _to_hf(x, t, name) if (t or x.dtype != out_dt) else x))
            if len(pending) > window:
                n0, x0 = pending.pop(0)
                yield n0, to_host(x0)
        for n0, x0 in pending:
            yield n0, to_host(x0)
    return table, arrays


def _to_hf(x, transposed: bool, dtype: str):
    import jax
    fn = _TO_HF.get((transposed, dtype))
    if fn is None:
        fn = _TO_HF[(transposed, dtype)] = jax.jit(lambda a: (a.T if transposed else a).astype(dtype))
    return fn(x)


_TO_HF: dict = {}


class SharedMemoryTransport(WeightTransport):
    """Weights through a shared-memory segment (module docstring). ``model_or_params``: a JAX ``Decoder``, or any
    object when ``tensors_fn(obj) -> (table, arrays)`` is given (``hf_host_tensors``'s contract). ``shm_dir``:
    where the segment files live (default ``/dev/shm``; the servers must see the same directory, i.e. run on
    this host). ``dtype``: the dtype of the segment (default: the model's parameter dtype)."""

    name = "shm"

    def __init__(self, shm_dir: str | os.PathLike | None = None, dtype: str | None = None,
                 tensors_fn: Callable[[Any], tuple[list, Callable[[], Iterator]]] | None = None,
                 load_timeout_s: float | None = None):
        super().__init__()
        self.shm_dir = str(shm_dir or default_shm_dir())
        os.makedirs(self.shm_dir, exist_ok=True)
        remove_stale_segments(self.shm_dir)
        self.dtype = dtype
        self.tensors_fn = tensors_fn or (lambda m: hf_host_tensors(m, self.dtype))
        self.load_timeout_s = load_timeout_s
        self._base = os.path.join(self.shm_dir, f"rlvr_weights_{os.getpid()}_{uuid.uuid4().hex[:12]}")
        self._writers: list[vllm_shm.SegmentWriter | None] = [None, None]
        self._finalizer = weakref.finalize(self, SharedMemoryTransport._close_writers, self._writers)

    def _writer(self, slot: int, table) -> vllm_shm.SegmentWriter:
        w = self._writers[slot]
        if w is not None and [(t["name"], t["shape"], t["dtype"]) for t in w.table] != \
                [(n, list(s), d) for n, s, d in table]:
            w.close()  # another model shape or dtype: a new segment
            w = None
        if w is None:
            w = self._writers[slot] = vllm_shm.SegmentWriter(f"{self._base}.{slot}", table)
        return w

    def export(self, model_or_params: Any, version: int) -> Export:
        t0 = time.perf_counter()
        slot = 0 if self.latest is None else 1 - self.latest.slot  # never the committed version's segment
        table, arrays = self.tensors_fn(model_or_params)
        writer = self._writer(slot, table)
        nbytes = writer.write(arrays(), int(version))
        return Export(int(version), writer.path, nbytes, time.perf_counter() - t0, slot=slot)

    def load(self, client, exported: Export) -> None:
        results = client.collective_rpc("rlvr_load_shm", {"path": exported.path, "version": str(exported.version)},
                                        timeout_s=self.load_timeout_s)
        check_versions(results, exported.version, client.base_url)
        self.worker_seconds = _worker_seconds(results)
        client.reset_prefix_cache()

    @staticmethod
    def _close_writers(writers: list) -> None:
        for i, w in enumerate(writers):
            if w is not None:
                w.close()
                writers[i] = None

    def close(self) -> None:
        self._close_writers(self._writers)
        self.latest = None


def make_transport(name: str, *, sync_root=None, shm_dir=None, reload_method: str = "rlvr_reload_weights",
                   dtype: str | None = None) -> WeightTransport:
    """A transport by name (``TRANSPORTS``)."""
    if name == "filesystem":
        return FilesystemTransport(sync_root, reload_method=reload_method)
    if name == "shm":
        return SharedMemoryTransport(shm_dir, dtype=dtype)
    raise ValueError(f"unknown weight transport {name!r}; expected one of {TRANSPORTS}")


__all__ = ["TRANSPORTS", "Export", "FilesystemTransport", "SharedMemoryTransport", "SyncRecord", "WeightTransport",
           "WeightVersionError", "check_versions", "hf_host_tensors", "make_transport", "remove_stale_segments"]
