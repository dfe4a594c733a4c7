"""rlvr_jax.testbed.exact_runs / exact_report and bases as seeds: records built from hand-chosen answer
probabilities of a 2-puzzle candidate set, aggregated over (base, seed) runs against hand computations."""
import json
import math
import os

import numpy as np
import pytest

from rlvr_jax.testbed import exact as E
from rlvr_jax.testbed import exact_report as X
from rlvr_jax.testbed import exact_runs as XR


def cands():
    """2 puzzles x 3 candidates; puzzle 0 is rare-only (its one correct answer is a product_minus)."""
    strat = [E.STRATEGY_NAMES.index(s) for s in ("product_minus", "sum", "sum", "sum", "sum", "product_minus")]
    return E.CandidateSet(prompts=[[1], [2]], tokens=np.ones((6, 2), np.int32), lengths=np.full(6, 2, np.int32),
                          puzzle=np.array([0, 0, 0, 1, 1, 1], np.int32),
                          correct=np.array([1, 0, 0, 1, 1, 0], bool), strategy=np.array(strat, np.int32),
                          texts=["a"] * 6, rare_only=np.array([True, False]))


def probs(pc0, pc1):
    """Candidate probabilities with p_correct = pc0 (puzzle 0) and pc1 (puzzle 1); 0.1 remaining mass each."""
    return np.array([pc0, 0.9 - pc0 - 0.1, 0.1, pc1 / 2, pc1 / 2, 0.9 - pc1])


def record(c, algo, steps_probs, base_probs):
    traj = []
    for step, p in steps_probs:
        pr = {s: p for s in E.SETTINGS}
        traj.append(dict(XR.trajectory_point(E.policy_metrics(pr, c), pr, base_probs, c), step=step))
    final = E.policy_metrics({s: steps_probs[-1][1] for s in E.SETTINGS}, c)
    return {"algo": algo, "steps": [s for s, _ in steps_probs], "trajectory": traj, "final": final}


def write_study(root, c, base_pc, run_pc):
    """bases {b: (pc0, pc1)}; runs {(b, seed): [(step, pc0, pc1), ...]} (algo "nsr")."""
    for b, pc in base_pc.items():
        bp = {s: probs(*pc) for s in E.SETTINGS}
        d = os.path.join(root, f"base{b}", "exact")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "base.json"), "w") as f:
            json.dump(record(c, "base", [(0, probs(*pc))], bp), f)
    for (b, seed), traj in run_pc.items():
        bp = {s: probs(*base_pc[b]) for s in E.SETTINGS}
        d = os.path.join(root, f"base{b}", f"seed{seed}", "exact")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "nsr.json"), "w") as f:
            json.dump(record(c, "nsr", [(s, probs(x, y)) for s, x, y in traj], bp), f)


def test_trajectory_point_kl_and_pass_at_k_by_hand():
    c = cands()
    b, p = probs(0.2, 0.4), probs(0.5, 0.6)
    pr = {s: p for s in E.SETTINGS}
    pt = XR.trajectory_point(E.policy_metrics(pr, c, 1024), pr, {s: b for s in E.SETTINGS}, c)
    assert pt["eval"]["pass@1"] == pytest.approx((0.5 + 0.6) / 2)
    assert pt["eval"]["pass@16"] == pytest.approx(1 - (0.5 ** 16 + 0.4 ** 16) / 2)
    assert pt["eval"]["rare_only_pass@1"] == pytest.approx(0.5)
    # KL over the answers and the remaining mass, by hand, mean over the two puzzles
    kl = [sum(bi * math.log(bi / pi) for bi, pi in zip(list(b[3 * i:3 * i + 3]) + [0.1], list(p[3 * i:3 * i + 3]) + [0.1]))
          for i in range(2)]
    assert pt["train"]["kl_base_policy"] == pytest.approx(np.mean(kl))
    assert "kl_base_policy" not in pt["eval"]   # truncated setting: not a distance
    same = XR.trajectory_point(E.policy_metrics({"train": b}, c, 16), {"train": b}, {"train": b}, c)
    assert same["train"]["kl_base_policy"] == pytest.approx(0.0, abs=1e-12)


