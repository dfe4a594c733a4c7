"""The testbed's sweep bookkeeping, report tables and ConfigDict CLI (fast, no model)."""
import numpy as np
import pytest

from rlvr_jax.config.validate import ConfigError
from rlvr_jax.testbed import config as C
from rlvr_jax.testbed import report as R
from rlvr_jax.testbed import sweep as S


def _ev(pk: dict, **kw):
    return {"pass_at_k": {str(k): v for k, v in pk.items()}, **kw}


def test_sweep_deltas_hand_computed():
    res = {400: {"base": _ev({1: 0.30, 64: 0.80}), "nsr": _ev({1: 0.32, 64: 0.86}), "psr": _ev({1: 0.40, 64: 0.70})},
           150: {"base": _ev({1: 0.10, 64: 0.90}), "nsr": _ev({1: 0.08, 64: 0.85}), "psr": _ev({1: 0.15, 64: 0.80})}}
    d = S.sweep_deltas(res, ks=(1, 16, 64))
    assert d["steps"] == [150, 400]          # ordered by warm-start length
    assert list(d["base"]) == [1, 64]        # k=16 is in no summary: dropped
    np.testing.assert_allclose(d["base"][1], [0.10, 0.30])
    np.testing.assert_allclose(d["delta"]["nsr"][1], [-0.02, 0.02])
    np.testing.assert_allclose(d["delta"]["nsr"][64], [-0.05, 0.06])
    np.testing.assert_allclose(d["delta"]["psr"][64], [-0.10, -0.10])
    md = S.sweep_table(d)
    assert md.splitlines()[0] == "| method | warm-start steps | base pass@1 | base pass@64 | Δpass@1 | Δpass@64 |"
    assert "| NSR | 150 | 10.0 | 90.0 | -2.0 | -5.0 |" in md and "| PSR | 400 | 30.0 | 80.0 | +10.0 | -10.0 |" in md
    del res[150]["psr"]
    with pytest.raises(ValueError, match="expected base"):
        S.sweep_deltas(res)


def test_sweep_plot_writes_png(tmp_path):
    d = S.sweep_deltas({1: {"base": _ev({1: 0.1, 4: 0.3}), "nsr": _ev({1: 0.2, 4: 0.3})},
                        2: {"base": _ev({1: 0.3, 4: 0.5}), "nsr": _ev({1: 0.3, 4: 0.6})}})
    S.plot_sweep(d, str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_report_aggregate_and_tables_use_the_shared_markdown_table():
    ks = [1, 2]
    evals = {"base": [_ev({1: 0.2, 2: 0.3}, token_entropy=0.5, greedy_accuracy=0.25,
                          status_counts={"correct": 3, "no_answer": 1}),
                      _ev({1: 0.4, 2: 0.5}, token_entropy=0.7, greedy_accuracy=0.35,
                          status_counts={"correct": 3, "no_answer": 0, "incorrect": 1})]}
    agg = R.aggregate(evals, ks)
    assert agg["base"]["pass@1"] == pytest.approx((0.3, np.std([0.2, 0.4], ddof=1)))
    assert agg["base"]["unparseable"][0] == pytest.approx(0.125)   # (1/4 + 0/4) / 2
    rows = [{"step": s, "train/correct_ratio": c, "train/fully_solved_ratio": 0.0} for s, c in enumerate(range(10))]
    tab = R.tables(agg, evals, {"nsr": [rows, rows]}, ks, (0, 1))
    assert tab["pass_at_k"].splitlines()[:3] == ["| k | base |", "|---|---|", "| 1 | 30.0 ± 14.1 |"]
    assert "| 1 | 40.0 / 50.0 / 35.0 / 0.700 |" in tab["per_seed"]
    assert "| NSR | 200.0 | 700.0 | 0.0 | 0.0 |" in tab["training"]  # mean of steps 0-4 = 2, 5-9 = 7 (x100 %)


def test_config_round_trip_overrides_and_errors():
    cfg = C.get_config("study")
    exp, sweep = C.from_config(cfg)
    assert exp.seeds == (0, 1, 2) and sweep.warmstart_steps == C.SweepConfig().warmstart_steps
    assert exp.algorithms == ("psr", "nsr", "w_reinforce", "grpo", "grpo_n")
    cfg.warmstart.steps = 77
    cfg.lr = 1e-4
    exp, _ = C.from_config(cfg)
    assert exp.warmstart.steps == 77 and exp.lr == 1e-4
    q, _ = C.from_config(C.get_config("quick"))
    assert q.total_steps < exp.total_steps
    bad = C.get_config("demo")
    bad.warmstart.flawed_share = 1.5
    with pytest.raises(ConfigError, match="warmstart.flawed_share"):
        C.from_config(bad)
    bad = C.get_config("demo")
    bad.algorithms = ("nsr", "ppo2")
    with pytest.raises(ConfigError, match="algorithms"):
        C.from_config(bad)
    bad = C.get_config("demo")
    bad.sweep.warmstart_steps = (300, 100)
    with pytest.raises(ConfigError, match="sweep.warmstart_steps"):
        C.from_config(bad)
    for field, value in (("lr", -1.0), ("eval_top_p", 1.5), ("rollout_n", 0)):
        bad = C.get_config("demo")
        bad[field] = value
        with pytest.raises(ConfigError, match=f"'{field}'.*must be"):
            C.from_config(bad)
    with pytest.raises(ConfigError, match="mode"):
        C.get_config("fast")


def test_demo_resolve_shortcuts():
    from rlvr_jax.demo import resolve

    exp, _ = resolve(None, True, "0,1,2", "/tmp/x", None)
    assert exp.seeds == (0, 1, 2) and exp.out_dir == "/tmp/x" and exp.warm_dir == "/tmp/x/warmstart"
    assert exp.total_steps == C.from_config(C.get_config("quick"))[0].total_steps
    with pytest.raises(ConfigError, match="seeds"):
        resolve(None, False, "0,a", "o", None)
    with pytest.raises(ConfigError, match="quick"):
        resolve(C.get_config("demo"), True, None, "o", None)
