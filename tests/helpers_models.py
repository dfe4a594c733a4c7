"""Tiny random Hugging Face checkpoints for tests (no downloads): ``make_tiny_hf_model``.

The weights are re-drawn after transformers' own init so that every tensor matters numerically
(norm weights around 1, non-zero biases, std 0.1 matrices); otherwise near-uniform logits would let
a parity test pass with bugs in the norms or biases.
"""
from __future__ import annotations

import pathlib

TINY_DEFAULTS = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
                     rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)

FAMILIES = ("qwen3", "qwen2", "llama")


def hf_config(family: str = "qwen3", **overrides):
    """A transformers config object of the given family with tiny defaults."""
    import transformers

    kw = dict(TINY_DEFAULTS)
    if family == "qwen3":
        cls = transformers.Qwen3Config
        kw.update(tie_word_embeddings=True, rope_theta=1e6)
    elif family == "qwen2":
        cls = transformers.Qwen2Config
        kw.update(tie_word_embeddings=False, rope_theta=10000.0)
    elif family == "llama":
        cls = transformers.LlamaConfig
        kw.update(tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    else:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    kw.update(overrides)
    rope_theta = kw.pop("rope_theta")
    rope_scaling = kw.pop("rope_scaling", None)
    rope = {"rope_type": "default", "rope_theta": float(rope_theta)}
    if rope_scaling:
        rope.update(rope_scaling)
    cfg = cls(**kw, rope_parameters=rope)
    if family == "qwen2" and "head_dim" in kw:
        cfg.head_dim = kw["head_dim"]
    return cfg


def randomize_(model, seed: int = 0, std: float = 0.1) -> None:
    """Re-draws all parameters of a torch model in place (norms ~ 1 + N(0, 0.1), biases/matrices ~ N(0, std))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(std * noise)


def make_tiny_hf_model(tmp_dir, family: str = "qwen3", seed: int = 0, dtype: str = "float32",
                       **overrides) -> pathlib.Path:
    """Creates and saves (config.json + model.safetensors) a tiny random causal LM; returns its directory.

    ``overrides`` are transformers config fields (``hidden_size=96``, ``tie_word_embeddings=False``,
    ``rope_theta=5e6``, ``rope_scaling={...}``...).
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = hf_config(family, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    randomize_(model, seed)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    out = pathlib.Path(tmp_dir) / f"tiny-{family}-{seed}"
    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)
    return out


def load_torch_model(path, attn: str = "eager"):
    """The transformers reference model in float32 with eager attention."""
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                             attn_implementation=attn).eval()


def tiny_decoder(vocab_size: int, eos_token_id: int, seed: int = 0):
    """A 1-layer float32 Qwen3-style :class:`rlvr_jax.models.Decoder` (hidden 16, 64 positions, tied
    embeddings) over ``vocab_size`` tokens: the smallest real model for exact-probability tests."""
    from flax import nnx

    from rlvr_jax.models import Decoder, ModelConfig

    cfg = ModelConfig(model_type="qwen3", vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, max_position_embeddings=64, qk_norm=True, param_dtype="float32",
                      dtype="float32", bos_token_id=None, eos_token_id=eos_token_id)
    return Decoder(cfg, rngs=nnx.Rngs(seed))