def test_study_aggregates_over_bases_and_seeds_against_each_runs_own_base(tmp_path):
    c = cands()
    base_pc = {0: (0.2, 0.4), 1: (0.1, 0.6)}
    run_pc = {(0, 0): [(0, 0.2, 0.4), (5, 0.3, 0.5), (10, 0.4, 0.7)],
              (1, 0): [(0, 0.1, 0.6), (5, 0.1, 0.7), (10, 0.2, 0.85)],
              (1, 1): [(0, 0.1, 0.6), (5, 0.05, 0.5), (10, 0.05, 0.8)]}
    write_study(str(tmp_path), c, base_pc, run_pc)
    col = X.collect(str(tmp_path))
    assert list(col["bases"]) == [0, 1] and [(b, s) for b, s, _ in col["runs"]["nsr"]] == [(0, 0), (1, 0), (1, 1)]
    a = X.aggregate(col, "eval", "pass_at_k", 1)
    finals = [(0.4 + 0.7) / 2, (0.2 + 0.85) / 2, (0.05 + 0.8) / 2]
    assert a["value"]["nsr"][0] == pytest.approx(np.mean(finals))
    assert a["value"]["nsr"][1] == pytest.approx(np.std(finals, ddof=1))
    assert a["value"]["base"][0] == pytest.approx(np.mean([0.3, 0.35]))
    deltas = [finals[0] - 0.3, finals[1] - 0.35, finals[2] - 0.35]
    assert a["delta"]["nsr"][0] == pytest.approx(np.mean(deltas))
    k64 = X.aggregate(col, "eval", "pass_at_k_rare_only", 64)["value"]["nsr"][0]
    assert k64 == pytest.approx(np.mean([1 - 0.6 ** 64, 1 - 0.8 ** 64, 1 - 0.95 ** 64]))
    fr = X.frontier_deltas(col, K=64)
    assert fr["nsr"]["d1"][0] == pytest.approx(100 * np.mean(deltas))
    summary = X.write(str(tmp_path), timings={"total": 1.0})
    for f in ("exact.md", "exact_pass_at_k.png", "trajectories.png", "exact_frontier.png", "exact_summary.json"):
        assert (tmp_path / "report" / f).stat().st_size > 0, f
    assert summary["runs"] == {"nsr": 3}
    md = (tmp_path / "report" / "exact.md").read_text()
    assert "base 0: pass@1 / pass@1024" in md and "rare-only pass@1024" in md


def test_spread_splits_rl_seeds_from_bases_by_hand(tmp_path):
    """2 bases x 2 seeds; pass@1 = (pc0 + pc1) / 2: base 0.30 / 0.35, runs .55 .45 (base 0) and .525 .425
    (base 1): within-base variance .005 on both, base means .50 / .475; deltas .25 .15 / .175 .075."""
    c = cands()
    base_pc = {0: (0.2, 0.4), 1: (0.1, 0.6)}
    run_pc = {(0, 0): [(10, 0.4, 0.7)], (0, 1): [(10, 0.3, 0.6)], (1, 0): [(10, 0.2, 0.85)],
              (1, 1): [(10, 0.05, 0.8)]}
    write_study(str(tmp_path), c, base_pc, run_pc)
    sp = X.spread(X.collect(str(tmp_path)))
    r = sp["nsr"]
    assert (r["bases"], r["seeds"], r["pass@1"]["n"]) == (2, 2, 4)
    assert r["pass@1"]["mean"] == pytest.approx((0.55 + 0.45 + 0.525 + 0.425) / 4)
    assert r["pass@1"]["seed_std"] == pytest.approx(math.sqrt(0.005))
    assert r["pass@1"]["base_std"] == pytest.approx(0.025 / math.sqrt(2))
    assert r["d1"]["mean"] == pytest.approx((0.25 + 0.15 + 0.175 + 0.075) / 4)
    assert r["d1"]["seed_std"] == pytest.approx(math.sqrt(0.005))
    assert r["d1"]["base_std"] == pytest.approx(0.075 / math.sqrt(2))
    assert sp["base"]["pass@1"]["base_std"] == pytest.approx(0.05 / math.sqrt(2))
    X.write(str(tmp_path))
    md = (tmp_path / "report" / "exact.md").read_text()
    assert "## RL seeds against bases" in md and "| NSR | 2 x 2 | 48.8 | 7.1 | 1.8 | +16.2 | 7.1 | 5.3 | 100.0 |" in md
    # one seed on a base: no split (the aggregation test's study has base 0 with seed 0 only)
    del run_pc[(0, 1)]
    other = tmp_path / "other"
    write_study(str(other), c, base_pc, run_pc)
    assert X.spread(X.collect(str(other))) == {}


