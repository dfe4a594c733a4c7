"""Model presets with the real shapes of the checkpoints the papers train (for random init and benchmarks).

Shapes follow the public ``config.json`` files of the named Hugging Face checkpoints. Tiny presets are
for tests and laptop demos (head_dim 64 so that vLLM's CPU backend also accepts them).
"""
from __future__ import annotations

from .config import ModelConfig

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def _qwen3(**kw) -> dict:
    base = dict(model_type="qwen3", vocab_size=151936, head_dim=128, num_kv_heads=8, rope_theta=1e6,
                rms_norm_eps=1e-6, max_position_embeddings=40960, qk_norm=True, bos_token_id=151643,
                eos_token_id=151645)
    base.update(kw)
    return base


def _qwen25_math(**kw) -> dict:
    base = dict(model_type="qwen2", rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
                attention_bias=True, bos_token_id=151643, eos_token_id=151643)
    base.update(kw)
    return base


def _llama32(**kw) -> dict:
    base = dict(model_type="llama", vocab_size=128256, num_kv_heads=8, rope_theta=500000.0,
                rope_scaling=_LLAMA3_ROPE, rms_norm_eps=1e-5, max_position_embeddings=131072,
                tie_word_embeddings=True, bos_token_id=128000, eos_token_id=(128001, 128008, 128009))
    base.update(kw)
    return base


_PRESETS: dict[str, dict] = {
    "qwen3-0.6b": _qwen3(hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
                         tie_word_embeddings=True),
    "qwen3-1.7b": _qwen3(hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                         tie_word_embeddings=True),
    "qwen3-4b": _qwen3(hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                       tie_word_embeddings=True),  # Qwen3-4B-*-2507 differ only in rope_theta=5e6, 262144 pos
    "qwen3-8b": _qwen3(hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32,
                       tie_word_embeddings=False),
    "qwen2.5-math-1.5b": _qwen25_math(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                      num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                                      tie_word_embeddings=True),
    "qwen2.5-math-7b": _qwen25_math(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                    num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                                    tie_word_embeddings=False),
    "llama-3.2-1b": _llama32(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                             head_dim=64),
    "llama-3.2-3b": _llama32(hidden_size=3072, intermediate_size=8192, num_layers=28, num_heads=24,
                             head_dim=128),
    # A mid-size Qwen3 shape (~42 M parameters, a 32k vocabulary) for CPU benchmarks of the sampler: the
    # largest whose long-tailed scheduler comparison runs in minutes on 2 cores (docs/performance.md).
    "mid-qwen3": _qwen3(vocab_size=32768, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8,
                        num_kv_heads=4, head_dim=64, tie_word_embeddings=True, max_position_embeddings=4096,
                        bos_token_id=1, eos_token_id=2),
    # Tiny shapes for tests and CPU demos.
    "tiny-qwen3": _qwen3(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2,
                         num_kv_heads=1, head_dim=64, tie_word_embeddings=True, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2),
    "tiny-qwen2": _qwen25_math(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2,
                               num_heads=2, num_kv_heads=1, head_dim=64, tie_word_embeddings=False,
                               max_position_embeddings=2048, bos_token_id=1, eos_token_id=2),
    "tiny-llama": _llama32(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2,
                           num_kv_heads=1, head_dim=64, max_position_embeddings=2048,
                           rope_scaling={**_LLAMA3_ROPE, "original_max_position_embeddings": 256},
                           bos_token_id=1, eos_token_id=2),
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of a named preset; ``overrides`` replace fields (e.g. ``dtype='bfloat16'``)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {preset_names()}")
    return ModelConfig(**{**_PRESETS[name], **overrides})
