"""A byte-level tokenizer with the Qwen special tokens, built offline (no download): ``tokenizer_path="builtin:bytes"``.

Byte-level BPE with no merges: ids 0..255 are the 256 byte symbols of GPT-2's byte-to-unicode map (so any text
round-trips, one token per byte), followed by the special tokens

    256 <|endoftext|>   257 <|im_start|>   258 <|im_end|>   259 <think>   260 </think>

(the same order as Qwen's 151643..), with a ChatML chat template so ``apply_chat_template`` works. 261 ids fit
the tiny presets' 512-entry vocabulary; ``configs/tiny_cpu.py`` uses it, so the tiny run needs no files.
"""
from __future__ import annotations

import os

BUILTIN_PREFIX = "builtin:"
BUILTIN_TOKENIZERS = ("builtin:bytes",)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_symbols() -> dict[int, str]:
    """byte value -> its printable symbol (GPT-2's byte-to-unicode map)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_byte_tokenizer():
    """The tokenizer as a ``transformers.PreTrainedTokenizerFast`` (not saved)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    sym = _byte_symbols()
    if set(sym.values()) != set(pre_tokenizers.ByteLevel.alphabet()):
        raise RuntimeError("byte-to-unicode map does not match tokenizers' ByteLevel alphabet")
    tok = Tokenizer(models.BPE(vocab={sym[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML_TEMPLATE)


def save_byte_tokenizer(directory: str | os.PathLike):
    """Builds the tokenizer, saves it under ``directory`` and returns it loaded back with ``AutoTokenizer``."""
    from transformers import AutoTokenizer

    os.makedirs(directory, exist_ok=True)
    build_byte_tokenizer().save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


def load_tokenizer_path(path: str):
    """``AutoTokenizer.from_pretrained(path)``, or the built-in tokenizer for ``builtin:bytes``."""
    if path.startswith(BUILTIN_PREFIX):
        if path not in BUILTIN_TOKENIZERS:
            raise ValueError(f"unknown built-in tokenizer {path!r}; valid: {', '.join(BUILTIN_TOKENIZERS)}")
        return build_byte_tokenizer()
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)
