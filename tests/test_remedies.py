"""The remedies for lost diversity (docs/objectives.md "Remedies"): unlikeliness reward, zero-success gating, SimKO
and the phase schedule (NSR warm-up): values and gradients against hand computations and closed forms, config
errors by field, and a tiny rlvr_jax.train run that switches phase and resumes mid-schedule exactly."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.config import ConfigError, validate_config
from rlvr_jax.config.presets import experiment
from rlvr_jax.config.schedule import Phase, parse_schedule, phase_at, phase_configs
from rlvr_jax.objectives import closed_form, get_objective, group_shaping, loss_value
from rlvr_jax.objectives.advantages import group_normalized_advantages
from rlvr_jax.objectives.simko import masked_row_quantile
from rlvr_jax.objectives.types import ObjectiveHParams

REMEDIES = ("grpo_unlikely", "grpo_gated", "nsr_gated", "simko", "nsr_warmup")


@pytest.fixture
def x64():
    """float64 for one test (the training test below runs in the default float32)."""
    with jax.enable_x64():
        yield


# ---------------------------------------------------------------------------------------------------------------
# Unlikeliness reward and gating (host-side, hand computations)
# ---------------------------------------------------------------------------------------------------------------
def test_unlikeliness_rewards_by_hand():
    # one group of G = 4 (+1 / -1 rewards): likelihoods -1 (most likely), -3, -2, -3 (a tie: ranks 0 and 1 -> 0.5)
    rewards = np.array([1.0, 1.0, -1.0, 1.0], np.float32)
    correct = np.array([True, True, False, True])
    seq = np.array([-1.0, -3.0, -2.0, -3.0])
    np.testing.assert_array_equal(group_shaping.group_ranks(seq, 4), [3.0, 0.5, 2.0, 0.5])
    shaped = group_shaping.unlikeliness_rewards(rewards, correct, seq, 4, 0.25)
    expect = [1 - 0.25 * 3 / 4, 1 - 0.25 * 0.5 / 4, -1.0, 1 - 0.25 * 0.5 / 4]  # the incorrect one unchanged
    np.testing.assert_allclose(shaped, expect, rtol=1e-6)
    # GRPO's normalisation of the shaped rewards: the rare correct samples now get the larger advantage
    adv = np.asarray(group_normalized_advantages(jnp.asarray(shaped), 4))
    m, sd = np.mean(expect), np.std(expect, ddof=1)
    np.testing.assert_allclose(adv, (np.array(expect) - m) / (sd + 1e-6), rtol=1e-5)
    assert adv[1] == adv[3] > adv[0] > 0 > adv[2]
    # {0, 1} rewards: the same factors, 0 stays 0; beta = 0 changes nothing
    np.testing.assert_allclose(group_shaping.unlikeliness_rewards(correct.astype(np.float32), correct, seq, 4, 0.25),
                               [0.8125, 0.96875, 0.0, 0.96875])
    np.testing.assert_array_equal(group_shaping.unlikeliness_rewards(rewards, correct, seq, 4, 0.0), rewards)
    # the likelihood is the length-normalised log-prob over the valid tokens
    lp = np.array([[-1.0, -3.0, 9.0], [-2.0, 0.0, 0.0]])
    np.testing.assert_allclose(group_shaping.sequence_mean_logp(lp, [[1, 1, 0], [1, 0, 0]]), [-2.0, -2.0])


def test_gate_rows_and_trainer_gate_by_hand():
    from rlvr_jax.batch import TrainBatch
    from rlvr_jax.trainer.update_plan import gate
    correct = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1], bool)  # G = 4: 0, 2 and 4 successes... per group
    correct = correct.reshape(3, 4)
    correct[0] = [0, 0, 0, 0]
    correct[1] = [0, 1, 0, 0]
    correct = correct.reshape(-1)                                          # successes 0, 1, 4
    np.testing.assert_array_equal(group_shaping.gate_rows(correct, 4, 0), np.repeat([1, 0, 0], 4).astype(bool))
    np.testing.assert_array_equal(group_shaping.gate_rows(correct, 4, 1), np.repeat([1, 1, 0], 4).astype(bool))
    assert group_shaping.gate_rows(correct, 4, -1).all()
    cfg = experiment("grpo_gated", "tiny")
    cfg.rollout.n = 4
    adv = np.ones((12, 3), np.float32)
    mask = np.ones((12, 3), np.float32)
    b = TrainBatch(prompt_ids=np.zeros((12, 1), np.int32), prompt_mask=np.ones((12, 1), np.int32),
                   response_ids=np.zeros((12, 3), np.int32), response_mask=mask, advantages=adv)
    kept = np.ones(12, bool)
    kept[0] = False
    b2, kept2, m = gate(cfg, correct, b, kept)
    np.testing.assert_array_equal(kept2, np.r_[[False], np.ones(7, bool), np.zeros(4, bool)])
    assert (b2.advantages[8:] == 0).all() and (b2.advantages[:8] == 1).all()
    assert m["train/gated_prompt_ratio"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------------------------
# Objectives: values and gradients
# ---------------------------------------------------------------------------------------------------------------
def _token_inputs(z, y, top_k):
    """Exact float64 per-token inputs of the objectives from logits z [B, T, V]."""
    logpi = jax.nn.log_softmax(z, -1)
    logp = jnp.take_along_axis(logpi, y[..., None], -1)[..., 0]
    ent = -jnp.sum(jnp.exp(logpi) * logpi, -1)
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(z), top_k)
    tk = jnp.sum(jnp.take_along_axis(logpi, idx, -1), -1)
    top1 = (jnp.argmax(z, -1) == y).astype(z.dtype)
    return logp, ent, tk, top1


@pytest.mark.usefixtures("x64")
def test_simko_value_and_gradient_match_closed_form():
    B, T, V, K = 4, 6, 7, 3
    rng = np.random.default_rng(0)
    z0 = jnp.asarray(rng.normal(size=(B, T, V)) * 1.5)
    y = jnp.asarray(rng.integers(0, V, size=(B, T)))
    y = y.at[0, :3].set(jnp.argmax(z0[0, :3], -1)).at[2, :4].set(jnp.argmax(z0[2, :4], -1))  # some top-1 samples
    mask = jnp.asarray(np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 6, [1] * 5 + [0]], np.float64))
    adv = jnp.asarray(np.array([1.3, -0.7, -1.1, 0.9]))[:, None] * mask
    logp0, ent0, _, _ = _token_inputs(z0, y, K)
    # old policy: on-policy for most tokens, inside the trust region (r in (0.9, 1.1)) for the rest
    old = logp0 + jnp.asarray(rng.uniform(-0.09, 0.09, size=(B, T))) * (rng.random((B, T)) < 0.5)
    hp = ObjectiveHParams(clip_eps_low=0.2, clip_eps_high=0.2, simko_top_k=K, simko_alpha=0.3, simko_tau=0.5,
                          simko_lambda=1.7)  # larger alpha / lambda than the preset: the terms are visible

    def loss(z):
        logp, ent, tk, top1 = _token_inputs(z, y, K)
        batch = dict(logp=logp, entropy=ent, topk_logp_sum=tk, is_top1=top1, old_logp=old, advantages=adv,
                     mask=mask)
        return loss_value(get_objective("simko")(batch, hp))

    # w by hand: entropies above the row's 0.5-quantile (numpy's linear interpolation)
    w = np.zeros((B, T), bool)
    for b in range(B):
        n = int(mask[b].sum())
        e = np.asarray(ent0[b, :n])
        w[b, :n] = e > np.quantile(e, 0.5)
    n_tok = float(mask.sum())
    g = jax.jit(jax.grad(loss))(z0)
    ref = closed_form.simko_logit_grad(z0, y, adv, old, jnp.asarray(w), K, 0.3, 1.7, 0.2, 0.2) / n_tok
    ref = jnp.where(mask[..., None] > 0, ref, 0.0)
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-10, atol=1e-13)
    # value: GRPO's with A scaled by lambda on incorrect top-1 high-entropy tokens (SimKO's ratio has value r)
    top1 = np.asarray(jnp.argmax(z0, -1) == y)
    a_hand = np.where((np.asarray(adv) < 0) & w & top1, 1.7 * np.asarray(adv), np.asarray(adv))
    assert ((np.asarray(adv) < 0) & w & top1).any() and ((np.asarray(adv) > 0) & w).any()
    grpo = loss_value(get_objective("grpo")(dict(logp=logp0, old_logp=old, advantages=jnp.asarray(a_hand),
                                                 mask=mask), hp))
    np.testing.assert_allclose(float(loss(z0)), float(grpo), rtol=1e-12)
    # alpha = 0, lambda = 1: exactly GRPO's gradient
    ref0 = closed_form.simko_logit_grad(z0, y, adv, old, jnp.asarray(w), K, 0.0, 1.0, 0.2, 0.2)
    gg = closed_form.clipped_surrogate_logit_grad(z0, y, adv, old, 0.2, 0.2)
    np.testing.assert_allclose(np.asarray(ref0), np.asarray(gg), rtol=1e-12, atol=1e-15)


@pytest.mark.usefixtures("x64")
def test_masked_row_quantile_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 9))
    lens = [9, 1, 4, 7, 2]
    mask = np.array([[1] * n + [0] * (9 - n) for n in lens])
    for q in (0.0, 0.2, 0.8, 1.0):
        got = np.asarray(masked_row_quantile(jnp.asarray(x), jnp.asarray(mask), q))
        np.testing.assert_allclose(got, [np.quantile(x[i, :n], q) for i, n in enumerate(lens)], rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_token_logprobs_topk_values_and_gradient():
    """The chunked log-prob kernel's SimKO outputs and hand-written VJP against autodiff of the plain form."""
    from rlvr_jax.models.logprobs import token_logprobs
    rng = np.random.default_rng(2)
    B, T, H, V, K = 2, 5, 4, 11, 3
    h = jnp.asarray(rng.normal(size=(B, T, H)))
    w = jnp.asarray(rng.normal(size=(H, V)))
    y = jnp.asarray(rng.integers(0, V, size=(B, T)))
    y = y.at[0, 1].set(jnp.argmax(h[0, 1] @ w))
    c = jnp.asarray(rng.normal(size=(4, B, T)))

    def chunked(h, w):
        lp, ent, tk, top1 = token_logprobs(h, w, y, chunk_size=2, top_k=K)
        return jnp.sum(c[0] * lp + c[1] * ent + c[2] * tk + c[3] * top1), (lp, ent, tk, top1)

    def plain(h, w):
        out = _token_inputs(jnp.einsum("bth,hv->btv", h, w), y, K)
        return jnp.sum(c[0] * out[0] + c[1] * out[1] + c[2] * out[2]), out

    (vc, oc), gc = jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True)(h, w)
    (vp, op), gp = jax.value_and_grad(plain, argnums=(0, 1), has_aux=True)(h, w)
    for a, b in zip(oc, op):  # the kernel computes in float32 (float32 accumulation)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert float(oc[3][0, 1]) == 1.0
    for a, b in zip(gc, gp):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # without top_k: the same two outputs as before
    lp2, ent2 = token_logprobs(h, w, y, chunk_size=2)
    np.testing.assert_allclose(np.asarray(lp2), np.asarray(oc[0]), rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_gated_and_unlikely_objectives_are_their_base_loss():
    """nsr_gated / grpo_gated / grpo_unlikely are NSR's / GRPO's per-token loss (their remedy acts on the
    advantages); their logit gradient at r = 1 is Lemma 1's -A (e_y - pi) on the selected tokens."""
    rng = np.random.default_rng(3)
    B, T, V = 3, 4, 5
    z = jnp.asarray(rng.normal(size=(B, T, V)))
    y = jnp.asarray(rng.integers(0, V, size=(B, T)))
    mask = jnp.ones((B, T))
    adv = jnp.asarray([[1.0], [-1.0], [-1.0]]) * mask
    hp = ObjectiveHParams()

    def grad(name):
        def f(zz):
            logp = jnp.take_along_axis(jax.nn.log_softmax(zz, -1), y[..., None], -1)[..., 0]
            return loss_value(get_objective(name)(dict(logp=logp, old_logp=jax.lax.stop_gradient(logp),
                                                       advantages=adv, mask=mask), hp))
        return np.asarray(jax.grad(f)(z))

    lemma = np.asarray(closed_form.logprob_objective_logit_grad(z, y, -adv)) / (B * T)
    np.testing.assert_allclose(grad("grpo_unlikely"), lemma, rtol=1e-10)
    np.testing.assert_allclose(grad("grpo_gated"), lemma, rtol=1e-10)
    np.testing.assert_allclose(grad("nsr_gated"), np.where(np.asarray(adv)[..., None] < 0, lemma, 0), rtol=1e-10)
    np.testing.assert_allclose(grad("nsr_gated"), grad("nsr"), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Schedule parsing and config validation
# ---------------------------------------------------------------------------------------------------------------
def test_parse_schedule():
    assert parse_schedule("nsr:25%,w_reinforce", 40) == [Phase("nsr", 0, 10), Phase("w_reinforce", 10, 40)]
    assert parse_schedule("nsr:10, w_reinforce:20 ,grpo", 40) == [Phase("nsr", 0, 10), Phase("w_reinforce", 10, 30),
                                                                  Phase("grpo", 30, 40)]
    assert parse_schedule("nsr:25%,w_reinforce", 4) == [Phase("nsr", 0, 1), Phase("w_reinforce", 1, 4)]
    assert parse_schedule("grpo", 3) == [Phase("grpo", 0, 3)]
    phases = parse_schedule("nsr:2,grpo", 5)
    assert [phase_at(phases, s) for s in range(5)] == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("text, match", [
    ("", "empty schedule"),
    ("nsr:25%", "drop its length"),
    ("nsr,grpo", "needs a length"),
    ("nsr:0,grpo", "positive number"),
    ("nsr:100%,grpo", "positive number"),
    ("nsr:abc%,grpo", "positive number"),
    ("nsr:-3,grpo", "positive number"),
    ("nsr:1%,grpo", "has no step"),          # 1% of 10 steps rounds to 0
    ("nsr:10,grpo", "has no step"),          # nothing left for grpo
    ("nsrr:2,grpo", "unknown algorithm 'nsrr'"),
    ("nsr:2,ppo", "ppo cannot be a phase"),
    (":2,grpo", "no algorithm name"),
])
def test_schedule_errors_name_the_field(text, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_schedule(text, 10)
    assert e.value.field == "algo.schedule"
    if text:  # the same error from validate_config, before any compute
        cfg = experiment("nsr_warmup", "tiny")
        cfg.train.total_steps = 10
        cfg.algo.schedule = text
        with pytest.raises(ConfigError, match=match):
            validate_config(cfg, check_files=False, num_devices=8)


def test_schedule_phases_take_their_presets_and_the_overrides():
    cfg = experiment("nsr_warmup", "tiny")
    cfg.train.total_steps = 8
    cfg.algo.entropy_coef = 0.0  # an override: applies to every phase
    nsr, wr = phase_configs(cfg)
    assert (nsr.algo.name, nsr.algo.sample_selection, nsr.algo.schedule) == ("nsr", "drop", "")
    assert (wr.algo.name, wr.algo.sample_selection, wr.algo.lam) == ("w_reinforce", "mask", 0.1)
    assert nsr.algo.entropy_coef == wr.algo.entropy_coef == 0.0
    assert cfg.algo.name == "nsr_warmup" and cfg.algo.schedule == "nsr:25%,w_reinforce"
    validate_config(cfg, check_files=False, num_devices=8)
    # a phase that needs the reference policy gives every phase one (the learner is built once)
    cfg.algo.schedule = "nsr:2,grpo"
    assert [pc.algo.use_reference for pc in phase_configs(cfg)] == [True, True]
    # an override that one phase rejects: the field is named, and the phase
    cfg.algo.unlikeliness_beta = 0.25
    with pytest.raises(ConfigError, match=r"phase 0 \(nsr, steps 0-1\).*adv_estimator='grpo'") as e:
        validate_config(cfg, check_files=False, num_devices=8)
    assert e.value.field == "algo.unlikeliness_beta"


@pytest.mark.parametrize("name, field, value, match", [
    ("grpo_gated", "sample_selection", "mask", "must leave the batch"),  # reported on algo.gate_max_correct
    ("grpo_gated", "gate_max_correct", 8, r"in \[0, rollout.n=8\)"),
    ("nsr_gated", "gate_max_correct", -2, "must be -1"),
    ("nsr", "unlikeliness_beta", 0.25, "adv_estimator='grpo'"),
    ("grpo_unlikely", "unlikeliness_beta", 1.5, r"in \[0, 1\]"),
    ("simko", "simko_top_k", 0, ">= 1"),
    ("simko", "simko_tau", 1.2, r"in \[0, 1\]"),
    ("simko", "adv_estimator", "correctness", "sign of group-relative advantages"),
])
def test_remedy_fields_are_validated(name, field, value, match):
    cfg = experiment(name, "tiny")
    cfg.rollout.n = 8
    setattr(cfg.algo, field, value)
    with pytest.raises(ConfigError, match=match) as e:
        validate_config(cfg, check_files=False, num_devices=8)
    assert e.value.field == "algo." + ("gate_max_correct" if field == "sample_selection" else field)


@pytest.mark.parametrize("name", REMEDIES)
def test_presets_and_tiny_cpu_configs(name):
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("tiny_cpu", os.path.join(root, "configs", "tiny_cpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config(name)
    assert cfg.algo.name == name
    validate_config(cfg, check_files=False, num_devices=8)
    a = cfg.algo
    expect = {"grpo_unlikely": (0.25, -1, ""), "grpo_gated": (0.0, 1, ""), "nsr_gated": (0.0, 0, ""),
              "simko": (0.0, -1, ""), "nsr_warmup": (0.0, -1, "nsr:25%,w_reinforce")}[name]
    assert (a.unlikeliness_beta, a.gate_max_correct, a.schedule) == expect
    assert (a.simko_top_k, a.simko_alpha, a.simko_tau, a.simko_lambda) == (3, 0.01, 0.8, 1.1)


# ---------------------------------------------------------------------------------------------------------------
# rlvr_jax.train: every remedy trains; the schedule switches and resumes exactly
# ---------------------------------------------------------------------------------------------------------------
def _tiny(env, algo, out, **kw):
    c = experiment(algo, "tiny")
    c.data.data_dir = env["data"]
    c.model.tokenizer_path = env["tok_dir"]
    c.logging.out_dir = str(out)
    c.logging.progress = False
    c.logging.eval_every = 0
    c.rollout.n = 4
    c.rollout.max_new_tokens = 4
    c.data.max_prompt_len = 160
    c.train.prompt_batch_size = 2
    c.train.mini_batch_size = 1
    c.train.micro_batch_size = 8
    c.train.export_final = False
    c.data.grade_workers = 0  # in-process grading: no worker start-up
    for k, v in kw.items():
        sec, field = k.split("__")
        setattr(getattr(c, sec), field, v)
    return c


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_schedule_switches_phase_in_a_tiny_run(env, tmp_path):
    """configs/tiny_cpu.py:simko with algo.schedule="nsr_gated:1,simko": step 1 trains nsr_gated, step 2 SimKO
    (two remedies through rlvr_jax.train in one run; the learner switches its loss at the phase boundary). Resume
    mid-schedule against the uninterrupted run, and every remedy alone: the heavy test below."""
    from rlvr_jax.train import run
    kw = dict(train__total_steps=2, checkpoint__every=100, algo__schedule="nsr_gated:1,simko")
    res = run(_tiny(env, "simko", tmp_path / "s", **kw), tokenizer=env["tok"])
    assert res.steps_done == 2 and not res.preempted
    m1, m2 = _metrics(tmp_path / "s")
    assert (m1["train/phase"], m2["train/phase"]) == (0, 1)
    # step 1, nsr_gated ("drop", m = 0): the prompts without a success pass the gate, their incorrect rows train
    wrong = 8 - round(8 * m1["train/correct_ratio"])
    assert m1["train/kept_samples"] <= wrong and m1["actor/num_updates"] == -(-m1["train/kept_samples"] // 4)
    if m1["train/correct_ratio"] == 0:  # the random tiny model: no success anywhere, every row of NSR trains
        assert m1["train/gated_prompt_ratio"] == 1.0 and m1["train/kept_samples"] == 8
        assert m1["actor/grad_norm"] > 0
    # step 2, SimKO ("mask": the 2 mini-batches of GRPO's layout), a finite update, no gate
    assert "train/gated_prompt_ratio" not in m2 and m2["actor/num_updates"] == 2
    assert np.isfinite(m2["actor/grad_norm"]) and m2["actor/skipped"] == 0


HEAVY = os.environ.get("RLVR_REMEDIES_HEAVY") == "1"


@pytest.mark.skipif(not HEAVY, reason="about 4-5 minutes on 2 cores: set RLVR_REMEDIES_HEAVY=1")
def test_heavy_every_remedy_trains_and_resume_mid_schedule_is_bitwise_exact(env, tmp_path):
    from rlvr_jax.train import run
    from rlvr_jax.trainer.checkpointing import Checkpointer
    # resume into the second phase of a schedule (the learner starts in phase 0 and switches on resume)
    kw = dict(train__total_steps=2, checkpoint__every=1, algo__schedule="nsr_gated:1,simko")
    assert run(_tiny(env, "simko", tmp_path / "r", **kw), tokenizer=env["tok"], stop_after=1).preempted
    assert run(_tiny(env, "simko", tmp_path / "r", **kw), tokenizer=env["tok"]).steps_done == 2
    assert [r["train/phase"] for r in _metrics(tmp_path / "r")] == [0, 1]
    for name in ("grpo_unlikely", "grpo_gated", "nsr_gated", "simko"):
        res = run(_tiny(env, name, tmp_path / name, train__total_steps=1), tokenizer=env["tok"])
        m = res.last_metrics
        assert res.steps_done == 1 and (m["actor/no_update"] == 1 or np.isfinite(m["actor/grad_norm"])), name
    # NSR for 2 steps, then GRPO; the interrupted run stops after step 1 (inside the first phase) and after step 3
    # (inside the second)
    kw = dict(train__total_steps=4, checkpoint__every=1, algo__schedule="nsr:2,grpo")
    straight = run(_tiny(env, "nsr_warmup", tmp_path / "a", **kw), tokenizer=env["tok"])
    assert straight.steps_done == 4
    assert run(_tiny(env, "nsr_warmup", tmp_path / "b", **kw), tokenizer=env["tok"], stop_after=1).steps_done == 1
    assert run(_tiny(env, "nsr_warmup", tmp_path / "b", **kw), tokenizer=env["tok"], stop_after=2).steps_done == 3
    assert run(_tiny(env, "nsr_warmup", tmp_path / "b", **kw), tokenizer=env["tok"]).steps_done == 4
    import orbax.checkpoint as ocp
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    sa = Checkpointer(str(tmp_path / "a" / "checkpoints"))._manager.restore(4, args=args)["state"]
    sb = Checkpointer(str(tmp_path / "b" / "checkpoints"))._manager.restore(4, args=args)["state"]
    assert sorted(sa) == sorted(sb) and len(sa) > 10
    for k in sa:
        np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=k)
    ma, mb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["train/phase"] for r in ma] == [r["train/phase"] for r in mb] == [0, 0, 1, 1]
    assert [r["actor/pg_loss"] for r in mb] == [r["actor/pg_loss"] for r in ma]
    assert [r["actor/num_updates"] for r in ma[2:]] == [2, 2]  # GRPO: "mask", 2 mini-batches


def test_frontier_deltas_by_hand(tmp_path):
    """rlvr_jax.testbed.frontier: per-seed differences to the base, mean ± std over seeds, rare-only split."""
    from rlvr_jax.testbed import frontier
    ev = lambda p1, p4, h: {"pass_at_k": {"1": p1, "2": 0.0, "4": p4}, "token_entropy": h}  # noqa: E731
    rare = lambda p1, p4: {"rare_only": {"puzzles": 3, "pass@1": p1, "pass@4": p4}}  # noqa: E731
    summary = {"ks": [1, 2, 4], "config": {"seeds": [0, 1]},
               "per_seed": {"base": [ev(0.30, 0.80, 0.4), ev(0.32, 0.84, 0.4)],
                            "simko": [ev(0.40, 0.70, 0.3), ev(0.36, 0.80, 0.5)]},
               "properties": {"policies": {"base": {"0": rare(0.1, 0.5), "1": rare(0.1, 0.3)},
                                           "simko": {"0": rare(0.2, 0.4), "1": rare(0.0, 0.3)}}}}
    d = frontier.deltas(summary)
    assert d["K"] == 4
    np.testing.assert_allclose(d["simko"]["d1"], (7.0, np.std([10, 4], ddof=1)))
    np.testing.assert_allclose(d["simko"]["dK"], (-7.0, np.std([-10, -4], ddof=1)))
    np.testing.assert_allclose(d["simko"]["rare_d1"], (0.0, np.std([10, -10], ddof=1)), atol=1e-12)
    np.testing.assert_allclose(d["simko"]["rare_dK"], (-5.0, np.std([-10, 0], ddof=1)))
    np.testing.assert_allclose(d["base"]["d1"], (0.0, 0.0))
    os.makedirs(tmp_path / "report")
    with open(tmp_path / "report" / "summary.json", "w") as f:
        json.dump(summary, f)
    frontier.write(str(tmp_path / "report"))
    md = (tmp_path / "report" / "frontier.md").read_text()
    assert "simko (remedy)" in md and "+7.0 ± 4.2" in md and "-5.0 ± 7.1" in md
    assert (tmp_path / "report" / "frontier.png").stat().st_size > 1000
