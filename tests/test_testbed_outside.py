"""rlvr_jax.testbed.outside: samples outside the candidate strings, classified and graded, against hand-made
cases (every category, an outside answer the verifier still credits, Wilson intervals at reference values) and
end to end on a tiny real model (the CLI's counts add up and its exact remaining mass is the exact module's)."""
import json

import numpy as np
import pytest

from rlvr_jax.testbed import exact as E
from rlvr_jax.testbed import outside as O
from rlvr_jax.testbed import task as T

PUZZLE = T.Puzzle((3, 8, 6), 30)


@pytest.fixture(scope="module")
def tok():
    from rlvr_jax.testbed.tokenizer import build_tokenizer

    return build_tokenizer()


def ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("text,stopped,want", [
    ("\\boxed{3*8+6}", True, "candidate"),
    ("\\boxed{3*8+6}", False, "no_stop"),
    ("\\boxed{9*8+2}", True, "other_numbers"),         # invented numbers
    ("\\boxed{3*8+6+6}", True, "other_numbers"),       # a number used twice
    ("\\boxed{3*8}", True, "other_numbers"),           # a number left out
    ("\\boxed{(3*8)+6}", True, "right_numbers_other_form"),
    ("so \\boxed{ 8 * 3 + 6 }", True, "right_numbers_other_form"),
    ("\\boxed{3*+}", True, "garbled"),
    ("\\boxed{3/8+6}", True, "garbled"),               # an operator the task does not allow
    ("\\boxed{3*8", True, "garbled"),
    ("30", True, "no_answer"),
])
def test_classify_every_category(tok, text, stopped, want):
    c = E.candidates(T.to_problems([PUZZLE], "t"), tok)
    toks = {tuple(c.tokens[r, :c.lengths[r]].tolist()) for r in range(len(c.texts))}
    texts = {tok.decode(c.tokens[r, :c.lengths[r]].tolist()) for r in range(len(c.texts))}
    assert len(toks) == len(texts) == 54
    assert O.classify(ids(tok, text), stopped, text, PUZZLE, toks, texts) == want


def test_candidate_text_in_other_tokens_is_told_apart(tok):
    text = "\\boxed{3*8+6}"
    other = [t + 1000 for t in ids(tok, text)]          # a different token string decoding to the same text
    c = E.candidates(T.to_problems([PUZZLE], "t"), tok)
    toks = {tuple(c.tokens[r, :c.lengths[r]].tolist()) for r in range(len(c.texts))}
    assert O.classify(other, True, text, PUZZLE, toks, {text}) == "candidate_text_other_tokens"


def test_wilson_reference_values():
    lo, hi = O.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = O.wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert O.wilson(0, 0) == (0.0, 1.0)


def test_classify_samples_counts_grades_and_shares(tok):
    puzzles = [PUZZLE, T.Puzzle((7, 8, 3), 53)]
    c = E.candidates(T.to_problems(puzzles, "t"), tok)
    eos = tok.eos_token_id
    s = lambda text, stop=True: (ids(tok, text) + ([eos] if stop else []), stop)  # noqa: E731
    samples = [[s("\\boxed{3*8+6}"), s("\\boxed{3*6+8}"), s("\\boxed{(3*8)+6}"), s("\\boxed{9*9}")],
               [s("\\boxed{7*8-3}"), s("\\boxed{7*8-", stop=False), s("\\boxed{(7*8)-3}"), s("53")]]
    r = O.classify_samples(samples, puzzles, c, lambda x: tok.decode(x))
    assert r["samples"] == 8 and r["outside"] == 5 and r["outside_share"] == 5 / 8
    assert r["counts"] == {"candidate": 3, "candidate_text_other_tokens": 0, "other_numbers": 1,
                           "right_numbers_other_form": 2, "garbled": 0, "no_answer": 1, "no_stop": 1}
    # (3*8)+6 = 30 and (7*8)-3 = 53 are outside the candidates yet credited: exact pass@k misses them
    assert r["graded_correct"]["right_numbers_other_form"] == 2 and r["graded_correct_total"] == 2
    assert r["puzzles_with_outside"] == 2 and r["outside_interval"] == O.wilson(5, 8)
    with pytest.raises(ValueError, match="2 candidate puzzles"):
        O.classify_samples(samples[:1], puzzles, c, lambda x: tok.decode(x))


def test_cli_on_a_tiny_real_model(tmp_path, tok):
    """A random tiny testbed-vocabulary base saved as a warm start: every sample is counted once, the exact
    remaining mass in the report is exact.answer_probs' on the same puzzles, and the report says where it is."""
    from helpers_models import tiny_decoder

    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.models import load_hf, save_hf

    puzzles = [PUZZLE, T.Puzzle((7, 8, 3), 53), T.Puzzle((2, 2, 5), 9)]
    warm = tmp_path / "warm"
    T.write_jsonl(T.to_problems(puzzles, "heldout"), warm / "data" / "heldout.jsonl")
    (warm / "warmstart.json").write_text(json.dumps({"config": {"show_steps": False}}))
    base = tiny_decoder(len(tok), tok.eos_token_id, seed=0)
    tok.save_pretrained(str(warm / "base_hf"))
    save_hf(base, str(warm / "base_hf"))
    out = tmp_path / "out"
    res = O.main([str(warm), "--out", str(out), "--n", "8", "--setting", "train"])["base"]
    assert res["samples"] == 3 * 8 and sum(res["counts"].values()) == 24
    c = E.candidates(T.to_problems(puzzles, "heldout"), tok)
    p = E.answer_probs(load_hf(str(warm / "base_hf"), dtype="float32")[0], c, stop_token_ids(tok),
                       {"train": E.SETTINGS["train"]}, pad_id=int(tok.pad_token_id))["train"]
    assert res["exact_remaining"] == pytest.approx(float(np.mean(1.0 - E.per_puzzle(p, c))), abs=1e-12)
    saved = json.loads((out / "outside.json").read_text())
    assert saved["n"] == 8 and saved["results"]["base"]["counts"] == res["counts"]
    assert "| base | 24 |" in (out / "outside.md").read_text()
    with pytest.raises(SystemExit, match="--n must be >= 1"):
        O.main([str(warm), "--out", str(out), "--n", "0"])
