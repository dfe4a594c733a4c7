"""The evaluator: metrics against hand-computed references with a scripted engine, resume, compare. The command
line end to end (the README's evaluation on a tiny random model with the JAX engine) is in
tests/test_doc_commands.py (check_tiny_eval); its config in tests/test_cli.py."""
import csv
import json
import math

import numpy as np
import pytest

from helpers_tokenizer import make_test_tokenizer
from rlvr_jax.data import Dataset, Problem
from rlvr_jax.evaluation import EvalConfig, answer_entropy, compare, default_ks, evaluate, read_records
from rlvr_jax.evaluation.config import apply_preset
from rlvr_jax.rewards import GraderPool
from rlvr_jax.rollout.base import Completion, RolloutEngine

PROBLEMS = [Problem(id="p0", problem="One plus one?", answer="2"),
            Problem(id="p1", problem="Half of one?", answer="\\frac{1}{2}"),
            Problem(id="p2", problem="Seven?", answer="7")]
# Scripted responses per problem (sample s gets RESPONSES[p][s]); greedy decoding returns sample 0.
RESPONSES = {"One plus one?": ["\\boxed{2}"] * 4,
             "Half of one?": ["\\boxed{0.5}", "\\boxed{1/3}", "I give up", "so \\boxed{\\frac{2}{4}}"],
             "Seven?": ["\\boxed{8}", "\\boxed{8}", "\\boxed{8}", "\\boxed{9}"]}


