"""Hugging Face checkpoint import (:func:`load_hf`) and export (:func:`save_hf`).

Tensor names and layouts (``L`` = layer index; torch ``Linear.weight`` is ``[out, in]``, our kernels
are ``[in, out]``, so those are transposed on the way in and out)::

    model.embed_tokens.weight                      [V, H]  <-> embed.embedding
    model.layers.L.self_attn.{q,k,v,o}_proj.weight         <-> layers[L].attn.{q,k,v,o}_proj.kernel (T)
    model.layers.L.self_attn.{q,k,v,o}_proj.bias           <-> layers[L].attn.{q,k,v,o}_proj.bias
    model.layers.L.self_attn.{q,k}_norm.weight             <-> layers[L].attn.{q,k}_norm.scale  (qwen3)
    model.layers.L.mlp.{gate,up,down}_proj.weight          <-> layers[L].mlp.{gate,up,down}_proj.kernel (T)
    model.layers.L.input_layernorm.weight                  <-> layers[L].input_norm.scale
    model.layers.L.post_attention_layernorm.weight         <-> layers[L].post_attn_norm.scale
    model.norm.weight                                      <-> final_norm.scale
    lm_head.weight                                 [V, H]  <-> lm_head.kernel (T)   (absent when tied)

Safetensors files are read through ``numpy.memmap`` and each device receives only its own slice
(``jax.make_array_from_callback``), so loading never builds a second full host copy. Export streams
one tensor at a time into size-limited shards; in multi-host runs every process takes part in
gathering and only process 0 writes.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from ..sharding import check_divisible, logical_to_spec, to_host
from .config import ModelConfig
from .decoder import Decoder

DTypeLike = Any  # a dtype name ("float32") or a numpy / JAX dtype (jnp.float32)

SAFE_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(bool),
}
_DTYPE_TO_SAFE = {v: k for k, v in SAFE_DTYPES.items()}
# Tensors some checkpoints carry that the model does not use.
_IGNORED = (re.compile(r".*rotary_emb\.inv_freq$"),)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "chat_template.jinja")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


# ---------------------------------------------------------------------------------------------
# Name map
# ---------------------------------------------------------------------------------------------
def hf_tensor_map(model: Decoder) -> list[tuple[str, nnx.Variable, bool]]:
    """``(hf_name, variable, transposed)`` for every parameter of ``model``, in checkpoint order."""
    out: list[tuple[str, nnx.Variable, bool]] = [("model.embed_tokens.weight", model.embed.embedding, False)]

    def dense(prefix, d):
        out.append((f"{prefix}.weight", d.kernel, True))
        if d.bias is not None:
            out.append((f"{prefix}.bias", d.bias, False))

    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}"
        a = blk.attn
        for nm in ("q_proj", "k_proj", "v_proj", "o_proj"):
            dense(f"{p}.self_attn.{nm}", getattr(a, nm))
        if a.q_norm is not None:
            out.append((f"{p}.self_attn.q_norm.weight", a.q_norm.scale, False))
            out.append((f"{p}.self_attn.k_norm.weight", a.k_norm.scale, False))
        for nm in ("gate_proj", "up_proj", "down_proj"):
            dense(f"{p}.mlp.{nm}", getattr(blk.mlp, nm))
        out.append((f"{p}.input_layernorm.weight", blk.input_norm.scale, False))
        out.append((f"{p}.post_attention_layernorm.weight", blk.post_attn_norm.scale, False))
    out.append(("model.norm.weight", model.final_norm.scale, False))
    if model.lm_head is not None:
        out.append(("lm_head.weight", model.lm_head.kernel, True))
    return out


# ---------------------------------------------------------------------------------------------
# Safetensors reading (memory-mapped)
# ---------------------------------------------------------------------------------------------
class SafetensorsFile:
    """Memory-mapped view of one ``.safetensors`` file: ``tensor(name)`` returns a zero-copy array."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                raise ValueError(f"{self.path}: truncated or not a safetensors file ({size} bytes, header of "
                                 f"{n} bytes announced)")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{self.path}: unreadable safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: the safetensors header is not a JSON object")
        header.pop("__metadata__", None)
        self.header = header
        self._base = 8 + n
        for name in header:
            self._check_entry(name, size - self._base)
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if size > self._base else np.zeros(0, np.uint8)

    def _check_entry(self, name: str, data_bytes: int) -> None:
        """The entry's dtype is known and its byte range matches its shape and lies inside the file."""
        info = self.header[name]
        try:
            dtype, shape, (s, e) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{self.path}: tensor {name!r} has a malformed header entry {info!r}") from None
        if dtype not in SAFE_DTYPES:
            return  # reported by tensor() if the model ever reads it
        want = int(np.prod(shape)) * SAFE_DTYPES[dtype].itemsize
        if not 0 <= s <= e or e - s != want:
            raise ValueError(f"{self.path}: tensor {name!r} spans bytes [{s}, {e}) but shape {shape} {dtype} "
                             f"needs {want}")
        if e > data_bytes:
            raise ValueError(f"{self.path}: tensor {name!r} ends at byte {e} of the data but the file holds only "
                             f"{data_bytes}: the file is truncated")

    def keys(self):
        return self.header.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def tensor(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in SAFE_DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        s, e = info["data_offsets"]
        dt = SAFE_DTYPES[info["dtype"]]
        return self._mm[self._base + s:self._base + e].view(dt).reshape(info["shape"])


def _checkpoint_files(path: pathlib.Path) -> dict[str, SafetensorsFile]:
    """Maps each tensor name to the (memory-mapped) file holding it."""
    index = path / INDEX_FILE
    if index.exists():
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {fn: SafetensorsFile(path / fn) for fn in sorted(set(weight_map.values()))}
        out = {}
        for name, fn in weight_map.items():
            if name not in files[fn].header:
                raise ValueError(f"{index} maps tensor {name!r} to {fn}, which does not contain it")
            out[name] = files[fn]
        return out
    if (path / SINGLE_FILE).exists():
        f = SafetensorsFile(path / SINGLE_FILE)
        return {name: f for name in f.keys()}
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        f = SafetensorsFile(path / found[0])
        return {name: f for name in f.keys()}
    raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {path} (safetensors files: {found})")


# ---------------------------------------------------------------------------------------------
# load_hf
# ---------------------------------------------------------------------------------------------
def load_hf(path, dtype: DTypeLike = "float32", param_dtype: DTypeLike | None = None, mesh=None, rules=None,
            nonfinite: str = "error", **config_overrides) -> tuple[Decoder, ModelConfig]:
    """Loads a Hugging Face checkpoint directory into a :class:`Decoder`.

    ``dtype`` is the compute dtype, ``param_dtype`` the weight storage dtype (default: ``dtype``); each is a
    name (``"bfloat16"``) or a numpy/JAX dtype (``jnp.bfloat16``). With ``mesh`` every tensor goes from the
    memory-mapped file straight to its ``NamedSharding`` (per ``rules``, default the active rules of
    :mod:`rlvr_jax.sharding`): each device receives only its own slice and no full copy of the model
    exists on any device; without a mesh, on the first local device. Other
    :class:`ModelConfig` fields (``remat``, ``attention_impl``...) can be overridden by keyword.
    Raises ``ValueError`` naming the tensor for missing, unexpected or mis-shaped tensors, and naming file and
    tensor for a truncated or damaged safetensors file. Weights holding NaN or infinity raise a ``ValueError``
    naming them (``nonfinite="error"``) or are logged as a warning (``"warn"``).
    """
    path = pathlib.Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json")
    config = ModelConfig.from_json_file(path / "config.json", dtype=dtype, param_dtype=param_dtype or dtype,
                                        **config_overrides)
    model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    entries = hf_tensor_map(model)
    files = _checkpoint_files(path)

    expected = {name for name, _, _ in entries}
    extra = sorted(n for n in files if n not in expected and not any(p.match(n) for p in _IGNORED)
                   and not (n == "lm_head.weight" and config.tie_word_embeddings))
    if extra:
        shown = ", ".join(f"{n} {files[n].shape(n)}" for n in extra[:8])
        raise ValueError(f"checkpoint {path} has {len(extra)} unexpected tensor(s) for a {config.model_type} "
                         f"model with {config.num_layers} layers: {shown}")
    missing = [(n, _hf_shape(v.shape, t)) for n, v, t in entries if n not in files]
    if missing:
        shown = ", ".join(f"{n} (expected shape {s})" for n, s in missing[:8])
        raise ValueError(f"checkpoint {path} lacks {len(missing)} tensor(s): {shown}")
    for name, var, transposed in entries:
        want = _hf_shape(var.shape, transposed)
        got = files[name].shape(name)
        if got != want:
            raise ValueError(f"tensor {name!r} has shape {got} in the checkpoint but the config implies {want}")

    pdt = np.dtype(jax.numpy.dtype(config.param_dtype))

    for name, var, transposed in entries:
        src = files[name].tensor(name)
        shape = var.shape
        if mesh is None:
            sharding = SingleDeviceSharding(jax.local_devices()[0])
        else:
            spec = _spec_for(var, rules)
            check_divisible(shape, spec, mesh, f"parameter {name}")
            sharding = NamedSharding(mesh, spec)

        def cb(index, src=src, transposed=transposed):
            block = src[tuple(reversed(index))].T if transposed else src[index]
            return np.ascontiguousarray(block.astype(pdt, copy=False))

        var.set_value(jax.make_array_from_callback(shape, sharding, cb))
    _check_finite(path, {name: var.get_value() for name, var, _ in entries}, nonfinite)
    return model, config


def nonfinite_arrays(named: Mapping[str, Any]) -> list[str]:
    """Names of floating-point arrays holding a NaN or an infinity."""
    bad = []
    for name, x in named.items():
        dt = getattr(x, "dtype", None)
        if dt is None or not jnp.issubdtype(dt, jnp.inexact):
            continue
        if not bool(jnp.all(jnp.isfinite(x))):
            bad.append(name)
    return bad


def _check_finite(path, named: dict, mode: str) -> None:
    if mode not in ("error", "warn"):
        raise ValueError(f"load_hf: nonfinite must be 'error' or 'warn', got {mode!r}")
    bad = nonfinite_arrays(named)
    if not bad:
        return
    msg = (f"checkpoint {path}: {len(bad)} tensor(s) hold NaN or infinite values: {', '.join(bad[:8])}"
           + (" ..." if len(bad) > 8 else ""))
    if mode == "error":
        raise ValueError(msg + " (set model.nonfinite_weights='warn' to load them anyway)")
    import logging
    logging.getLogger(__name__).warning(msg)
    print(f"WARNING: {msg}", flush=True)


def _spec_for(var, rules) -> PartitionSpec:
    axes = var.get_metadata().get("logical_axes")
    return PartitionSpec() if axes is None else logical_to_spec(axes, rules)


def _hf_shape(shape, transposed: bool) -> tuple[int, ...]:
    return tuple(reversed(shape)) if transposed else tuple(shape)


# ---------------------------------------------------------------------------------------------
# save_hf
# ---------------------------------------------------------------------------------------------
def parse_size(size: int | str) -> int:
    """``5_000_000``, ``"5GB"``, ``"500MB"``, ``"2GiB"`` -> bytes."""
    if isinstance(size, (int, np.integer)):
        return int(size)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B)?\s*", str(size), flags=re.I)
    if not m:
        raise ValueError(f"cannot parse size {size!r} (use bytes or e.g. '5GB', '500MB')")
    num, unit = float(m.group(1)), (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(num * mult)


def _plan_shards(items: list[tuple[str, tuple[int, ...]]], itemsize: int, max_bytes: int) -> list[list[int]]:
    shards: list[list[int]] = [[]]
    used = 0
    for i, (_, shape) in enumerate(items):
        nbytes = int(np.prod(shape)) * itemsize
        if shards[-1] and used + nbytes > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += nbytes
    return shards


def _write_safetensors(fname: pathlib.Path, names, shapes, dt: np.dtype, arrays: Iterator[np.ndarray]):
    """Writes one safetensors file, consuming ``arrays`` (in ``names`` order) one at a time."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for n, s in zip(names, shapes):
        nb = int(np.prod(s)) * dt.itemsize
        header[n] = {"dtype": _DTYPE_TO_SAFE[dt], "shape": list(s), "data_offsets": [off, off + nb]}
        off += nb
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(fname, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for n, s, a in zip(names, shapes, arrays):
            if a is None:
                continue
            if tuple(a.shape) != tuple(s) or a.dtype != dt:
                raise AssertionError(f"{n}: got {a.shape} {a.dtype}, planned {s} {dt}")
            f.write(np.ascontiguousarray(a).tobytes())


def _write_side_files(path: pathlib.Path, config: ModelConfig, dtype: str, source_dir) -> None:
    """``config.json`` (merged over ``source_dir``'s), ``generation_config.json`` and the tokenizer files."""
    cfg = {}
    if source_dir is not None and (source_dir / "config.json").exists():
        with open(source_dir / "config.json") as f:
            cfg = json.load(f)
    cfg.update(config.to_hf_dict(dtype=dtype))
    with open(path / "config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    gen_src = source_dir / "generation_config.json" if source_dir is not None else None
    if gen_src is not None and gen_src.exists():
        if gen_src.resolve() != (path / "generation_config.json").resolve():
            shutil.copyfile(gen_src, path / "generation_config.json")
    else:
        eos = config.eos_token_id
        gen = {"bos_token_id": config.bos_token_id,
               "eos_token_id": None if eos is None else (eos[0] if len(eos) == 1 else list(eos)),
               "pad_token_id": config.pad_token_id}
        with open(path / "generation_config.json", "w") as f:
            json.dump({k: v for k, v in gen.items() if v is not None}, f, indent=2)
    if source_dir is not None:
        for fn in TOKENIZER_FILES:
            src = source_dir / fn
            if src.exists() and src.resolve() != (path / fn).resolve():
                shutil.copyfile(src, path / fn)


def save_hf(model: Decoder, path, source_dir=None, max_shard_size: int | str = "5GB",
            dtype: DTypeLike | None = None) -> pathlib.Path:
    """Writes ``model`` as a Hugging Face checkpoint directory loadable by transformers and vLLM.

    Files: ``config.json`` (merged over ``source_dir/config.json`` when present), ``generation_config.json``,
    ``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
    when the total exceeds ``max_shard_size``, and the tokenizer files of ``source_dir``. ``dtype``
    (a name or a numpy/JAX dtype) defaults to the model's ``param_dtype``. Collective in multi-host runs
    (all processes must call it); only process 0 writes.
    """
    config: ModelConfig = model.config
    out_dt = np.dtype(jax.numpy.dtype(dtype or config.param_dtype))
    dtype = out_dt.name  # a name for config.json, whether given as a string or a dtype
    if out_dt not in _DTYPE_TO_SAFE:
        raise ValueError(f"save_hf: unsupported export dtype {dtype!r}")
    path = pathlib.Path(path)
    writer = jax.process_index() == 0
    source_dir = pathlib.Path(source_dir) if source_dir is not None else None

    entries = hf_tensor_map(model)
    items = [(name, _hf_shape(var.shape, t)) for name, var, t in entries]
    shards = _plan_shards(items, out_dt.itemsize, parse_size(max_shard_size))
    if writer:
        path.mkdir(parents=True, exist_ok=True)
        for old in list(path.glob("model*.safetensors")) + [path / INDEX_FILE]:
            if old.exists():
                old.unlink()

    def host_array(i):
        _, var, transposed = entries[i]
        a = to_host(var.get_value())
        a = a.T if transposed else a
        return a.astype(out_dt, copy=False) if writer else None

    weight_map: dict[str, str] = {}
    total = 0
    for k, idxs in enumerate(shards):
        fname = SINGLE_FILE if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        names = [items[i][0] for i in idxs]
        shapes = [items[i][1] for i in idxs]
        arrays = (host_array(i) for i in idxs)
        if writer:
            _write_safetensors(path / fname, names, shapes, out_dt, arrays)
        else:
            for _ in arrays:  # take part in the collective gathers
                pass
        for n, s in zip(names, shapes):
            weight_map[n] = fname
            total += int(np.prod(s)) * out_dt.itemsize

    if writer:
        if len(shards) > 1:
            with open(path / INDEX_FILE, "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        _write_side_files(path, config, dtype, source_dir)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"save_hf:{path}")
    return path
