"""The tiny CPU testbed: task generator / verifier, tokenizer, warm-start batching, and the quick demo."""
import itertools
import json
import math
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

from rlvr_jax.testbed import task as T

REPO = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- task
def test_evaluate_expression_matches_python_precedence():
    rng = random.Random(0)
    for _ in range(300):
        nums = [rng.randint(1, 9) for _ in range(3)]
        for e in T.all_expressions(nums):
            assert T.evaluate_expression(e) == eval(e), e  # noqa: S307 - digits and + - * only
    with pytest.raises(ValueError, match="malformed"):
        T.evaluate_expression("3+*4")
    with pytest.raises(ValueError, match="not an expression"):
        T.evaluate_expression("3/4")


def test_expression_space_and_solutions():
    assert len(T.all_expressions((1, 2, 3))) == 54
    assert len(T.all_expressions((2, 2, 2))) == 9  # repeated numbers: one order
    p = T.Puzzle((3, 8, 6), 30)
    assert T.solutions(p) == ["3*8+6", "6+3*8", "6+8*3", "8*3+6"]
    assert set(T.solutions(p)) | set(T.wrong_expressions(p)) == set(T.all_expressions(p.numbers))
    assert p.text() == "Make 30 with 3 8 6."


def test_verifier_is_reasoning_gym_countdown_scorer():
    p = T.Puzzle((3, 8, 6), 30)
    for s in T.solutions(p):
        assert T.verify(f"think \\boxed{{{s}}}", p)
    for w in T.wrong_expressions(p)[:10]:
        assert not T.verify(f"\\boxed{{{w}}}", p)
    assert not T.verify("\\boxed{3*8+6+0}", p)  # an extra number
    assert not T.verify("\\boxed{30}", p)  # the target itself
    assert not T.verify("no answer", p)


def test_puzzle_space_and_disjoint_deterministic_splits():
    space = T.puzzle_space()
    assert len(space) == 1313 and len(set(space)) == 1313
    a = T.split_problems({"heldout": 50, "rl": 100, "warmstart": -1}, seed=3)
    b = T.split_problems({"heldout": 50, "rl": 100, "warmstart": -1}, seed=3)
    assert a == b
    assert [len(a[k]) for k in ("heldout", "rl", "warmstart")] == [50, 100, 1163]
    keys = [p.key for ps in a.values() for p in ps]
    assert len(set(keys)) == len(keys) == 1313
    assert all(T.solutions(p) for ps in a.values() for p in ps)
    assert T.split_problems({"heldout": 50}, seed=4)["heldout"] != a["heldout"]
    with pytest.raises(ValueError, match="only 1313"):
        T.split_problems({"x": 2000})


def test_jsonl_round_trip_keeps_task_and_grades_with_the_pool(tmp_path):
    from rlvr_jax.data import load_dataset
    from rlvr_jax.rewards import GraderPool

    puzzles = T.split_problems({"h": 6}, seed=0)["h"]
    path = T.write_jsonl(T.to_problems(puzzles, "h"), tmp_path / "h.jsonl")
    ds = load_dataset(str(path))
    assert len(ds) == 6 and all(p.task == "rg:countdown" for p in ds)
    assert ds[0].metadata["entry"]["metadata"]["target"] == puzzles[0].target
    responses = [f"\\boxed{{{T.solutions(p)[-1]}}}" for p in puzzles[:3]] + \
                [f"\\boxed{{{T.wrong_expressions(p)[0]}}}" for p in puzzles[3:]]
    with GraderPool(0) as pool:
        res = pool.grade_problems(list(ds), responses)
    assert [r.correct for r in res] == [True] * 3 + [False] * 3
    assert [r.reward for r in res] == [1.0] * 3 + [-1.0] * 3


# ----------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from rlvr_jax.testbed.tokenizer import save_tokenizer

    return save_tokenizer(tmp_path_factory.mktemp("tok"))


