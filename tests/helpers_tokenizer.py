"""An offline test tokenizer with the Qwen special tokens (no download).

Byte-level BPE with no merges: ids 0..255 are the 256 byte symbols of GPT-2's byte-to-unicode map (so any text
round-trips, one token per byte), followed by the special tokens

    256 <|endoftext|>   257 <|im_start|>   258 <|im_end|>   259 <think>   260 </think>

(the same order as Qwen's 151643..). Saved with a ChatML chat template, so ``apply_chat_template`` works.
"""
from __future__ import annotations

import pathlib

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_test_tokenizer(directory):
    """Builds the tokenizer, saves it under ``directory`` (tokenizer.json + config) and returns it loaded back
    through ``transformers.AutoTokenizer`` (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    # Order the 256 symbols by the byte they stand for, so id == byte value.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_to_symbol = dict(zip(bs, (chr(c) for c in cs)))
    assert set(byte_to_symbol.values()) == set(byte_symbols)
    vocab = {byte_to_symbol[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML_TEMPLATE)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))
