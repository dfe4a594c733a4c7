"""rlvr_jax.testbed.massflow: every number against a hand computation on small hand-built candidate sets
(freed-mass shares, bins, the within-puzzle slope that is exactly 0 for a proportional redistribution and
exactly a - 1 for p_after ~ p_before^a, Spearman with ties), the per-strategy masses on real testbed puzzles, and
the conservation identities on a tiny real model's exact probabilities."""
import numpy as np
import pytest

from rlvr_jax.testbed import exact as E
from rlvr_jax.testbed import massflow as M


def hand_cands(puzzle, correct, strategy=None, rare_only=None):
    puzzle = np.asarray(puzzle, np.int32)
    R, P = len(puzzle), int(puzzle.max()) + 1
    return E.CandidateSet(prompts=[[1]] * P, tokens=np.ones((R, 1), np.int32), lengths=np.ones(R, np.int32),
                          puzzle=puzzle, correct=np.asarray(correct, bool),
                          strategy=np.zeros(R, np.int32) if strategy is None else np.asarray(strategy, np.int32),
                          texts=[""] * R, rare_only=np.zeros(P, bool) if rare_only is None else np.asarray(rare_only))


def test_freed_mass_shares_deltas_and_bins_by_hand():
    # puzzle 0: correct c, wrong w1, wrong w2; remaining 0.1 -> 0.05. w1 frees 0.2, the remaining 0.05;
    #   gains: c +0.2, w2 +0.05 -> of the pooled 0.25: 80% to correct, 20% to incorrect.
    # puzzle 1: correct, correct, wrong; the wrong one frees 0.2, all of it to the remaining mass (0 -> 0.2).
    c = hand_cands([0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 1, 0])
    pb = np.array([0.2, 0.5, 0.2, 0.1, 0.3, 0.6])
    pp = np.array([0.4, 0.3, 0.25, 0.1, 0.3, 0.4])
    r = M.mass_flow(pb, pp, c)
    assert r["freed_incorrect"] == pytest.approx(0.2)                   # (0.2 + 0.2) / 2
    # freed-weighted: (0.2 * 0.8 + 0.2 * 0) / 0.4, (0.2 * 0.2) / 0.4, (0.2 * 1) / 0.4
    assert r["share_to_correct"] == pytest.approx(0.4)
    assert r["share_to_incorrect"] == pytest.approx(0.1)
    assert r["share_to_remaining"] == pytest.approx(0.5)
    # had c and w2 (base 0.2 each) gained in proportion: half to correct; puzzle 1's only gainer had base mass 0
    assert r["share_to_correct_if_proportional"] == pytest.approx(0.5)
    assert r["share_to_remaining_if_proportional"] == pytest.approx(0.0)
    assert r["delta_correct"] == pytest.approx(0.1)
    assert r["delta_incorrect"] == pytest.approx(-0.175)
    assert r["delta_remaining"] == pytest.approx(0.075)
    assert r["correct_before"] == pytest.approx((0.2 + 0.4) / 2) and r["correct_after"] == pytest.approx(0.4)
    np.testing.assert_allclose(r["per_puzzle"]["freed_incorrect"], [0.2, 0.2])
    np.testing.assert_allclose(r["per_puzzle"]["gain_remaining"], [0.0, 0.2])
    # every row has base probability >= 0.1 (0.1 sits on the edge and belongs to the top bin)
    top_i, top_c = r["by_bin"]["incorrect [0.1,1)"], r["by_bin"]["correct [0.1,1)"]
    assert top_i["rows"] == 3 and top_c["rows"] == 3
    assert top_i["delta"] == pytest.approx((-0.2 + 0.05 - 0.2) / 2)
    assert top_i["frac_up"] == pytest.approx(1 / 3)
    assert top_i["mean_log_ratio"] == pytest.approx(np.mean(np.log([0.3 / 0.5, 0.25 / 0.2, 0.4 / 0.6])))
    assert top_c["delta"] == pytest.approx(0.1) and top_c["base_mass"] == pytest.approx(0.3)
    assert r["by_bin"]["correct [0,0.001)"]["rows"] == 0
    # the only gainers: c (0.2 -> 0.4) and w2 (0.2 -> 0.25), one puzzle, both with log p_before = log 0.2
    assert r["proportional"]["n"] == 2 and np.isnan(r["proportional"]["slope"])


