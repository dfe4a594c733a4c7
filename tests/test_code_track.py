"""The code track end to end: evaluate a tiny model on HumanEval and on an LCB-format fixture (real JAX engine),
pass@k of scripted code responses against hand computation, and one training step on code problems."""
import json

import numpy as np
import pytest
from helpers_code import (HALF_OK_OTHER_FORMAT, SUM_OK, SUM_WRONG_ON_TEST1, TWO_SUM_OK, fenced,
                          write_lcb_fixture)

from rlvr_jax.data import load_dataset
from rlvr_jax.evaluation import EvalConfig, evaluate, read_records
from rlvr_jax.rewards import GraderPool
from rlvr_jax.rewards.code_grader import CODE_STATUSES
from rlvr_jax.rollout.base import Completion, RolloutEngine

# Per problem: a correct and a wrong solution (the LCB fixture of helpers_code).
SOLUTIONS = {
    "abc001_a": (SUM_OK, SUM_WRONG_ON_TEST1),
    "abc002_b": (HALF_OK_OTHER_FORMAT, "print(0)\n"),
    "two-sum": (TWO_SUM_OK, "class Solution:\n    def twoSum(self, nums, target):\n        return []\n"),
}
KEYS = {"Print the sum": "abc001_a", "Print N / 2": "abc002_b", "Return indices": "two-sum"}


@pytest.fixture(scope="module")
def code_env(env):
    """The conftest's tiny environment with the LCB-format fixture (helpers_code) added to its data folder."""
    write_lcb_fixture(env["data"])
    return env


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=1, timeout_s=10.0) as p:
        yield p


@pytest.mark.slow
def test_evaluate_tiny_model_on_humaneval_and_lcb_fixture(code_env, pool, tmp_path):
    from flax import nnx

    from rlvr_jax.models import Decoder, get_preset
    from rlvr_jax.rollout import make_engine

    tok = code_env["tok"]
    model = Decoder(get_preset("tiny-qwen3"), rngs=nnx.Rngs(0))
    engine = make_engine("jax", model=model, pad_id=int(tok.pad_token_id), eos_token_ids=(258, 256),
                         max_batch_size=8, max_new_tokens_limit=8)
    datasets = {"humaneval": load_dataset("humaneval").take(1), "lcb": load_dataset("lcb", code_env["data"])}
    cfg = EvalConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, template="qwen_code", greedy=False,
                     prompt_batch_size=4, grade_workers=1)
    summary = evaluate(engine, tok, datasets, cfg, tmp_path / "eval", pool=pool, progress=False)
    for name, n_problems in (("humaneval", 1), ("lcb", 3)):
        s = summary[name]
        assert s["num_problems"] == n_problems and s["n"] == 2
        # 8 random tokens never hold a fenced block: every sample is no_answer, pass@k is 0.
        assert s["status_counts"]["no_answer"] == 2 * n_problems
        assert s["pass_at_k"] == {"1": 0.0, "2": 0.0}
        recs = read_records(tmp_path / "eval" / name / "samples.jsonl")
        assert len(recs) == 2 * n_problems and all(1 <= r.length <= 8 for r in recs)
    assert (tmp_path / "eval" / "pass_at_k.png").exists()


class CodeEngine(RolloutEngine):
    """Sample s of problem p answers ``SCRIPT[p][s]``: 'ok' / 'wrong' code in a fenced block, or 'prose'."""

    SCRIPT = {"abc001_a": ["ok", "ok", "wrong", "prose"], "abc002_b": ["ok", "wrong", "wrong", "wrong"],
              "two-sum": ["wrong", "prose", "wrong", "wrong"]}

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def generate(self, prompts, n, params):
        out = []
        for pi, prompt in enumerate(prompts):
            text = self.tok.decode(prompt)
            pid = next(v for k, v in KEYS.items() if k in text)
            comps = []
            for s in range(n):
                kind = self.SCRIPT[pid][s]
                reply = "I am not sure." if kind == "prose" else fenced(SOLUTIONS[pid][kind == "wrong"])
                ids = list(self.tok(reply, add_special_tokens=False)["input_ids"]) + [258]
                comps.append(Completion(pi, s, ids, [-0.5] * len(ids), "stop"))
            out.append(comps)
        return out

    def sync_weights(self, model_or_params, version):
        return 0.0