def test_tokenizer_round_trip_and_compact_prompts(tok):
    from rlvr_jax.data import TEMPLATES, encode_prompt, format_prompt, stop_token_ids
    from rlvr_jax.data.templates import INSTRUCTION

    assert len(tok) < 100
    for s in ["Make 30 with 3 8 6.", "\\boxed{3*8+6}", "a (b) = c, d: e? {x}\n", INSTRUCTION]:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == s
    assert len(tok(INSTRUCTION, add_special_tokens=False)["input_ids"]) == 1
    assert tok("\\boxed{3*8+6}", add_special_tokens=False)["input_ids"][0] == tok.convert_tokens_to_ids("\\boxed{")
    assert len(tok("\\boxed{3*8+6}", add_special_tokens=False)["input_ids"]) == 7
    for t in TEMPLATES:
        ids = encode_prompt("Make 30 with 3 8 6.", t, tok)
        assert tok.decode(ids) == format_prompt("Make 30 with 3 8 6.", t, tok)
    assert len(encode_prompt("Make 30 with 3 8 6.", "plain", tok)) == 22
    eos = tok.eos_token_id
    assert tok.eos_token == "<|endoftext|>" and eos in stop_token_ids(tok)
    assert tok.pad_token_id not in stop_token_ids(tok)
    assert tok.decode(tok("\\boxed{1+2*3}", add_special_tokens=False)["input_ids"] + [eos],
                      skip_special_tokens=True) == "\\boxed{1+2*3}"
    assert tok.decode(tok("~", add_special_tokens=False)["input_ids"]) == "<unk>"