def test_bins_place_small_probabilities():
    c = hand_cands([0, 0, 0, 0], [1, 0, 0, 0])
    pb = np.array([5e-4, 5e-3, 5e-2, 0.5])
    pp = np.array([1e-3, 5e-3, 2.5e-2, 0.5])
    r = M.mass_flow(pb, pp, c)
    assert r["by_bin"]["correct [0,0.001)"]["rows"] == 1
    assert r["by_bin"]["correct [0,0.001)"]["mean_log_ratio"] == pytest.approx(np.log(2))
    assert r["by_bin"]["incorrect [0.001,0.01)"]["delta"] == pytest.approx(0.0)
    assert r["by_bin"]["incorrect [0.01,0.1)"]["delta"] == pytest.approx(-2.5e-2)
    assert r["by_bin"]["incorrect [0.1,1)"]["rows"] == 1
    # over every answer (losers too), one puzzle: the plain least-squares line through the points
    x, y = np.log(pb), np.log(pp / pb)
    slope, icpt = np.polyfit(x, y, 1)
    assert r["proportional_all"]["slope"] == pytest.approx(slope) and r["proportional_all"]["n"] == 4
    assert r["proportional_all"]["pooled_intercept"] == pytest.approx(icpt)
    assert r["proportional_all"]["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    labels = M._bin_labels((0.5,))
    assert labels == ["[0,0.5)", "[0.5,1)"]


def nsr_like(pb_rows, wrong, new_wrong_p):
    """Lowers row ``wrong`` to ``new_wrong_p`` and scales every other outcome (the remaining mass too) by c."""
    pb = np.asarray(pb_rows, np.float64)
    c = (1 - new_wrong_p) / (1 - pb[wrong])
    pp = pb * c
    pp[wrong] = new_wrong_p
    return pp, c


def test_proportional_redistribution_gives_within_slope_zero_and_spearman_one():
    # two puzzles, each with one penalised wrong answer; the rest (and the remaining mass) scaled by c_p, with
    # c_0 = 0.8 / 0.6 and c_1 = 0.9 / 0.6: the log ratio is log c_p on every gainer of puzzle p
    b0 = [0.4, 0.08, 0.06, 0.04, 0.02]          # remaining 0.4
    b1 = [0.4, 0.2, 0.15, 0.1, 0.09]            # remaining 0.06
    p0, c0 = nsr_like(b0, 0, 0.2)
    p1, c1 = nsr_like(b1, 0, 0.1)
    c = hand_cands([0] * 5 + [1] * 5, [0, 1, 0, 0, 1, 0, 0, 1, 1, 0])
    pb, pp = np.array(b0 + b1), np.concatenate([p0, p1])
    r = M.mass_flow(pb, pp, c)
    pr = r["proportional"]
    assert pr["n"] == 8
    assert pr["slope"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(pr["r2"])                                           # no within-puzzle variation left
    # gain = (c_p - 1) p: puzzle 1's gains (0.045..0.1) all exceed puzzle 0's (0.0067..0.027), same order as p
    assert pr["spearman"] == pytest.approx(1.0)
    assert pr["mean_log_ratio"] == pytest.approx((4 * np.log(c0) + 4 * np.log(c1)) / 8)
    # pooled over the two puzzles the different c_p make a slope: by hand
    x = np.log(np.array(b0[1:] + b1[1:]))
    y = np.array([np.log(c0)] * 4 + [np.log(c1)] * 4)
    xc = x - x.mean()
    assert pr["pooled_slope"] == pytest.approx((xc * (y - y.mean())).sum() / (xc ** 2).sum())
    assert pr["pooled_slope"] > 0.05
    # the freed mass goes to each kind in proportion to its prior: correct share = base correct mass / (1 - p_wrong)
    s0, s1 = (0.08 + 0.02) / 0.6, (0.15 + 0.1) / 0.6
    assert r["share_to_correct"] == pytest.approx((0.2 * s0 + 0.3 * s1) / 0.5)
    assert r["share_to_remaining"] == pytest.approx((0.2 * 0.4 / 0.6 + 0.3 * 0.06 / 0.6) / 0.5)
    assert r["share_to_correct_if_proportional"] == pytest.approx(r["share_to_correct"])
    assert r["share_to_remaining_if_proportional"] == pytest.approx(r["share_to_remaining"])
    assert r["share_to_correct"] + r["share_to_incorrect"] + r["share_to_remaining"] == pytest.approx(1.0)


def test_non_proportional_power_law_slope_and_sampled_split():
    # puzzle 0: gainers go p -> 0.5 sqrt(p) (2^-8, 2^-6, 2^-4 -> 2^-5, 2^-4, 2^-3; p_after ~ p_before^0.5:
    # flattening): within slope exactly -0.5, R^2 = 1; puzzle 1: proportional (slope 0). Sampled = puzzle 1's rows.
    b0 = np.array([0.5, 2.0 ** -8, 2.0 ** -6, 2.0 ** -4])                 # dyadic: exact in float
    p0 = np.array([0.5 - (0.21875 - 0.08203125), 2.0 ** -5, 2.0 ** -4, 2.0 ** -3])
    b1 = np.array([0.4, 0.3, 0.15, 0.05])
    p1, _ = nsr_like(b1, 0, 0.2)
    c = hand_cands([0] * 4 + [1] * 4, [0, 1, 0, 0, 0, 1, 0, 1])
    pb, pp = np.concatenate([b0, b1]), np.concatenate([p0, p1])
    sampled = np.array([0] * 4 + [1] * 4, bool)
    r = M.mass_flow(pb, pp, c, sampled=sampled)
    un, sa = r["proportional_unsampled"], r["proportional_sampled"]
    assert un["n"] == 3 and sa["n"] == 3
    assert un["slope"] == pytest.approx(-0.5) and un["r2"] == pytest.approx(1.0)
    assert un["pooled_slope"] == pytest.approx(-0.5) and un["pooled_intercept"] == pytest.approx(np.log(0.5))
    assert sa["slope"] == pytest.approx(0.0, abs=1e-12)
    # freed: 0.13671875 (puzzle 0), 0.2 (puzzle 1). Puzzle 0's correct gainer (2^-8) took 0.02734375 of the
    # 0.13671875 = 20%, against 2^-8 / 0.08203125 = 1/21 had it gained in proportion; puzzle 1: 0.35 / 0.6 both
    f0, f1 = 0.13671875, 0.2
    assert r["share_to_correct"] == pytest.approx((f0 * 0.2 + f1 * 0.35 / 0.6) / (f0 + f1))
    assert r["share_to_correct_if_proportional"] == pytest.approx((f0 / 21 + f1 * 0.35 / 0.6) / (f0 + f1))
    assert un["spearman"] == pytest.approx(1.0)           # gains 0.027, 0.047, 0.0625: same order as p
    # all gainers together: the puzzle-0 points carry the slope, the puzzle-1 points only add x spread
    x0 = np.log(b0[1:]) - np.log(b0[1:]).mean()
    x1 = np.log(b1[1:]) - np.log(b1[1:]).mean()
    assert r["proportional"]["slope"] == pytest.approx(-0.5 * (x0 ** 2).sum() / ((x0 ** 2).sum() + (x1 ** 2).sum()))


def test_spearman_reference_values():
    assert M.spearman([0.01, 0.04, 0.09], [0.19, 0.06, 0.01]) == pytest.approx(-1.0)
    # a tie: ranks (1, 2, 3) against (1, 2.5, 2.5) -> 1.5 / sqrt(3)
    assert M.spearman([1.0, 2.0, 3.0], [0.5, 4.0, 4.0]) == pytest.approx(1.5 / np.sqrt(3))
    assert M.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))   # 1 - 6 sum d^2 / n(n^2-1)
    assert np.isnan(M.spearman([1, 2], [2, 1]))
    np.testing.assert_allclose(M._ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])