def test_at_kl_interpolates_the_first_time_a_trajectory_reaches_the_kl():
    kl = np.array([0.0, 0.1, 0.3, 0.2, 0.5])
    v = np.array([0.0, 1.0, 3.0, 9.0, 5.0])
    assert X.at_kl(kl, v, 0.2) == pytest.approx(2.0)
    assert X.at_kl(kl, v, 0.4) == pytest.approx(9.0 + (5.0 - 9.0) * (0.4 - 0.3) / 0.2)
    assert math.isnan(X.at_kl(kl, v, 0.6))


def test_stepsize_compares_at_the_kl_every_lr_reaches(tmp_path):
    c = cands()
    small = {(0, 0): [(0, 0.2, 0.4), (40, 0.25, 0.45)]}
    large = {(0, 0): [(0, 0.2, 0.4), (5, 0.25, 0.45), (10, 0.6, 0.9)]}
    write_study(str(tmp_path / "a"), c, {0: (0.2, 0.4)}, small)
    write_study(str(tmp_path / "b"), c, {0: (0.2, 0.4)}, large)
    res = X.stepsize([("1e-4", str(tmp_path / "a")), ("1e-3", str(tmp_path / "b"))], str(tmp_path / "out"))
    r = res["nsr"]
    assert r["common_kl"] == pytest.approx(r["lrs"]["1e-4"]["kl"][-1])
    # the large-lr run passes the small one's KL at its step 5 with the same policy: the same change there
    assert r["lrs"]["1e-3"]["at_common_kl"]["pass@1/eval"] == pytest.approx(0.05)
    assert r["lrs"]["1e-4"]["at_common_kl"]["pass@1/eval"] == pytest.approx(0.05)
    assert (tmp_path / "out" / "stepsize.png").stat().st_size > 0


def test_bases_keep_the_puzzle_split_and_draw_their_own_warm_start():
    import dataclasses

    from rlvr_jax.testbed import warmstart as ws
    from rlvr_jax.testbed.experiment import ExperimentConfig, base_config, rl_config

    cfg = ExperimentConfig(out_dir="o", bases=(0, 2), seeds=(0, 1))
    sub = base_config(cfg, 2)
    assert (sub.out_dir, sub.warm_dir, sub.bases) == (os.path.join("o", "base2"), os.path.join("o", "base2", "warmstart"), ())
    assert sub.warmstart.seed == 2 and sub.warmstart.split_seed == 0 and sub.seeds == (0, 1)
    split = lambda w: {k: [p.numbers + (p.target,) for p in v] for k, v in ws.puzzle_splits(w).items()}  # noqa: E731
    assert split(sub.warmstart) == split(ws.WarmStartConfig())
    assert split(dataclasses.replace(sub.warmstart, split_seed=-1)) != split(ws.WarmStartConfig())
    c = rl_config("nsr", "w", "o", cfg)
    assert c.checkpoint.every == cfg.traj_every and c.checkpoint.keep >= cfg.total_steps // cfg.traj_every + 1
    with pytest.raises(ValueError, match="bases"):
        ExperimentConfig(bases=(1, 1))
    with pytest.raises(ValueError, match="nothing would be evaluated"):
        ExperimentConfig(sampled_eval=False, exact_eval=False)