def test_evaluate_scripted_code_responses_matches_hand_computed_pass_at_k(code_env, pool, tmp_path):
    cfg = EvalConfig(n=4, temperature=1.0, top_p=1.0, max_new_tokens=512, template="qwen_code", greedy=True,
                     prompt_batch_size=2, grade_workers=1, save_text=True)
    s = evaluate(CodeEngine(code_env["tok"]), code_env["tok"], [load_dataset("lcb", code_env["data"])], cfg,
                 tmp_path / "e", pool=pool, progress=False)["lcb"]
    # correct counts per problem c = 2, 1, 0 of n = 4; pass@k = mean of 1 - C(n-c, k) / C(n, k)
    assert s["pass_at_k"]["1"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert s["pass_at_k"]["2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6) + 0) / 3)
    assert s["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert s["greedy_accuracy"] == pytest.approx(2 / 3)  # greedy = sample 0: ok, ok, wrong
    counts = s["status_counts"]
    assert (counts["correct"], counts["incorrect"], counts["no_answer"]) == (3, 7, 2)
    recs = read_records(tmp_path / "e" / "lcb" / "samples.jsonl")
    wrong = [r for r in recs if r.problem_id == "abc001_a" and r.sample_index == 2][0]
    assert wrong.status == "incorrect" and wrong.extracted == SUM_WRONG_ON_TEST1
    assert wrong.error == "test 1: line 1: got '0', expected '6'"  # the records keep the grader's detail


@pytest.mark.slow
def test_one_training_step_on_code(code_env, tmp_path, monkeypatch):
    from rlvr_jax.config.presets import experiment
    from rlvr_jax.train import run

    c = experiment("grpo", "tiny")
    c.data.train = "lcb"
    c.data.data_dir = str(code_env["data"])
    c.data.template = "qwen_code"
    c.data.max_prompt_len = 768
    c.data.grade_workers = 1
    c.model.tokenizer_path = str(code_env["tok_dir"])
    c.logging.out_dir = str(tmp_path / "run")
    c.logging.progress = False
    c.logging.eval_every = 0
    c.rollout.n = 4
    c.rollout.max_new_tokens = 8
    c.train.prompt_batch_size = 2
    c.train.mini_batch_size = 2
    c.train.micro_batch_size = 8
    c.train.total_steps = 1
    c.train.export_final = False
    # The random policy writes no code; replace sample 0 of each group by a correct solution and sample 1 by a
    # wrong one (samples 2, 3 keep the model's text: no_answer), so rewards come from real sandboxed runs.
    original = GraderPool.grade_problems
    seen = []

    def scripted(self, problems, responses, **kw):
        responses = [fenced(SOLUTIONS[p.id][r % 4]) if r % 4 < 2 else t
                     for r, (p, t) in enumerate(zip(problems, responses))]
        graded = original(self, problems, responses, **kw)
        seen.extend(g.status for g in graded)
        return graded

    monkeypatch.setattr(GraderPool, "grade_problems", scripted)
    res = run(c, tokenizer=code_env["tok"])
    assert res.steps_done == 1
    m = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert seen == ["correct", "incorrect", "no_answer", "no_answer"] * 2
    assert m["train/correct_ratio"] == pytest.approx(0.25) and m["train/no_answer_ratio"] == pytest.approx(0.5)
    assert m["critic/score/mean"] == pytest.approx((2 - 6) / 8)
    assert m["train/fully_solved_ratio"] == 0.0 and np.isfinite(m["actor/grad_norm"]) and m["actor/grad_norm"] > 0
    codes = {k.split("/")[-1]: v for k, v in m.items() if k.startswith("reward/code_status/")}
    assert codes == {**{s: 0 for s in CODE_STATUSES}, "passed": 2, "failed": 2, "no_answer": 4}