def test_bad_inputs_raise_clear_errors():
    c = hand_cands([0, 0], [1, 0])
    with pytest.raises(ValueError, match="one per candidate row"):
        M.mass_flow(np.array([0.5]), np.array([0.5, 0.5]), c)
    with pytest.raises(ValueError, match="p_pol must be probabilities"):
        M.mass_flow(np.array([0.5, 0.5]), np.array([0.9, 0.5]), c)
    with pytest.raises(ValueError, match="sampled"):
        M.mass_flow(np.array([0.5, 0.5]), np.array([0.5, 0.5]), c, sampled=np.array([True]))


def _testbed_cands():
    from rlvr_jax.testbed import task as T
    from rlvr_jax.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    puzzles = [T.Puzzle((3, 8, 6), 30), T.Puzzle((7, 8, 3), 53), T.Puzzle((2, 2, 5), 9)]
    return tok, puzzles, E.candidates(T.to_problems(puzzles, "t"), tok)


def test_strategy_masses_on_testbed_puzzles():
    from rlvr_jax.testbed import task as T

    _, puzzles, c = _testbed_cands()
    rng = np.random.default_rng(0)
    pb = rng.dirichlet(np.ones(len(c.texts) + 3))[:len(c.texts)]
    pm = E.STRATEGY_NAMES.index("product_minus")
    # the policy halves product_minus where it is wrong and doubles nothing else
    pp = np.where((c.strategy == pm) & ~c.correct, pb / 2, pb)
    r = M.mass_flow(pb, pp, c)["strategy"]["product_minus"]
    only = [i for i, pz in enumerate(puzzles) if {T.strategy(e) for e in T.solutions(pz)} == {"product_minus"}]
    assert only == [1] and r["only"]["puzzles"] == 1
    m = (c.puzzle == 1) & (c.strategy == pm) & c.correct
    assert r["only"]["before"] == pytest.approx(pb[m].sum()) and r["only"]["after"] == pytest.approx(pb[m].sum())
    fails = [i for i in range(3) if ((c.puzzle == i) & (c.strategy == pm) & ~c.correct).any()]
    wrong = np.array([pb[(c.puzzle == i) & (c.strategy == pm) & ~c.correct].sum() for i in fails])
    assert r["fails"]["puzzles"] == len(fails)
    assert r["fails"]["before"] == pytest.approx(wrong.mean())
    assert r["fails"]["after"] == pytest.approx(wrong.mean() / 2)
    table = M.mass_flow_table({"half": M.mass_flow(pb, pp, c)})
    assert table.count("\n") == 3 and "| half |" in table and "(1 puzzles)" in table