class ScriptedEngine(RolloutEngine):
    """Returns RESPONSES for the problem found in the decoded prompt; counts the prompts it served."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.prompts_served = 0
        self.params = []

    def generate(self, prompts, n, params):
        self.prompts_served += len(prompts)
        self.params.append(params)
        out = []
        for pi, prompt in enumerate(prompts):
            text = self.tok.decode(prompt)
            key = next(k for k in RESPONSES if k in text)
            comps = []
            for s in range(n):
                ids = list(self.tok(RESPONSES[key][s], add_special_tokens=False)["input_ids"]) + [258]
                comps.append(Completion(pi, s, ids, [-0.5] * len(ids), "stop"))
            out.append(comps)
        return out

    def sync_weights(self, model_or_params, version):
        return 0.0


def fake_entropy_fn(prompts, completions):
    # Per-token "entropy" = 0.1 * (token id % 3): a deterministic function of the completion only.
    return [0.1 * (np.asarray(c) % 3) for c in completions]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_test_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=1, timeout_s=10.0) as p:
        yield p


CFG = EvalConfig(n=4, temperature=1.0, top_p=1.0, max_new_tokens=32, prompt_batch_size=2, grade_workers=1)


def _expected_token_entropy(tok):
    per_problem = []
    for key in RESPONSES:
        vals = []
        for text in RESPONSES[key]:
            ids = np.asarray(list(tok(text, add_special_tokens=False)["input_ids"]) + [258])
            vals.append(np.sum(0.1 * (ids % 3)) / len(ids))
        per_problem.append(np.mean(vals))
    return float(np.mean(per_problem))


def test_metrics_match_hand_computed_references(tmp_path, tok, pool):
    ds = Dataset("toy", PROBLEMS)
    eng = ScriptedEngine(tok)
    summary = evaluate(eng, tok, [ds], CFG, tmp_path / "run", fake_entropy_fn, pool=pool, progress=False)["toy"]
    # c = (4, 2, 0) correct out of n = 4: pass@k = mean_i [1 - C(n - c_i, k) / C(n, k)].
    assert summary["pass_at_k"]["1"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert summary["pass_at_k"]["2"] == pytest.approx((1 + (1 - 1 / 6) + 0) / 3)
    assert summary["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert summary["greedy_accuracy"] == pytest.approx(2 / 3)
    # Answer entropy: p0 {2: 4} -> 0; p1 {1/2: 2 (0.5 and 2/4 are distinct strings), 1/3: 1, NA: 1}; p2 {8: 3, 9: 1}.
    h1 = -(3 * 0.25 * math.log(0.25) + 0.25 * math.log(0.25))
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert summary["answer_entropy"] == pytest.approx((0 + h1 + h2) / 3)
    assert summary["token_entropy"] == pytest.approx(_expected_token_entropy(tok))
    assert summary["status_counts"] == {"correct": 6, "incorrect": 5, "no_answer": 1, "timeout": 0, "error": 0,
                                        "memory": 0, "runtime_error": 0, "early_exit": 0, "bad_value": 0,
                                        "protocol_error": 0, "syntax_error": 0, "sandbox_error": 0}
    # The engine got the prompt template and the stop ids of the tokenizer; greedy used temperature 0.
    assert eng.params[0].stop_token_ids == (258, 256) and eng.params[0].temperature == 1.0
    assert eng.params[-1].greedy
    recs = read_records(tmp_path / "run" / "toy" / "samples.jsonl")
    assert len(recs) == 12
    r = next(x for x in recs if x.problem_id == "p1" and x.sample_index == 2)
    assert (r.status, r.extracted, r.correct, r.finish_reason) == ("no_answer", None, False, "stop")
    assert r.length == len("I give up") + 1


def test_answer_entropy_groups_canonical_strings():
    assert answer_entropy(["\\dfrac{1}{2}", "\\frac12", "\\frac{1}{2}"]) == pytest.approx(
        -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))  # \frac12 is a different string
    assert answer_entropy([None, None]) == 0.0
    assert answer_entropy(["1", "2", "3", "4"]) == pytest.approx(math.log(4))


def test_outputs_tables_and_plot(tmp_path, tok, pool):
    out = tmp_path / "run"
    evaluate(ScriptedEngine(tok), tok, [Dataset("toy", PROBLEMS)], CFG, out, pool=pool, progress=False)
    rows = list(csv.reader(open(out / "pass_at_k.csv")))
    assert rows[0] == ["k", "toy"] and [r[0] for r in rows[1:]] == ["1", "2", "4"]
    assert float(rows[1][1]) == pytest.approx(0.5)
    md = (out / "pass_at_k.md").read_text()
    assert "| k | toy |" in md and "greedy_accuracy" in md
    assert (out / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = json.loads((out / "summary.json").read_text())
    assert s["toy"]["token_entropy"] is None  # no token_entropy_fn given


def test_resume_skips_complete_problems(tmp_path, tok, pool):
    out = tmp_path / "run"
    ds = Dataset("toy", PROBLEMS)
    first = evaluate(ScriptedEngine(tok), tok, [ds], CFG, out, fake_entropy_fn, pool=pool, progress=False)
    again = ScriptedEngine(tok)
    second = evaluate(again, tok, [ds], CFG, out, fake_entropy_fn, pool=pool, progress=False)
    assert again.prompts_served == 0
    assert {k: v for k, v in second["toy"].items() if k != "seconds"} == \
        {k: v for k, v in first["toy"].items() if k != "seconds"}
    # Simulate an interruption: keep p0's samples and half of p1's, plus a torn line.
    path = out / "toy" / "samples.jsonl"
    lines = path.read_text().splitlines()
    kept = [l for l in lines if json.loads(l)["problem_id"] == "p0"] + \
        [l for l in lines if json.loads(l)["problem_id"] == "p1"][:2]
    path.write_text("\n".join(kept) + "\n" + lines[-1][:20])
    third_engine = ScriptedEngine(tok)
    third = evaluate(third_engine, tok, [ds], CFG, out, fake_entropy_fn, pool=pool, progress=False)
    assert third_engine.prompts_served == 2  # p1 and p2 regenerated; greedy records were complete
    assert third["toy"]["pass_at_k"] == first["toy"]["pass_at_k"]
    assert len(read_records(path)) == 12
    with pytest.raises(ValueError, match="different settings"):
        evaluate(ScriptedEngine(tok), tok, [ds], EvalConfig(n=2, grade_workers=1), out, pool=pool, progress=False)


def test_compare_overlays_runs(tmp_path, tok, pool):
    ds = Dataset("toy", PROBLEMS)
    evaluate(ScriptedEngine(tok), tok, [ds], CFG, tmp_path / "a", pool=pool, progress=False)
    evaluate(ScriptedEngine(tok), tok, [ds], EvalConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=32,
                                                         greedy=False, grade_workers=1),
             tmp_path / "b", pool=pool, progress=False)
    compare([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    rows = list(csv.reader(open(tmp_path / "cmp" / "compare_toy.csv")))
    assert rows[0] == ["k", "a", "b"]
    assert rows[3][0] == "4" and rows[3][2] == ""  # run b has no pass@4 (n=2)
    assert float(rows[2][2]) == pytest.approx((1 + (1 - 0) + 0) / 3)  # b: c = (2, 1, 0) of 2 -> pass@2
    assert (tmp_path / "cmp" / "compare_pass_at_k.png").exists()
    assert "## toy" in (tmp_path / "cmp" / "compare.md").read_text()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        compare([tmp_path / "nope"], tmp_path / "cmp2")


def test_config_defaults_and_presets():
    assert default_ks(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert default_ks(6) == (1, 2, 4, 6)
    q3 = apply_preset(EvalConfig(), "qwen3")
    assert (q3.n, q3.temperature, q3.top_p, q3.top_k) == (64, 0.7, 0.8, 20)
    q25 = apply_preset(EvalConfig(), "qwen25math")
    assert (q25.n, q25.temperature, q25.top_p, q25.resolved_ks[-1]) == (256, 0.6, 0.95, 256)
    with pytest.raises(ValueError, match=r"ks \[8\] outside"):
        EvalConfig(n=4, ks=(1, 8))


def test_model_token_entropy_fn_matches_full_softmax():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rlvr_jax.evaluation import make_model_token_entropy_fn
    from rlvr_jax.models import Decoder, get_preset

    model = Decoder(get_preset("tiny-qwen3"), rngs=nnx.Rngs(0))
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
    completions = [[20, 21, 22, 23], [30]]
    got = make_model_token_entropy_fn(model, batch_size=2, length_bucket=8)(prompts, completions)
    for p, c, e in zip(prompts, completions, got):
        ids = jnp.asarray([p + c], jnp.int32)
        logp = jax.nn.log_softmax(model(ids)[0].astype(jnp.float32), axis=-1)
        ref = -(jnp.exp(logp) * logp).sum(-1)[len(p) - 1:len(p) - 1 + len(c)]
        assert e.shape == (len(c),)
        np.testing.assert_allclose(e, np.asarray(ref), rtol=2e-4, atol=2e-4)


def test_one_prompt_per_model_in_training_and_evaluation(tmp_path, capsys):
    """Issue 27 finding 3: configs/eval.py:qwen3 evaluates with the template configs/*_qwen3.py train with
    (qwen3_nothink, not qwen_boxed), and with template=auto the evaluator reads a run directory's config.json."""
    from rlvr_jax.config import as_plain
    from rlvr_jax.config.presets import experiment
    from rlvr_jax.evaluation.cli_config import get_config, validate_eval_config
    for model in ("qwen3", "qwen25math"):
        trained = experiment("nsr", model).data.template
        assert get_config(model).template == trained == apply_preset(EvalConfig(), model).template
    assert get_config("qwen3").template == "qwen3_nothink"
    run = tmp_path / "runs" / "nsr"
    (run / "final_hf").mkdir(parents=True)
    (run / "final_hf" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))  # an HF config: not a run's
    (run / "config.json").write_text(json.dumps(as_plain(experiment("nsr", "qwen3"))))
    c = get_config("")
    c.checkpoint, c.out = str(run / "final_hf"), str(tmp_path / "eval")
    assert c.template == "auto"
    validate_eval_config(c)
    assert c.template == "qwen3_nothink" and "the training run's" in capsys.readouterr().out
    c = get_config("")  # an HF checkpoint outside any run: the default template
    c.checkpoint, c.out = str(run / "final_hf"), str(tmp_path / "eval")
    (run / "config.json").unlink()
    validate_eval_config(c)
    assert c.template == "qwen_boxed"


def test_one_default_data_directory_for_every_cli(monkeypatch):
    """Training's data.data_dir and the evaluator's data_dir default to the same folder (../shared/data, or
    $RLVR_DATA_DIR); the evaluator used ./data, so the README's evaluation line failed as written."""
    from rlvr_jax.config.base import get_base_config
    from rlvr_jax.data.datasets import default_data_dir, resolve_data_dir
    from rlvr_jax.evaluation.cli_config import get_config
    monkeypatch.delenv("RLVR_DATA_DIR", raising=False)
    train_dir = resolve_data_dir(get_base_config().data.data_dir)
    eval_dir = resolve_data_dir(get_config("qwen3").data_dir)
    assert train_dir == eval_dir == str(default_data_dir()) == "../shared/data"
    monkeypatch.setenv("RLVR_DATA_DIR", "/elsewhere")
    assert resolve_data_dir(get_base_config().data.data_dir) == resolve_data_dir(get_config("").data_dir) == "/elsewhere"
