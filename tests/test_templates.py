"""Prompt templates: the NSR paper's two templates (Appendix D.2) exactly, as strings and as token ids."""
import pytest

from helpers_tokenizer import make_test_tokenizer
from rlvr_jax.data import encode_prompt, format_prompt, stop_token_ids

PROBLEM = "What is $1+1$?"

QWEN_BOXED = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\nWhat is $1+1$?\n"
              "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
              "<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_test_tokenizer(tmp_path_factory.mktemp("tok"))


def test_qwen_boxed_exact_string():
    assert format_prompt(PROBLEM, "qwen_boxed") == QWEN_BOXED


def test_qwen3_nothink_exact_string():
    assert format_prompt(PROBLEM, "qwen3_nothink") == QWEN_BOXED + "<think>\n\n</think>\n\n"


def test_token_ids_use_special_tokens(tok):
    ids = encode_prompt(PROBLEM, "qwen3_nothink", tok)
    im_start, im_end, think, end_think = (tok.convert_tokens_to_ids(t)
                                          for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"))
    assert (im_start, im_end, think, end_think) == (257, 258, 259, 260)
    # The test tokenizer maps every other byte to its own id, so the expected ids follow from the text.
    expected = []
    for piece in ["<|im_start|>", "system\nYou are a helpful assistant.", "<|im_end|>", "\n", "<|im_start|>",
                  "user\nWhat is $1+1$?\nPlease reason step by step, and put your final answer within \\boxed{}.",
                  "<|im_end|>", "\n", "<|im_start|>", "assistant\n", "<think>", "\n\n", "</think>", "\n\n"]:
        expected += [tok.convert_tokens_to_ids(piece)] if piece.startswith("<") and piece.endswith(">") \
            else list(piece.encode("utf-8"))
    assert ids == expected
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2  # assistant turn left open
    assert tok.decode(ids) == format_prompt(PROBLEM, "qwen3_nothink")


def test_chat_template_uses_tokenizer(tok):
    text = format_prompt(PROBLEM, "chat", tok)
    assert text == QWEN_BOXED  # the test tokenizer's chat template is ChatML
    assert encode_prompt(PROBLEM, "chat", tok) == encode_prompt(PROBLEM, "qwen_boxed", tok)


def test_plain_template_and_errors(tok):
    assert format_prompt(PROBLEM, "plain") == (
        "What is $1+1$?\nPlease reason step by step, and put your final answer within \\boxed{}.\n")
    with pytest.raises(ValueError, match="unknown prompt template 'qwen'"):
        format_prompt(PROBLEM, "qwen")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        format_prompt(PROBLEM, "chat")


def test_stop_token_ids(tok):
    assert set(stop_token_ids(tok)) == {258, 256}
