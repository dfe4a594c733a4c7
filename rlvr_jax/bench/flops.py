"""Model FLOPs accounting and device peaks for MFU.

Training FLOPs per token (forward + backward), the convention used throughout the benchmarks:

    F_train = 6 * N_matmul + 6 * L * T * (n_heads * head_dim)

N_matmul counts every weight that takes part in a matrix product (attention q/k/v/o, the MLP, and the LM head;
the embedding lookup is a gather and is not counted, a tied LM head is counted once as the head).
The attention term is the causal score and value products: forward QK^T and AV cost 2 * 2 * T * d per token for
full attention, half of that under a causal mask, times 3 for forward + backward: 12 * T * d / 2 per layer.
This reproduces the peer figures quoted in issue 8 (Qwen3-1.7B, 4x2048, 21.6k tok/s -> 24% of 989 TFLOP/s).
Decode FLOPs are not used for the sampler: it is bandwidth-bound and is judged against its memory roofline.
"""
from __future__ import annotations

# Dense bf16 peak (no sparsity), TFLOP/s, by device-kind substring (jax's device_kind / torch's device name).
_PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "TPU v5p": 459.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v4": 275.0,
    "TPU v6": 918.0,
}


def peak_bf16_flops(device_kind: str) -> float | None:
    """Dense bf16 peak in FLOP/s for a device kind string, or None when unknown (e.g. CPU)."""
    for key, tflops in _PEAK_BF16_TFLOPS.items():
        if key.lower() in device_kind.lower():
            return tflops * 1e12
    return None


def matmul_params(cfg) -> int:
    """Weights used in matrix products per forward token (see module docstring)."""
    h, hd = cfg.hidden_size, cfg.head_dim
    attn = h * (cfg.num_heads * hd) * 2 + h * (cfg.num_kv_heads * hd) * 2
    mlp = 3 * h * cfg.intermediate_size
    return cfg.num_layers * (attn + mlp) + h * cfg.vocab_size


def total_params(cfg) -> int:
    """All parameters, as stored (tied embeddings counted once)."""
    h, hd = cfg.hidden_size, cfg.head_dim
    per_layer = (h * (cfg.num_heads * hd) * 2 + h * (cfg.num_kv_heads * hd) * 2
                 + 3 * h * cfg.intermediate_size + 2 * h)
    if getattr(cfg, "attention_bias", False):
        per_layer += cfg.num_heads * hd + 2 * cfg.num_kv_heads * hd
    if getattr(cfg, "qk_norm", False):
        per_layer += 2 * hd
    embed = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    return cfg.num_layers * per_layer + embed + h


def train_flops_per_token(cfg, seq_len: int) -> float:
    return 6.0 * matmul_params(cfg) + 6.0 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim


def kv_cache_bytes_per_token(cfg, bytes_per_elem: int) -> int:
    """K and V bytes stored per token across all layers."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * bytes_per_elem
