"""The shared-memory weight segment: the learner writes its weights once into a file on ``/dev/shm`` (tmpfs, i.e.
host memory) and every vLLM worker maps the same file and loads from it (``SharedMemoryTransport`` in
vllm_transport.py, ``rlvr_load_shm`` in vllm_worker_ext.py). No disk, no serialisation: one copy into the
segment on the learner side, one copy out of it into the server's parameters.

Layout (little endian)::

    0   8 bytes  magic b"RLVRSHM1"
    8   uint64   length of the JSON table
    16  int64    version of the weights in the segment
    24  uint64   state: 0 empty, 1 being written, 2 complete
    32  uint64   write count (incremented when a write starts: a reader compares it before and after)
    40  uint64   offset of the data (a multiple of 4096)
    48  ...      JSON table: [{"name", "dtype", "shape", "offset", "nbytes"}, ...] (offsets from the data start)

Tensors are stored C-contiguous in the Hugging Face layout (``[out, in]`` for linear weights) and dtype, so a
worker reads them as zero-copy views in checkpoint format. A reader accepts the segment only when its state is
complete and its version is the one the caller asked for, and checks again after loading that no write started
meanwhile (the engine never writes while a server loads; the check turns a violation into an error instead of
torn weights).

This module imports only the standard library and numpy: the worker extension uses it inside the vLLM server.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Iterable, Sequence

import numpy as np

MAGIC = b"RLVRSHM1"
_HEAD = struct.Struct("<8sQqQQQ")  # magic, table length, version, state, write count, data offset
EMPTY, WRITING, COMPLETE = 0, 1, 2
_ALIGN = 4096
# dtype names in the table (numpy / ml_dtypes names; the worker maps them to torch dtypes)
DTYPES = ("float32", "bfloat16", "float16", "float64")


class SegmentError(RuntimeError):
    """The segment is missing, damaged, incomplete or holds another version than the one asked for."""


def plan(entries: Sequence[tuple[str, Sequence[int], str]]) -> tuple[list[dict], int, int]:
    """The JSON table, data offset and total file size for ``(name, shape, dtype)`` entries (pure)."""
    table, off = [], 0
    for name, shape, dtype in entries:
        if dtype not in DTYPES:
            raise ValueError(f"{name}: dtype {dtype!r} not supported in the weight segment ({DTYPES})")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _itemsize(dtype)
        table.append({"name": name, "dtype": dtype, "shape": [int(s) for s in shape], "offset": off,
                      "nbytes": nbytes})
        off += -(-nbytes // 64) * 64  # 64-byte aligned tensors
    table_bytes = len(json.dumps(table, separators=(",", ":")).encode())
    data_offset = -(-(_HEAD.size + table_bytes) // _ALIGN) * _ALIGN
    return table, data_offset, data_offset + off


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}[dtype]


def _np_dtype(dtype: str) -> np.dtype:
    if dtype == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


class SegmentWriter:
    """Owns one segment file; ``write`` puts a new version into it in place (the file and its pages are reused)."""

    def __init__(self, path: str, entries: Sequence[tuple[str, Sequence[int], str]]):
        self.path = str(path)
        self.table, self.data_offset, self.size = plan(entries)
        self._index = {t["name"]: t for t in self.table}
        table_json = json.dumps(self.table, separators=(",", ":")).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.size)
            self._mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self._buf = np.frombuffer(self._mm, np.uint8)
        self._mm[_HEAD.size:_HEAD.size + len(table_json)] = table_json
        self._set_head(version=-1, state=EMPTY, writes=0, table_len=len(table_json))
        self.version: int | None = None

    def _set_head(self, version: int, state: int, writes: int, table_len: int | None = None) -> None:
        if table_len is None:
            table_len = _HEAD.unpack_from(self._mm, 0)[1]
        _HEAD.pack_into(self._mm, 0, MAGIC, table_len, int(version), state, writes, self.data_offset)

    @property
    def writes(self) -> int:
        return _HEAD.unpack_from(self._mm, 0)[4]

    def view(self, name: str) -> np.ndarray:
        """The writable array of tensor ``name`` inside the segment."""
        t = self._index[name]
        start = self.data_offset + t["offset"]
        return self._buf[start:start + t["nbytes"]].view(_np_dtype(t["dtype"])).reshape(t["shape"])

    def write(self, arrays: Iterable[tuple[str, np.ndarray]], version: int) -> int:
        """Copies every ``(name, array)`` into the segment as ``version``; returns the bytes written. Every tensor
        of the table must be given exactly once (else the segment is left marked incomplete)."""
        writes = self.writes + 1
        self._set_head(version=-1, state=WRITING, writes=writes)
        self.version = None
        seen = set()
        for name, a in arrays:
            if name not in self._index:
                raise KeyError(f"tensor {name!r} is not in the weight segment's table")
            dst = self.view(name)
            if tuple(a.shape) != dst.shape:
                raise ValueError(f"{name}: shape {tuple(a.shape)} != the segment's {dst.shape}")
            np.copyto(dst, a, casting="same_kind" if a.dtype == dst.dtype else "unsafe")
            seen.add(name)
        missing = set(self._index) - seen
        if missing:
            raise ValueError(f"weight segment write of version {version} is missing {sorted(missing)[:5]}")
        self._set_head(version=version, state=COMPLETE, writes=writes)
        self.version = int(version)
        return sum(t["nbytes"] for t in self.table)

    def close(self, unlink: bool = True) -> None:
        if self._mm is not None:
            self._buf = None
            try:
                self._mm.close()
            except BufferError:  # views still alive elsewhere: the mapping goes with them
                pass
            self._mm = None
        if unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def read_header(buf) -> dict:
    """The header and table of a mapped segment (``buf``: any buffer over the file); raises SegmentError."""
    if len(buf) < _HEAD.size:
        raise SegmentError(f"weight segment too small ({len(buf)} bytes)")
    magic, table_len, version, state, writes, data_offset = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise SegmentError(f"not a weight segment (magic {magic!r})")
    if data_offset + 0 > len(buf) or _HEAD.size + table_len > data_offset:
        raise SegmentError("weight segment header is inconsistent with its size")
    table = json.loads(bytes(buf[_HEAD.size:_HEAD.size + table_len]))
    return {"version": version, "state": state, "writes": writes, "data_offset": data_offset, "table": table}


def check(header: dict, expected_version: int, path: str) -> None:
    """Raises SegmentError unless the segment is complete and holds ``expected_version``."""
    if header["state"] != COMPLETE:
        what = {EMPTY: "empty", WRITING: "being written (or a write was interrupted)"}.get(header["state"], "?")
        raise SegmentError(f"weight segment {path} is {what}; expected version {expected_version}")
    if header["version"] != int(expected_version):
        raise SegmentError(f"weight segment {path} holds version {header['version']}, "
                           f"expected {expected_version}")
