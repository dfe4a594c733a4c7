"""End-to-end RL training on a tiny random model with the JAX engine (CPU): every algorithm runs, resume is
bit-exact, SIGTERM checkpoints, metrics are written."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from rlvr_jax.trainer.checkpointing import Checkpointer, PreemptionGuard
from rlvr_jax.config.presets import experiment
from rlvr_jax.train import minibatch_rows, run

def tiny(env, algo, out, **kw):
    c = experiment(algo, "tiny")
    c.data.data_dir = env["data"]
    c.model.tokenizer_path = env["tok_dir"]
    c.logging.out_dir = str(out)
    c.logging.progress = False
    c.rollout.n = 4
    c.rollout.max_new_tokens = 8
    c.data.max_prompt_len = 160
    c.train.prompt_batch_size = 2
    c.train.mini_batch_size = 1  # 2 updates per step, the second off-policy
    c.train.micro_batch_size = 8  # the 8 simulated devices split it
    c.train.total_steps = kw.pop("total_steps", 1)
    c.logging.eval_every = kw.pop("eval_every", 0)
    for k, v in kw.items():
        sec, field = k.split("__")
        setattr(getattr(c, sec), field, v)
    return c


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("algo", ["grpo", "nsr"])
def test_train_end_to_end_writes_metrics_and_export(env, tmp_path, algo):
    out = tmp_path / algo
    res = run(tiny(env, algo, out, total_steps=2, eval_every=2), tokenizer=env["tok"])
    assert res.steps_done == 2 and not res.preempted
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    r = rows[-1]
    for key in ("actor/pg_loss", "actor/entropy", "actor/pg_clipfrac", "actor/ppo_kl", "actor/grad_norm", "actor/lr",
                "critic/score/mean", "response_length/mean", "response_length/clip_ratio", "timing_s/gen",
                "timing_s/reward", "timing_s/old_log_prob", "timing_s/update_actor", "timing_s/sync_weights",
                "timing_s/step", "perf/throughput", "train/correct_ratio", "train/fully_solved_ratio",
                "train/kept_samples", "eval/math500/greedy_accuracy", "eval/math500/token_entropy",
                "rollout_corr/kl", "rollout_corr/k3_kl", "rollout_corr/rollout_is_mean"):
        assert key in r, key
    assert r["actor/lr"] == pytest.approx(1e-3)
    assert r["actor/entropy"] > 0 and np.isfinite(r["actor/grad_norm"])
    n = 2 * 4
    correct = round(r["train/correct_ratio"] * n)
    assert r["train/kept_samples"] == (n - correct if algo == "nsr" else n)
    assert (r["train/kept_token_frac"] == 1.0) == (r["train/kept_samples"] == n)  # f = 1 iff every row is kept
    assert os.path.isfile(out / "final_hf" / "config.json")
    assert Checkpointer(str(out / "checkpoints")).latest_step() == 2
    # The JAX sampler and the learner evaluate the same float32 weights: the mismatch is rounding only.
    assert abs(r["rollout_corr/rollout_is_mean"] - 1) < 1e-3 and r["rollout_corr/k3_kl"] < 1e-6


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def algorithm_names_in_readme_and_configs() -> set[str]:
    """Every algorithm name the README's tiny command line and the configs/ file names spell."""
    import glob
    import re
    from rlvr_jax.config.presets import MODELS
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    names = set(re.findall(r"tiny_cpu\.py:([a-z_]+)", readme))  # (`tiny_cpu.py:NAME` is the placeholder)
    for group in re.findall(r"\{([a-z_,]+)\}_\{", readme):  # `{ppo,grpo,...}_{qwen25math,qwen3}`
        names |= set(group.split(","))
    for path in glob.glob(os.path.join(ROOT, "configs", "*_*.py")):
        stem = os.path.basename(path)[:-3]
        for m in MODELS:
            if stem.endswith("_" + m):
                names.add(stem[:-len(m) - 1])
    return names