def test_training_draws_replay_the_prompt_order_and_likely_sampled_by_hand():
    from rlvr_jax.data import PromptSampler

    cfg = {"train": {"prompt_batch_size": 2, "seed": 3, "shuffle": True, "total_steps": 5}, "rollout": {"n": 8}}
    draws = M.training_draws(cfg, 5)
    s = PromptSampler(5, 2, seed=3)
    want = np.zeros(5, int)
    for _ in range(5):
        for i in s.next_batch():
            want[i] += 8
    assert draws.tolist() == want.tolist() and draws.sum() == 5 * 2 * 8
    c = hand_cands([0, 0, 1, 1], [1, 0, 1, 0])
    # 1 - 0.9^8 = 0.570 >= 0.5; 1 - 0.95^8 = 0.337; puzzle 1 has 16 rollouts: 1 - 0.95^16 = 0.560, 1 - 0.97^16 = 0.386
    got = M.likely_sampled(np.array([0.1, 0.05, 0.05, 0.03]), c, np.array([8, 16]))
    assert got.tolist() == [True, False, True, False]


def test_real_tiny_model_flows_add_up_to_the_exact_metrics():
    """A tiny model over a 6-token vocabulary (peaked, so the candidates hold real mass) and a perturbed copy; the
    candidates are every 2-word answer of two prompts: the flows add up to exact.distribution_metrics' masses."""
    import itertools

    import jax
    from flax import nnx

    from helpers_models import tiny_decoder

    base = tiny_decoder(6, 1, seed=3)
    base.embed.embedding.value = base.embed.embedding.value * 6.0
    pol = nnx.clone(base)
    pol.embed.embedding.value = base.embed.embedding.value + 1.5 * jax.random.normal(
        jax.random.PRNGKey(1), base.embed.embedding.value.shape)
    words = list(itertools.product((2, 3, 4, 5), repeat=2))
    R = 2 * len(words)
    c = E.CandidateSet(prompts=[[2, 3, 4], [5, 2]], tokens=np.array(words * 2, np.int32),
                       lengths=np.full(R, 2, np.int32),
                       puzzle=np.repeat([0, 1], len(words)).astype(np.int32), correct=np.arange(R) % 3 == 0,
                       strategy=(np.arange(R) % len(E.STRATEGY_NAMES)).astype(np.int32), texts=[""] * R,
                       rare_only=np.array([False, True]))
    pb = E.answer_probs(base, c, (1,), {"train": (1.0, 1.0)})["train"]
    pp = E.answer_probs(pol, c, (1,), {"train": (1.0, 1.0)})["train"]
    mb, mp = E.distribution_metrics(pb, c, 1), E.distribution_metrics(pp, c, 1)
    assert mb["remaining_mass"] < 0.95 and mb["correct_mass"] > 0.01     # the candidates hold real mass
    r = M.mass_flow(pb, pp, c)
    assert abs(r["delta_correct"]) > 1e-3 and r["freed_incorrect"] > 1e-2
    assert r["delta_correct"] == pytest.approx(mp["correct_mass"] - mb["correct_mass"], abs=1e-12)
    assert r["delta_remaining"] == pytest.approx(mp["remaining_mass"] - mb["remaining_mass"], abs=1e-12)
    assert r["delta_correct"] + r["delta_incorrect"] + r["delta_remaining"] == pytest.approx(0.0, abs=1e-12)
    assert r["share_to_correct"] + r["share_to_incorrect"] + r["share_to_remaining"] == pytest.approx(1.0)
    assert sum(b["delta"] for b in r["by_bin"].values()) == pytest.approx(r["delta_correct"] + r["delta_incorrect"])
    assert sum(b["rows"] for b in r["by_bin"].values()) == R
    for i, name in enumerate(E.STRATEGY_NAMES):      # a strategy's mass where correct + where it fails = its mass
        g = r["strategy"][name]
        both = g["fails"]["puzzles"] == g["correct"]["puzzles"] == 2
        if both:
            assert g["fails"]["after"] + g["correct"]["after"] == pytest.approx(mp["strategy_mass"][name])
    same = M.mass_flow(pb, pb, c)
    assert same["freed_incorrect"] == 0.0 and np.isnan(same["share_to_correct"]) and same["proportional"]["n"] == 0


