"""A vLLM worker extension (``--worker-extension-cls``) for the weight syncs.

vLLM mixes this class into every worker; ``POST /collective_rpc {"method": M, "kwargs": {...}}`` then runs method
``M`` on each worker and returns each worker's result:

* ``rlvr_reload_weights(weights_path, version)``: the filesystem transport (HF safetensors directory);
* ``rlvr_load_shm(path, version)``: the shared-memory transport (vllm_shm.py's segment, mapped, no copy until
  the parameters themselves are written);
* ``rlvr_weight_version()``: the version the worker holds (None until a sync named one), which the engine checks
  before each generation.

Why it exists: vLLM 0.32's in-place ``reload_weights`` misses tied output embeddings on the CPU
build. With ``tie_word_embeddings`` (Qwen3-0.6B/1.7B, Llama-3.2) the checkpoint has no
``lm_head.weight``; the reload updates ``embed_tokens.weight`` in place (which the LM head shares),
but on CPU the LM head computes with a *packed copy* of that weight made at load time
(``dispatch_cpu_unquantized_gemm``), and nothing re-packs it, so logits keep using the old
output embedding. ``rlvr_reload_weights`` reloads, then re-runs the LM head's
``process_weights_after_loading`` for heads that share their weight with an input embedding
(on GPU that method is a no-op and the shared weight is already updated).

This module must stay importable inside the vLLM server without JAX: it imports only vLLM, torch, numpy and
vllm_shm (standard library + numpy).
"""
from __future__ import annotations

import mmap
import os
import time
import warnings


def refresh_tied_lm_heads(model) -> int:
    """Brings LM heads tied to an input embedding up to date after a reload; returns how many.

    On the CPU build the reload has just re-processed the embedding module itself, which made a packed GEMM of
    the new shared weight (``cpu_linear``, the same kind the head uses: both run ``UnquantizedEmbeddingMethod``):
    the head takes that one instead of packing the same weight a second time (measured 0.2-0.7 s for Qwen3-0.6B's
    311 MB embedding). Otherwise (GPU, or an embedding without it) the head's weight post-processing runs again.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import (ParallelLMHead,
                                                                     VocabParallelEmbedding)

    def ptr(module):
        w = getattr(module, "weight", None)
        return None if w is None or w.is_meta or w.numel() == 0 else w.data_ptr()

    embeddings = {ptr(m): m for m in model.modules()
                  if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)}
    embeddings.pop(None, None)
    refreshed = 0
    for m in model.modules():
        method = getattr(m, "quant_method", None)
        if isinstance(m, ParallelLMHead) and ptr(m) in embeddings and method is not None:
            emb = embeddings[ptr(m)]
            if hasattr(emb, "cpu_linear") and hasattr(m, "cpu_linear"):
                m.cpu_linear = emb.cpu_linear
            else:
                method.process_weights_after_loading(m)
            refreshed += 1
    return refreshed


_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "float64": "float64"}


def segment_tensors(buf, header: dict):
    """``(name, tensor)`` zero-copy views of a mapped weight segment, in table order."""
    import torch

    base = header["data_offset"]
    out = []
    with warnings.catch_warnings():  # a read-only mapping: the tensors are only read (copied into parameters)
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        for t in header["table"]:
            dtype = getattr(torch, _TORCH_DTYPES[t["dtype"]])
            n = t["nbytes"] // dtype.itemsize
            flat = torch.frombuffer(buf, dtype=dtype, count=n, offset=base + t["offset"]) if n else \
                torch.empty(0, dtype=dtype)
            out.append((t["name"], flat.view(t["shape"])))
    return out


class _Mapping:
    """A read-only mapping of a segment file, kept between loads while the file (inode, size) is the same."""

    def __init__(self, path: str):
        st = os.stat(path)
        self.key = (path, st.st_ino, st.st_size)
        fd = os.open(path, os.O_RDONLY)
        try:
            self.mm = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)


class WeightSyncExtension:
    """Worker methods callable through /collective_rpc (``self`` is a vLLM worker)."""

    def _rlvr_refresh(self) -> int:
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config):
            return refresh_tied_lm_heads(self.model_runner.get_model())

    def rlvr_reload_weights(self, weights_path: str, version=None) -> dict:
        """``reload_weights`` from an HF safetensors directory, then refresh tied LM heads."""
        t0 = time.perf_counter()
        self.reload_weights(weights_path=weights_path)
        t1 = time.perf_counter()
        refreshed = self._rlvr_refresh()
        self._rlvr_version = None if version is None else int(version)
        return {"version": self._rlvr_version, "refreshed": refreshed,
                "seconds": {"reload": t1 - t0, "refresh": time.perf_counter() - t1}}

    def _rlvr_map(self, path: str) -> _Mapping:
        """The mapping of ``path`` (the transport alternates between two segment files: both stay mapped);
        mappings of files that were removed or replaced are dropped, which frees their memory."""
        maps = self.__dict__.setdefault("_rlvr_mappings", {})
        for p in list(maps):
            try:
                st = os.stat(p)
                current = maps[p].key == (p, st.st_ino, st.st_size)
            except FileNotFoundError:
                current = False
            if not current:
                del maps[p]
        if path not in maps:
            maps[path] = _Mapping(path)
        return maps[path]

    def rlvr_load_shm(self, path: str, version) -> dict:
        """Loads version ``version`` from the shared-memory segment at ``path`` (vllm_shm.py): checks that the
        segment is complete and holds that version, reloads the parameters from zero-copy views of it (vLLM's
        in-place ``reload_weights`` with a weights iterator), checks that no write started meanwhile, then
        refreshes tied LM heads."""
        from rlvr_jax.rollout import vllm_shm

        version = int(version)
        t0 = time.perf_counter()
        buf = self._rlvr_map(path).mm
        header = vllm_shm.read_header(buf)
        vllm_shm.check(header, version, path)
        self._rlvr_version = None  # until the load below has completed
        t1 = time.perf_counter()
        self.reload_weights(weights_iterator=iter(segment_tensors(buf, header)), is_checkpoint_format=True)
        t2 = time.perf_counter()
        after = vllm_shm.read_header(buf)
        if after["writes"] != header["writes"] or after["state"] != vllm_shm.COMPLETE:
            raise vllm_shm.SegmentError(f"weight segment {path} was rewritten while version {version} was "
                                        "loading: the loaded weights are torn")
        refreshed = self._rlvr_refresh()
        self._rlvr_version = version
        return {"version": version, "refreshed": refreshed,
                "seconds": {"map": t1 - t0, "reload": t2 - t1, "refresh": time.perf_counter() - t2}}

    def rlvr_weight_version(self) -> dict:
        """The weight version this worker holds (None before any versioned sync)."""
        return {"version": getattr(self, "_rlvr_version", None)}