def test_readme_and_config_names_are_the_registered_algorithms():
    from rlvr_jax.config.presets import ALGORITHMS, SCHEDULES
    names = algorithm_names_in_readme_and_configs()
    assert {"w_reinforce", "nsr", "ppo", "gspo_n"} <= names
    assert names <= set(ALGORITHMS) | set(SCHEDULES), names - set(ALGORITHMS) - set(SCHEDULES)


def tiny_cpu(env, algo, out, **kw):
    """``--config=configs/tiny_cpu.py:ALGO`` as the command line loads it, with the README's built-in tokenizer
    (nothing passed in), cut to one short step on the test data."""
    from ml_collections import config_flags
    c = config_flags.config_flags._LoadConfigModule("tiny_cpu", os.path.join(ROOT, "configs", "tiny_cpu.py")) \
        .get_config(algo)
    assert c.algo.name == algo and c.model.tokenizer_path == "builtin:bytes"
    c.data.data_dir = env["data"]
    c.logging.out_dir = str(out)
    c.logging.progress = False
    c.logging.eval_every = 0
    c.rollout.n, c.rollout.max_new_tokens = 4, 8
    c.data.max_prompt_len = 160
    c.train.prompt_batch_size, c.train.mini_batch_size, c.train.micro_batch_size = 2, 1, 8
    c.train.total_steps, c.train.export_final = 1, False
    for k, v in kw.items():
        sec, field = k.split("__")
        setattr(getattr(c, sec), field, v)
    return c


@pytest.mark.parametrize("algo", ["ppo", "grpo", "psr", "nsr", "w_reinforce", "reinforce", "dapo", "gspo", "grpo_n",
                                  "gspo_n"])
def test_every_algorithm_runs_through_tiny_cpu(env, tmp_path, algo):
    """Every registered name (a superset of the README's and configs', test above) trains one step from
    ``configs/tiny_cpu.py:NAME``; the updates per step follow the kept rows for the "drop" presets."""
    from rlvr_jax.config.presets import ALGORITHMS
    assert algo in ALGORITHMS
    out = tmp_path / algo
    res = run(tiny_cpu(env, algo, out))
    assert res.steps_done == 1
    m = res.last_metrics
    kept = m["train/kept_samples"]
    correct = round(m["train/correct_ratio"] * 8)
    if algo == "psr":
        assert kept == correct
    elif algo == "nsr":
        assert kept == 8 - correct
    if algo in ("psr", "nsr"):  # "drop": ceil(kept rows / 4 rows per mini-batch) updates
        assert m["actor/num_updates"] == -(-kept // 4)
    else:
        assert m["actor/num_updates"] == 2
    if m["actor/num_updates"] == 0:  # e.g. PSR with no correct sample: no update, and the metrics say so
        assert m["actor/no_update"] == 1 and "actor/grad_norm" not in m
    else:
        assert np.isfinite(m["actor/grad_norm"]) and m["actor/skipped"] == 0
    if algo == "ppo":
        assert "critic/vf_loss" in m and np.isfinite(m["critic/vf_loss"])


def test_resume_is_bitwise_exact(env, tmp_path):
    kw = dict(total_steps=4, train__export_final=False, checkpoint__every=1)
    # NSR: with a random policy every reward is -1, so NSR has a non-zero policy gradient on every token.
    straight = run(tiny(env, "nsr", tmp_path / "a", **kw), tokenizer=env["tok"])
    first = run(tiny(env, "nsr", tmp_path / "b", **kw), tokenizer=env["tok"], stop_after=2)
    assert first.preempted and first.steps_done == 2
    second = run(tiny(env, "nsr", tmp_path / "b", **kw), tokenizer=env["tok"])
    assert second.steps_done == 4 and straight.steps_done == 4
    a = Checkpointer(str(tmp_path / "a" / "checkpoints"))
    b = Checkpointer(str(tmp_path / "b" / "checkpoints"))
    assert a.latest_step() == b.latest_step() == 4
    import orbax.checkpoint as ocp
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    sa = a._manager.restore(4, args=args)["state"]
    sb = b._manager.restore(4, args=args)["state"]
    assert sorted(sa) == sorted(sb) and len(sa) > 10
    for k in sa:
        np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=k)
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert ma[-1]["critic/score/mean"] == mb[-1]["critic/score/mean"]
    assert ma[-1]["actor/pg_loss"] == mb[-1]["actor/pg_loss"]