def test_cli_on_a_tiny_real_model_matches_the_direct_computation(tmp_path):
    """A random tiny testbed-vocabulary base and a perturbed copy, saved as a warm start and a run: the CLI's
    files and flows (RL split, the likely-sampled mask) equal mass_flow on the saved models' exact probabilities."""
    import json

    import jax
    from flax import nnx

    from rlvr_jax.data import stop_token_ids
    from helpers_models import tiny_decoder

    from rlvr_jax.models import load_hf, save_hf
    from rlvr_jax.testbed import task as T

    tok, puzzles, _ = _testbed_cands()
    warm, run = tmp_path / "warm", tmp_path / "run" / "nsr"
    for split in ("heldout", "rl"):
        T.write_jsonl(T.to_problems(puzzles if split == "heldout" else puzzles[::-1], split),
                      warm / "data" / f"{split}.jsonl")
    (warm / "warmstart.json").write_text(json.dumps({"config": {"show_steps": False}}))
    base = tiny_decoder(len(tok), tok.eos_token_id, seed=0)
    base.embed.embedding.value = base.embed.embedding.value * 4.0
    pol = nnx.clone(base)
    pol.embed.embedding.value = base.embed.embedding.value + 0.5 * jax.random.normal(
        jax.random.PRNGKey(1), base.embed.embedding.value.shape)
    for m, d in ((base, warm / "base_hf"), (pol, run / "final_hf")):
        tok.save_pretrained(str(d))
        save_hf(m, str(d))
    (run / "config.json").write_text(json.dumps({
        "train": {"prompt_batch_size": 2, "seed": 0, "shuffle": True, "total_steps": 3}, "rollout": {"n": 8},
        "data": {"train": str(warm / "data" / "rl.jsonl")}}))
    out = tmp_path / "out"
    res = M.main([str(warm), str(run), "--out", str(out), "--split", "rl"])["nsr"]
    assert (out / "massflow.png").stat().st_size > 1000 and "| nsr |" in (out / "massflow.md").read_text()
    saved = json.loads((out / "massflow.json").read_text())["results"]["nsr"]
    assert saved["freed_incorrect"] == res["freed_incorrect"]
    # the direct computation on the RL puzzles (reversed order) with the saved models
    c = E.candidates(T.to_problems(puzzles[::-1], "rl"), tok)
    setting = {"train": E.SETTINGS["train"]}
    pb, pp = (E.answer_probs(load_hf(str(d), dtype="float32")[0], c, stop_token_ids(tok), setting,
                             pad_id=tok.pad_token_id)["train"] for d in (warm / "base_hf", run / "final_hf"))
    draws = M.training_draws(json.loads((run / "config.json").read_text()), 3)
    assert draws.sum() == 3 * 2 * 8
    r = M.mass_flow(pb, pp, c, M.likely_sampled(pb, c, draws))
    for key in ("correct_before", "delta_correct", "freed_incorrect", "share_to_correct", "share_to_remaining"):
        assert res[key] == pytest.approx(r[key], rel=1e-6, abs=0), key
    assert res["proportional_all"]["slope"] == pytest.approx(r["proportional_all"]["slope"], rel=1e-6)
    assert res["proportional_sampled"]["n"] == r["proportional_sampled"]["n"]
    with pytest.raises(SystemExit, match="not a warm-start directory"):
        M.main([str(tmp_path), str(run), "--out", str(out)])
