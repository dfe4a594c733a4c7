r"""Prompt templates.

The NSR paper's two templates (Appendix D.2, after Zeng et al. 2025), written with ChatML special tokens:

``qwen_boxed`` (Qwen2.5-Math; also the uniform prompt of the two-stage paper)::

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
    <|im_start|>user\n{problem}\nPlease reason step by step, and put your final answer within \boxed{}.<|im_end|>\n
    <|im_start|>assistant\n

``qwen3_nothink`` (Qwen3 non-thinking mode): the same, followed by an empty think block
``<think>\n\n</think>\n\n`` so generation starts after it.

``chat``: the same system + user messages rendered by the tokenizer's own ``apply_chat_template`` with the
generation prompt (e.g. Llama-3 Instruct). ``plain``: ``{problem}\n{instruction}\n`` with no special tokens
(base models without a chat format).

Code templates (the code track, :mod:`rlvr_jax.data.code`): ``qwen_code`` and ``qwen3_nothink_code`` are the
same ChatML turns with :data:`CODE_SYSTEM_PROMPT` and the problem text as the whole user message (the code
loaders build it with :func:`code_user_message`: the statement, the starter code when there is one, and the
request for one fenced python block); no ``\boxed{}`` instruction.

The assistant turn is left open in all of them; generation stops at ``<|im_end|>`` / ``<|endoftext|>`` /
the tokenizer's EOS (:func:`stop_token_ids`).
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful assistant."
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"

CODE_TEMPLATES = ("qwen_code", "qwen3_nothink_code")
TEMPLATES = ("qwen_boxed", "qwen3_nothink", "chat", "plain") + CODE_TEMPLATES

CODE_SYSTEM_PROMPT = ("You are an expert Python programmer. You write correct, efficient Python 3 programs that "
                      "pass every test of the task.")
CODE_INSTRUCTIONS = {
    "stdin": ("Write a complete Python 3 program: read the input from standard input and print the answer to "
              "standard output. Do not hard-code the sample tests."),
    "functional": "Complete the starter code below; your code is called on the tests.",
    "script": "Write the complete function, with any imports it needs.",
}
CODE_ANSWER_FORMAT = "Give your final solution as a single fenced Python code block: ```python ... ```."


def code_user_message(statement: str, starter_code: str = "", mode: str = "stdin") -> str:
    """The user message of a code problem: statement, what to write, starter code (if any), answer format."""
    if mode not in CODE_INSTRUCTIONS:
        raise ValueError(f"unknown code problem mode {mode!r}; expected one of {tuple(CODE_INSTRUCTIONS)}")
    parts = [statement.strip(), CODE_INSTRUCTIONS[mode]]
    if starter_code and starter_code.strip():
        parts.append(f"```python\n{starter_code.rstrip()}\n```")
    parts.append(CODE_ANSWER_FORMAT)
    return "\n\n".join(parts)


def user_message(problem: str) -> str:
    return f"{problem}\n{INSTRUCTION}"


def _chatml(problem: str) -> str:
    return (f"{IM_START}system\n{SYSTEM_PROMPT}{IM_END}\n"
            f"{IM_START}user\n{user_message(problem)}{IM_END}\n"
            f"{IM_START}assistant\n")


def _chatml_code(problem: str) -> str:
    return (f"{IM_START}system\n{CODE_SYSTEM_PROMPT}{IM_END}\n"
            f"{IM_START}user\n{problem}{IM_END}\n"
            f"{IM_START}assistant\n")


def format_prompt(problem: str, template: str, tokenizer=None) -> str:
    """The prompt text for ``problem`` under ``template`` (see the module docstring)."""
    if template == "qwen_code":
        return _chatml_code(problem)
    if template == "qwen3_nothink_code":
        return _chatml_code(problem) + EMPTY_THINK
    if template == "qwen_boxed":
        return _chatml(problem)
    if template == "qwen3_nothink":
        return _chatml(problem) + EMPTY_THINK
    if template == "plain":
        return user_message(problem) + "\n"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat_template "
                             f"(got {type(tokenizer).__name__ if tokenizer is not None else None})")
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_message(problem)}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")


def _adds_bos(tokenizer, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and not text.startswith(bos)


def encode_prompt(problem: str, template: str, tokenizer) -> list[int]:
    """Token ids of the prompt. Special-token strings in the text map to their ids; no extra special tokens are
    added except the tokenizer's BOS for ``chat``/``plain`` when the rendered text lacks it (Llama)."""
    text = format_prompt(problem, template, tokenizer)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if template in ("chat", "plain") and _adds_bos(tokenizer, text) and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id)] + ids
    return [int(i) for i in ids]


def stop_token_ids(tokenizer) -> tuple[int, ...]:
    """Ids that end a completion: ``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>`` (when in the vocabulary)
    and the tokenizer's EOS."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    for tok in (IM_END, ENDOFTEXT, "<|eot_id|>"):
        if tok in vocab:
            ids.append(int(vocab[tok]))
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.append(eos)
    elif isinstance(eos, (list, tuple)):
        ids.extend(int(e) for e in eos)
    return tuple(dict.fromkeys(ids))


def encode_fitting(problems, template: str, tokenizer, max_len: int, name: str = "dataset",
                   field: str = "data.max_prompt_len") -> tuple[list, list[list[int]], int]:
    """``(kept problems, their prompt ids, dropped count)``: the problems whose prompt (``template``) has at most
    ``max_len`` tokens. The dropped ones are reported once, with their count and share, as a warning (the
    trainer's ``train/dropped_long_prompts`` metric repeats the count every step)."""
    keep, ids, dropped = [], [], 0
    for p in problems:
        t = encode_prompt(p.problem, template, tokenizer)
        if len(t) > max_len:
            dropped += 1
            continue
        keep.append(p)
        ids.append(t)
    if dropped:
        total = dropped + len(keep)
        logger.warning("%s: %d of %d prompts (%.1f%%) are longer than %s=%d tokens with template %r and are "
                       "dropped", name, dropped, total, 100.0 * dropped / total, field, max_len, template)
    return keep, ids, dropped
