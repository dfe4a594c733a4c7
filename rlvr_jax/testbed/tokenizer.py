r"""A character-level tokenizer for the testbed (built offline with ``tokenizers``, < 100 ids).

Vocabulary, in id order:

* special tokens ``<|pad|> <|endoftext|> <|im_start|> <|im_end|> <think> </think> <unk>`` (the Qwen-style
  ones every prompt template of :mod:`rlvr_jax.data.templates` needs; ``<|endoftext|>`` is EOS);
* one id per character of :data:`CHARS` (digits, ``+ - * / ( ) = . , : ? { } \``, space, newline, letters);
* two word-level added tokens: the templates' fixed instruction sentence
  (:data:`rlvr_jax.data.templates.INSTRUCTION`) and ``\boxed{``, so a ``plain``-template prompt costs a
  dozen tokens and an answer ``\boxed{3*8+6}`` six.

Text is split into single characters (after the added tokens are matched) and decoded by concatenation,
so ``decode(encode(s)) == s`` for any string over the vocabulary. Wrapped as a
``transformers.PreTrainedTokenizerFast`` (``AutoTokenizer.from_pretrained`` loads the saved directory).
"""
from __future__ import annotations

import os
import string

from rlvr_jax.data.templates import ENDOFTEXT, IM_END, IM_START, INSTRUCTION

PAD = "<|pad|>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, ENDOFTEXT, IM_START, IM_END, "<think>", "</think>", UNK)
BOXED = "\\boxed{"
WORD_TOKENS = (INSTRUCTION, BOXED)
CHARS = string.digits + "+-*/()=.,:?{}\\ \n" + string.ascii_lowercase + string.ascii_uppercase
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer():
    """The tokenizer as a ``PreTrainedTokenizerFast`` (not saved)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False) for t in WORD_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=ENDOFTEXT, pad_token=PAD, unk_token=UNK,
                                   chat_template=CHATML_TEMPLATE, clean_up_tokenization_spaces=False)


def save_tokenizer(directory: str | os.PathLike):
    """Builds the tokenizer, saves it under ``directory`` and returns it loaded back with ``AutoTokenizer``."""
    from transformers import AutoTokenizer

    os.makedirs(directory, exist_ok=True)
    build_tokenizer().save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))