# ------------------------------------------------------------------------------------- warm start
def test_warmstart_batch_masks_only_response_tokens():
    """The trainer's layout (learner.pack_sequences): prompts left-padded, responses + EOS right-padded."""
    from rlvr_jax.testbed.warmstart import make_batch

    b = make_batch([[5, 6, 7], [5]], [[8, 9], [8, 9, 10, 11]], eos_id=1, pad_id=0, bucket=4)
    assert b["ids"].shape == (2, 12)
    np.testing.assert_array_equal(b["ids"][0], [0, 5, 6, 7, 8, 9, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b["ids"][1], [0, 0, 0, 5, 8, 9, 10, 11, 1, 0, 0, 0])
    np.testing.assert_array_equal(b["loss_mask"][1], [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b["attention_mask"][1], [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0])


def test_warmstart_targets_are_distinct_correct_and_flawed():
    from rlvr_jax.testbed.warmstart import WarmStartConfig, sft_targets

    cfg = WarmStartConfig(solutions_per_problem=3, flawed_per_problem=4)
    puzzles = T.split_problems({"w": 40}, seed=1)["w"]
    for p, (good, bad) in zip(puzzles, sft_targets(puzzles, cfg, random.Random(0))):
        assert len(good) == min(3, len(T.solutions(p))) and len(set(good)) == len(good)
        assert len(bad) == 4 and len(set(bad)) == 4
        assert all(T.evaluate_expression(e) == p.target for e in good)
        assert all(T.evaluate_expression(e) != p.target for e in bad)
    with pytest.raises(ValueError, match="flawed_share"):
        WarmStartConfig(flawed_share=1.0)


def test_warmstart_corpus_shows_rare_strategies_at_their_weight():
    from rlvr_jax.testbed.warmstart import WarmStartConfig, draw_example, sft_targets

    puzzles = T.split_problems({"w": 400}, seed=3)["w"]

    def share(cfg, draws=20000):
        targets = sft_targets(puzzles, cfg, random.Random(0))
        rng = random.Random(1)
        return np.mean([T.strategy(draw_example(rng, targets, cfg)[1]) == "product_minus" for _ in range(draws)])

    natural = share(WarmStartConfig(rare_strategies=("product_minus",), rare_weight=1.0))
    assert natural == pytest.approx(share(WarmStartConfig(rare_strategies=())), abs=0.01) and natural > 0.05
    w = 0.05
    expected = w * natural / (1 - natural + w * natural)
    assert share(WarmStartConfig(rare_strategies=("product_minus",), rare_weight=w)) == pytest.approx(expected, abs=0.005)
    with pytest.raises(ValueError, match="rare_strategies"):
        WarmStartConfig(rare_strategies=("division",))
    with pytest.raises(ValueError, match="rare_weight"):
        WarmStartConfig(rare_weight=0.0)


def test_testbed_config_validates(tmp_path):
    from rlvr_jax.config import validate_config
    from rlvr_jax.testbed.experiment import rl_config

    for algo in ("psr", "nsr", "w_reinforce", "grpo", "grpo_n"):
        c = rl_config(algo, str(tmp_path), str(tmp_path / algo))
        b = validate_config(c, check_files=False, num_devices=8)
        assert b.updates_per_step == 2 and c.data.template == "plain"
    assert rl_config("w_reinforce", "w", "o").algo.lam == 0.1
    assert rl_config("grpo", "w", "o").algo.adv_estimator == "grpo"


# ------------------------------------------------------------------------------------ quick demo
@pytest.mark.slow
def test_quick_demo_writes_a_finite_report(tmp_path):
    """`python -m rlvr_jax.demo --quick`: warm start, 5 RL runs with the real trainer, n=64 evaluation."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # one CPU device, as a newcomer's laptop (conftest simulates 8)
    env["JAX_PLATFORMS"] = "cpu"
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "rlvr_jax.demo", "--quick", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)  # a hang guard, not a timing check
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out / "report"
    for f in ("pass_at_k.md", "pass_at_k.png", "training_curves.png", "summary.md", "summary.json"):
        assert (report / f).stat().st_size > 0, f
    s = json.loads((report / "summary.json").read_text())
    assert s["ks"] == [1, 2, 4, 8, 16, 32, 64]
    assert set(s["heldout"]) == {"base", "psr", "nsr", "w_reinforce", "grpo", "grpo_n"}
    for name, row in s["heldout"].items():
        curve = [row[f"pass@{k}"][0] for k in s["ks"]]
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in curve), (name, curve)
        assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:])), (name, curve)  # pass@k grows with k
        assert math.isfinite(row["token_entropy"][0]) and row["token_entropy"][0] > 0
        assert math.isfinite(row["answer_entropy"][0])
    base = s["heldout"]["base"]
    assert 0.0 < base["pass@1"][0] < base["pass@64"][0]  # the base solves some puzzles sometimes
    for algo in ("psr", "nsr", "w_reinforce", "grpo", "grpo_n"):
        rows = [json.loads(x) for x in (out / "seed0" / algo / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
        for r in rows:
            for k in ("train/correct_ratio", "train/fully_solved_ratio", "train/rollout_entropy"):
                assert math.isfinite(r[k]), (algo, k, r[k])
            # PSR/NSR drop the samples they do not learn from: a step with none kept makes no update and says so
            if r.get("actor/no_update", 0.0) == 1.0:
                assert r["actor/num_updates"] == 0 and r["train/kept_samples"] == 0, (algo, r)
            else:
                assert r["actor/num_updates"] >= 1 and math.isfinite(r["actor/pg_loss"]), (algo, r)
    md = (report / "pass_at_k.md").read_text()
    assert all(lab in md for lab in ("base", "PSR", "NSR", "W-REINFORCE", "GRPO", "GRPO-N"))
    assert (report / "per_seed.md").stat().st_size > 0
    # the base's measured properties come from the evaluator's records and agree with its summary
    props = s["properties"]["policies"]
    assert set(props) == set(s["heldout"])
    for name, per_seed in props.items():
        p = per_seed["0"]
        assert p["puzzles"] == 24 and p["n"] == 64
        assert p["pass@1"] == pytest.approx(s["heldout"][name]["pass@1"][0], abs=1e-9), name
        assert p["pass@64"] == pytest.approx(s["heldout"][name]["pass@64"][0], abs=1e-9), name
        assert p["rare_only"]["puzzles"] + p["other"]["puzzles"] == 24
    text = (report / "base_properties.md").read_text()
    assert "| held-out pass@1 | 25-60% |" in text and "rare-only pass@64" in text
    # the report rebuilt from the files on disk is the same report
    from rlvr_jax.testbed.experiment import ExperimentConfig, rebuild_report

    again = rebuild_report(ExperimentConfig.quick(out_dir=str(out), warm_dir=str(out / "warmstart")))
    assert json.loads(json.dumps(again["heldout"])) == s["heldout"]
    assert json.loads(json.dumps(again["properties"])) == s["properties"]
    check_exact_outputs(out, s)


def check_exact_outputs(out, s):
    """The quick demo's exact evaluation (rlvr_jax.testbed.exact_runs): the base and every checkpoint of every
    run (steps 0, 4, 8), against the sampling evaluator of the same policies and the exported final policy."""
    from rlvr_jax.testbed import exact as E

    for f in ("exact.md", "exact_pass_at_k.png", "trajectories.png", "exact_frontier.png", "exact_summary.json"):
        assert (out / "report" / f).stat().st_size > 0, f
    assert "## Mass flow" in (out / "report" / "exact.md").read_text()
    recs = {"base": json.loads((out / "exact" / "base.json").read_text())}
    for algo in ("psr", "nsr", "w_reinforce", "grpo", "grpo_n"):
        recs[algo] = json.loads((out / "seed0" / "exact" / f"{algo}.json").read_text())
        assert recs[algo]["steps"] == [0, 4, 8], algo
        traj = recs[algo]["trajectory"]
        assert traj[0]["train"]["kl_base_policy"] == 0.0 and traj[-1]["train"]["kl_base_policy"] > 0.0, algo
        assert traj[-1]["eval"]["pass@1"] == recs[algo]["final"]["eval"]["pass_at_k"][0]
    for name, rec in recs.items():
        m = rec["final"]["eval"]
        pk = m["pass_at_k"]
        assert len(pk) == 1024 and all(a <= b + 1e-12 for a, b in zip(pk, pk[1:])), name
        # the sampler's pass@1 (24 puzzles x 64 samples, T 0.6, top-p 0.95) is within 4 binomial sigmas of the
        # exact value, which is a lower bound by at most the mass outside the candidates
        sampled, sigma = s["heldout"][name]["pass@1"][0], 0.5 / math.sqrt(24 * 64)
        assert pk[0] - 4 * sigma <= sampled <= pk[0] + m["remaining_mass"] + 4 * sigma, (name, pk[0], sampled)
        assert m["answer_entropy"] > 0 and 0.0 <= m["remaining_mass"] <= 1.0, name
    # the last orbax checkpoint (what the trajectory loads) is the exported final policy
    from rlvr_jax.data import stop_token_ids
    from rlvr_jax.models import load_hf

    tok, cands = E.load_candidates(str(out / "warmstart"), 24)
    model, _ = load_hf(str(out / "seed0" / "nsr" / "final_hf"), dtype="float32")
    metrics, _ = E.evaluate_exact(model, cands, stop_token_ids(tok), pad_id=tok.pad_token_id)
    assert metrics["train"]["pass_at_k"] == pytest.approx(recs["nsr"]["final"]["train"]["pass_at_k"], abs=1e-9)


def test_report_per_seed_table_shows_a_zero_greedy_accuracy_as_zero():
    """Issue 27 finding 7: ``x or float('nan')`` printed nan for a greedy accuracy (or entropy) of exactly 0.0;
    only a missing value is nan."""
    from rlvr_jax.testbed.report import aggregate, tables
    summary = {"pass_at_k": {"1": 0.25, "2": 0.5}, "greedy_accuracy": 0.0, "token_entropy": 0.0,
               "mean_accuracy": 0.25, "answer_entropy": 0.0, "status_counts": {"correct": 1, "incorrect": 3}}
    evals = {"base": [summary], "nsr": [dict(summary, greedy_accuracy=None, token_entropy=None)]}
    t = tables(aggregate(evals, [1, 2]), evals, {}, [1, 2], [0])
    row = [line for line in t["per_seed"].splitlines() if line.startswith("| 0 ")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "25.0 / 50.0 / 0.0 / 0.000" and cells[2] == "25.0 / 50.0 / nan / nan", cells