def test_sigterm_saves_checkpoint_and_stops(env, tmp_path, monkeypatch):
    cfg = tiny(env, "nsr", tmp_path / "s", total_steps=5, train__export_final=False, checkpoint__every=100)
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during start-up: the run stops before its first step
        res = run(cfg, tokenizer=env["tok"], guard=guard)
    assert res.preempted and res.steps_done == 0
    assert Checkpointer(str(tmp_path / "s" / "checkpoints")).latest_step() is None
    monkeypatch.setenv("RLVR_FAULT_AT", "gen:0:TERM")  # SIGTERM to itself right after step 1's generation
    res = run(cfg, tokenizer=env["tok"])
    assert res.preempted and res.steps_done == 1  # a signal during a step is honoured at its end
    assert Checkpointer(str(tmp_path / "s" / "checkpoints")).latest_step() == 1
    monkeypatch.delenv("RLVR_FAULT_AT")
    res = run(cfg, tokenizer=env["tok"], stop_after=1)
    assert res.steps_done == 2  # resumed from 1


def test_rollout_correction_seq_mask_runs(env, tmp_path):
    """seq_mask with a cap just above 1 drops the sequences whose geometric-mean ratio moved by more than that
    (rollout_corr/rollout_rs_masked_fraction); dropped rows are not learned from."""
    res = run(tiny(env, "nsr", tmp_path / "rs", total_steps=1, train__export_final=False,
                   algo__rollout_correction="seq_mask", algo__rollout_correction_cap=1.0 + 1e-9),
              tokenizer=env["tok"])
    m = res.last_metrics
    frac = m["rollout_corr/rollout_rs_masked_fraction"]
    print(f"\nseq_mask C = 1 + 1e-9 with the JAX sampler: {frac:.3f} of the sequences dropped")
    assert 0.0 <= frac <= 1.0 and m["train/kept_samples"] <= round(8 * (1 - frac))


def test_minibatch_rows_keep_groups_together():
    rows = minibatch_rows(4, 3, 2, np.random.default_rng(0))
    assert len(rows) == 2 and sorted(np.concatenate(rows).tolist()) == list(range(12))
    for r in rows:
        assert len(r) == 6 and all(set(r[i:i + 3] // 3) == {r[i] // 3} for i in range(0, 6, 3))


@pytest.mark.vllm
@pytest.mark.xdist_group("vllm")
def test_train_with_vllm_engine(env, tmp_path):
    """One NSR step with rollouts from a real vLLM server (started from the exported initial weights), then the
    learner's weights synced back to it."""
    out = tmp_path / "nsr_vllm"
    c = tiny(env, "nsr", out, total_steps=2)
    c.rollout.engine = "vllm"
    res = run(c, tokenizer=env["tok"])
    assert res.steps_done == 2
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["timing_s/sync_weights"] > 0 and np.isfinite(r["actor/grad_norm"]) for r in rows)
    assert rows[-1]["response_length/mean"] > 0
    # Each step exported a new version for the server; closing the engine removes the exported versions.
    weights = out / "weights"
    assert not weights.exists() or not [d for d in os.listdir(weights) if d.startswith("version_")]


def test_build_model_passes_the_attention_choices_through(env, tmp_path):
    from rlvr_jax.sharding import make_mesh
    from rlvr_jax.models import build_model
    c = tiny(env, "nsr", tmp_path, model__attention_impl="xla", model__decode_attention_impl="pallas")
    mesh = make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:1])
    _, mcfg = build_model(c, mesh, None)
    assert (mcfg.attention_impl, mcfg.decode_attention_impl) == ("xla", "pallas")
