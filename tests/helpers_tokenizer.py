"""An offline test tokenizer with the Qwen special tokens (no download): the package's built-in byte tokenizer
(rlvr_jax.data.byte_tokenizer), saved to a directory."""
from __future__ import annotations

from rlvr_jax.data.byte_tokenizer import CHATML_TEMPLATE, SPECIAL_TOKENS, save_byte_tokenizer  # noqa: F401


def make_test_tokenizer(directory):
    """Builds the tokenizer, saves it under ``directory`` (tokenizer.json + config) and returns it loaded back
    through ``transformers.AutoTokenizer`` (a ``PreTrainedTokenizerFast``)."""
    return save_byte_tokenizer(directory)
