"""A vLLM worker extension (``--worker-extension-cls``) for the filesystem weight sync.

vLLM mixes this class into every worker; ``POST /collective_rpc {"method": "rlvr_reload_weights",
"kwargs": {"weights_path": DIR}}`` then runs ``rlvr_reload_weights`` on each worker.

Why it exists: vLLM 0.32's in-place ``reload_weights`` misses tied output embeddings on the CPU
build. With ``tie_word_embeddings`` (Qwen3-0.6B/1.7B, Llama-3.2) the checkpoint has no
``lm_head.weight``; the reload updates ``embed_tokens.weight`` in place (which the LM head shares),
but on CPU the LM head computes with a *packed copy* of that weight made at load time
(``dispatch_cpu_unquantized_gemm``), and nothing re-packs it, so logits keep using the old
output embedding. ``rlvr_reload_weights`` reloads, then re-runs the LM head's
``process_weights_after_loading`` for heads that share their weight with an input embedding
(on GPU that method is a no-op and the shared weight is already updated).

This module must stay importable inside the vLLM server without JAX: it imports only vLLM.
"""
from __future__ import annotations


def refresh_tied_lm_heads(model) -> int:
    """Re-runs weight post-processing of LM heads tied to an input embedding; returns how many."""
    from vllm.model_executor.layers.vocab_parallel_embedding import (ParallelLMHead,
                                                                     VocabParallelEmbedding)

    def ptr(module):
        w = getattr(module, "weight", None)
        return None if w is None or w.is_meta or w.numel() == 0 else w.data_ptr()

    embedding_ptrs = {ptr(m) for m in model.modules()
                      if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)}
    embedding_ptrs.discard(None)
    refreshed = 0
    for m in model.modules():
        method = getattr(m, "quant_method", None)
        if isinstance(m, ParallelLMHead) and ptr(m) in embedding_ptrs and method is not None:
            method.process_weights_after_loading(m)
            refreshed += 1
    return refreshed


class WeightSyncExtension:
    """Worker methods callable through /collective_rpc (``self`` is a vLLM worker)."""

    def rlvr_reload_weights(self, weights_path: str) -> int:
        """``reload_weights`` from an HF safetensors directory, then refresh tied LM heads."""
        from vllm.config import set_current_vllm_config

        self.reload_weights(weights_path=weights_path)
        with set_current_vllm_config(self.vllm_config):
            return refresh_tied_lm_heads(self.model_runner.get_model())
