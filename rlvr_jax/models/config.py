"""Decoder configuration, read from / written to a Hugging Face ``config.json``.

One frozen (hashable) dataclass covers the three supported families:

* ``qwen2``  (Qwen2 / Qwen2.5, e.g. Qwen2.5-Math): biases on q/k/v, no bias on o_proj, no q/k norm.
* ``qwen3``  per-head RMSNorm on q and k (over ``head_dim``) before RoPE; ``attention_bias`` (usually
  false) applies to q/k/v/o.
* ``llama``  (Llama 3.x): ``attention_bias`` applies to q/k/v/o; usually llama3 RoPE scaling.

RoPE parameters are accepted in both layouts Hugging Face has used: the transformers<5 layout
(top-level ``rope_theta`` plus ``rope_scaling``) and the transformers>=5 layout (``rope_parameters``
holding ``rope_theta`` and ``rope_type``/scaling keys). ``to_hf_dict`` writes both, which both
transformers 4.x/5.x and vLLM read.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = (None, "xla", "cudnn")
DECODE_ATTENTION_IMPLS = ("xla", "pallas")
DTYPES = ("float32", "bfloat16", "float16")



def dtype_name(dtype) -> str:
    """The name (``'float32'``, ``'bfloat16'``, ``'float16'``) of a dtype given as a string, a numpy/JAX
    dtype or a scalar type such as ``jnp.float32``; raises ``ValueError`` naming it for anything else."""
    if isinstance(dtype, str):
        name = dtype
    else:
        import numpy as np
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise ValueError(f"not a dtype: {dtype!r} (use one of {DTYPES} or e.g. jnp.bfloat16)") from None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (a string or a numpy/JAX dtype), got {dtype!r}")
    return name


_ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
}


def _freeze(d: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
    if d is None:
        return None
    return tuple(sorted((str(k), v) for k, v in d.items()))


def _token_ids(v) -> tuple[int, ...] | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes, numerics and execution options of a decoder-only transformer.

    ``rope_scaling`` is ``None`` for plain RoPE, or a sorted tuple of ``(key, value)`` pairs holding
    ``rope_type`` (``'linear'`` or ``'llama3'``) and that type's parameters (``factor``,
    ``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``); a dict may be
    passed and is frozen. ``param_dtype`` is the storage dtype of the weights, ``dtype`` the compute
    dtype of matmuls/activations (RMSNorm, softmax and logits are always float32).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: Any = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    attention_bias: bool = False  # bias on q/k/v projections
    o_proj_bias: bool = False  # bias on the attention output projection
    qk_norm: bool = False
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: str = "none"
    attention_impl: str | None = None  # jax.nn.dot_product_attention implementation
    # KV-cache decode attention: "xla" (dot_product_attention over the whole [B,S,K,D] cache) or "pallas"
    # (head-major [B,K,S,D] cache, the Pallas GPU decode kernel reads only the filled slots;
    # rlvr_jax.models.decode_attention).
    decode_attention_impl: str = "xla"
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {SUPPORTED_MODEL_TYPES}, got {self.model_type!r}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {v!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("param_dtype", "dtype"):  # strings or numpy/JAX dtypes, stored as names
            try:
                object.__setattr__(self, name, dtype_name(getattr(self, name)))
            except ValueError:
                raise ValueError(f"ModelConfig.{name} must be one of {DTYPES} (or the numpy/JAX dtype), "
                                 f"got {getattr(self, name)!r}") from None
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"ModelConfig.attention_impl must be one of {ATTENTION_IMPLS}, "
                             f"got {self.attention_impl!r}")
        if self.decode_attention_impl not in DECODE_ATTENTION_IMPLS:
            raise ValueError(f"ModelConfig.decode_attention_impl must be one of {DECODE_ATTENTION_IMPLS}, "
                             f"got {self.decode_attention_impl!r}")
        rs = self.rope_scaling
        if isinstance(rs, Mapping):
            rs = _freeze(rs)
            object.__setattr__(self, "rope_scaling", rs)
        if rs is not None:
            d = dict(rs)
            rope_type = d.get("rope_type", d.get("type"))
            if rope_type not in ("linear", "llama3"):
                raise NotImplementedError(
                    f"rope scaling type {rope_type!r} is not supported (supported: {SUPPORTED_ROPE_TYPES})")
            need = ("factor",) if rope_type == "linear" else (
                "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            missing = [k for k in need if k not in d]
            if missing:
                raise ValueError(f"rope_scaling of type {rope_type!r} lacks {missing}: {d}")
        object.__setattr__(self, "eos_token_id", _token_ids(self.eos_token_id))
        object.__setattr__(self, "rope_theta", float(self.rope_theta))

    # ----------------------------------------------------------------------------------------
    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    @property
    def architecture(self) -> str:
        return _ARCHITECTURES[self.model_type]

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        h, n, k, d, f = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        attn = h * n * d * 2 + h * k * d * 2
        if self.attention_bias:
            attn += n * d + 2 * k * d
        if self.o_proj_bias:
            attn += h
        if self.qk_norm:
            attn += 2 * d
        per_layer = attn + 3 * h * f + 2 * h
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + h

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], **overrides) -> "ModelConfig":
        """Builds a config from a Hugging Face ``config.json`` dict (``overrides`` win)."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r} in config.json "
                             f"(supported: {SUPPORTED_MODEL_TYPES})")
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise NotImplementedError(f"hidden_act {act!r} is not supported (only 'silu')")
        if d.get("mlp_bias", False):
            raise NotImplementedError("mlp_bias=True is not supported")
        if d.get("use_sliding_window", False):
            raise NotImplementedError("use_sliding_window=True is not supported")
        n_heads = int(d["num_attention_heads"])
        head_dim = d.get("head_dim") or int(d["hidden_size"]) // n_heads

        # RoPE: transformers>=5 `rope_parameters`, else legacy `rope_theta` + `rope_scaling`.
        rope_params = dict(d.get("rope_parameters") or {})
        legacy_scaling = dict(d.get("rope_scaling") or {})
        rope_theta = rope_params.get("rope_theta", d.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in {**legacy_scaling, **rope_params}.items() if k != "rope_theta"}
        if "type" in scaling and "rope_type" not in scaling:
            scaling["rope_type"] = scaling.pop("type")
        scaling.pop("type", None)
        rope_type = scaling.get("rope_type", "default")
        if rope_type == "default":
            rope_scaling = None
        else:
            rope_scaling = {k: v for k, v in scaling.items()
                            if k in ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
                                     "original_max_position_embeddings")}
            rope_scaling["rope_type"] = rope_type
        if "partial_rotary_factor" in scaling and scaling["partial_rotary_factor"] != 1.0:
            raise NotImplementedError("partial_rotary_factor != 1 is not supported")

        attn_bias = bool(d.get("attention_bias", False))
        if model_type == "qwen2":
            qkv_bias, o_bias = True, False  # hard-wired in Qwen2Attention
        else:
            qkv_bias = o_bias = attn_bias
        kw = dict(
            model_type=model_type,
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_layers=int(d["num_hidden_layers"]),
            num_heads=n_heads,
            num_kv_heads=int(d.get("num_key_value_heads") or n_heads),
            head_dim=int(head_dim),
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
            attention_bias=qkv_bias,
            o_proj_bias=o_bias,
            qk_norm=(model_type == "qwen3"),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
        )
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_json_file(cls, path, **overrides) -> "ModelConfig":
        with open(path) as f:
            return cls.from_hf_dict(json.load(f), **overrides)

    def to_hf_dict(self, dtype: str | None = None) -> dict[str, Any]:
        """The Hugging Face ``config.json`` content (loadable by transformers and vLLM)."""
        if self.model_type == "qwen2" and (not self.attention_bias or self.o_proj_bias):
            raise ValueError("qwen2 checkpoints always have q/k/v biases and no o_proj bias; "
                             f"got attention_bias={self.attention_bias}, o_proj_bias={self.o_proj_bias}")
        if self.model_type != "qwen2" and self.attention_bias != self.o_proj_bias:
            raise ValueError(f"{self.model_type} uses one attention_bias flag for q/k/v/o; got "
                             f"attention_bias={self.attention_bias}, o_proj_bias={self.o_proj_bias}")
        dtype = dtype or self.param_dtype
        scaling = self.rope_scaling_dict
        rope_parameters = {"rope_type": "default", "rope_theta": self.rope_theta}
        if scaling is not None:
            rope_parameters.update(scaling)
        eos = self.eos_token_id
        d: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "rope_scaling": scaling,
            "rope_parameters": rope_parameters,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": (None if eos is None else (eos[0] if len(eos) == 1 else list(eos))),
            "pad_token_id": self.pad_token_id,
            "torch_dtype": dtype,
            "dtype": dtype,
        }
        if self.model_type in ("qwen3", "llama"):
            d["attention_bias"] = self.attention_bias
        if self.model_type == "llama":
            d["mlp_bias"] = False
            d["pretraining_tp"] = 1
        if self.model_type in ("qwen2", "qwen3"):
            d["use_sliding_window"] = False
            d["sliding_window"] = None
            d["max_window_layers"] = self.num_layers
            d["layer_types"] = ["full_attention"] * self.num_layers
        return d
