"""Every bad config value fails in validate_config, before any compute, with a ConfigError naming the field; a
misspelled override names the valid fields and the closest match; unwritable output directories fail first."""
import os
import subprocess
import sys

import pytest

from helpers_tokenizer import make_test_tokenizer
from rlvr_jax.config import ConfigError, validate_config
from rlvr_jax.config.checks import check_prompt_budget
from rlvr_jax.config.overrides import check_override_names
from rlvr_jax.config.presets import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "tiny_cpu.py")


def _set(path, value):
    def edit(c):
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    return edit


# (dotted field, bad value, field the error must name)
BAD_VALUES = [
    ("optim.eps", -1e-8, "optim.eps"),
    ("optim.eps", 0.0, "optim.eps"),
    ("optim.lr", 1e6, "optim.lr"),
    ("optim.lr", 1.5, "optim.lr"),
    ("optim.lr", float("nan"), "optim.lr"),
    ("optim.lr", -1e-6, "optim.lr"),
    ("optim.min_lr_ratio", 2.0, "optim.min_lr_ratio"),
    ("optim.weight_decay", -0.1, "optim.weight_decay"),
    ("optim.b1", 1.0, "optim.b1"),
    ("optim.schedule", "linear", "optim.schedule"),
    ("optim.warmup_steps", -1, "optim.warmup_steps"),
    ("rollout.top_k", 512, "rollout.top_k"),        # the tiny preset's vocabulary is 512
    ("rollout.top_k", 10**6, "rollout.top_k"),
    ("rollout.top_k", 0, "rollout.top_k"),
    ("rollout.top_k", -5, "rollout.top_k"),
    ("rollout.temperature", 0.0, "rollout.temperature"),
    ("rollout.top_p", 0.0, "rollout.top_p"),
    ("rollout.top_p", 1.5, "rollout.top_p"),
    ("rollout.max_new_tokens", 0, "rollout.max_new_tokens"),
    ("rollout.n", 0, "rollout.n"),
    ("rollout.engine", "tgi", "rollout.engine"),
    ("data.template", "no_such_template", "data.template"),
    ("data.grade_timeout_s", 0.0, "data.grade_timeout_s"),
    ("data.grade_timeout_s", -3.0, "data.grade_timeout_s"),
    ("data.grade_timeout_s", float("inf"), "data.grade_timeout_s"),
    ("data.grade_workers", -1, "data.grade_workers"),
    ("data.max_prompt_len", 0, "data.max_prompt_len"),
    ("data.reward_format", "binary", "data.reward_format"),
    ("model.nonfinite_weights", "ignore", "model.nonfinite_weights"),
    ("model.dtype", "float8", "model.dtype"),
    ("model.preset", "no-such-model", "model.preset"),
    ("train.seed", -1, "train.seed"),
    ("train.total_steps", 0, "train.total_steps"),
    ("train.prompt_batch_size", 0, "train.prompt_batch_size"),
    ("train.mini_batch_size", 3, "train.mini_batch_size"),
    ("train.ppo_epochs", 0, "train.ppo_epochs"),
    ("train.max_nonfinite_in_a_row", 0, "train.max_nonfinite_in_a_row"),
    ("algo.name", "not_an_algo", "algo.name"),
    ("algo.clip_eps_low", 1.0, "algo.clip_eps_low"),
    ("algo.kl_coef", -0.1, "algo.kl_coef"),
    ("algo.entropy_coef", -1.0, "algo.entropy_coef"),
    ("algo.loss_agg_mode", "mean", "algo.loss_agg_mode"),
    ("checkpoint.every", 0, "checkpoint.every"),
    ("checkpoint.keep", 0, "checkpoint.keep"),
    ("logging.every", 0, "logging.every"),
    ("logging.eval_max_new_tokens", -1, "logging.eval_max_new_tokens"),
    ("logging.out_dir", "", "logging.out_dir"),
]


def _tiny():
    return experiment("grpo", "tiny")


@pytest.mark.parametrize("path,value,field", BAD_VALUES, ids=[f"{p}={v}" for p, v, _ in BAD_VALUES])
def test_bad_value_fails_naming_the_field(path, value, field):
    cfg = _tiny()
    _set(path, value)(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=False, num_devices=8)
    assert e.value.field == field, str(e.value)
    assert repr(field) in str(e.value)


def test_good_tiny_config_passes():
    validate_config(_tiny(), check_files=False, num_devices=8)


def test_vllm_context_too_short():
    cfg = _tiny()
    cfg.rollout.engine = "vllm"
    cfg.rollout.vllm.max_model_len = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens - 1
    with pytest.raises(ConfigError, match="rollout.vllm.max_model_len"):
        validate_config(cfg, check_files=False, num_devices=8)


@pytest.mark.parametrize("arg,field,hint", [
    ("--config.optim.learning_rate=1e-3", "optim.learning_rate", "did you mean 'optim.lr'?"),
    ("--config.optim.epsilon=1e-6", "optim.epsilon", "did you mean 'optim.eps'?"),
    ("--config.rollout.temprature=0.5", "rollout.temprature", "did you mean 'rollout.temperature'?"),
    ("--config.trian.seed=1", "trian.seed", "did you mean 'train'?"),
    ("--noconfig.algo.use_clp", "algo.use_clp", "did you mean 'algo.use_clip'?"),
])
def test_misspelled_override_names_valid_fields_and_closest(arg, field, hint):
    with pytest.raises(ConfigError) as e:
        check_override_names(["prog", f"--config={TINY}:nsr", arg])
    assert e.value.field == field and hint in str(e.value)
    assert "no such field" in str(e.value)
    check_override_names(["prog", f"--config={TINY}:nsr", "--config.optim.lr=1e-3", "--config.algo.use_clip=0"])


def test_misspelled_override_from_the_command_line_exits_before_start_up(tmp_path):
    """The real entry point: exit status 2 and one line naming the field, no traceback."""
    p = subprocess.run([sys.executable, "-m", "rlvr_jax.train", f"--config={TINY}:nsr",
                        "--config.optim.learning_rate=1e-3"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 2, p.stderr[-2000:]
    assert "config field 'optim.learning_rate': no such field" in p.stderr and "did you mean 'optim.lr'?" in p.stderr
    assert "Traceback" not in p.stderr


def _files_cfg(tmp_path, shared=None):
    cfg = _tiny()
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "math_train.jsonl").write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    tok = tmp_path / "tok"
    tok.mkdir(exist_ok=True)
    cfg.data.data_dir = str(data)
    cfg.model.tokenizer_path = str(tok)
    cfg.logging.eval_every = 0
    cfg.logging.out_dir = str(tmp_path / "out")
    return cfg


@pytest.mark.parametrize("where", ["out_is_file", "ckpt_is_file", "ckpt_under_file", "out_unwritable"])
def test_unwritable_output_dirs_fail_before_compute(tmp_path, where):
    cfg = _files_cfg(tmp_path, None)
    field = "logging.out_dir"
    if where == "out_is_file":
        (tmp_path / "out").write_text("occupied")
    elif where == "ckpt_is_file":
        (tmp_path / "ck").write_text("occupied")
        cfg.checkpoint.dir = str(tmp_path / "ck")
        field = "checkpoint.dir"
    elif where == "ckpt_under_file":
        (tmp_path / "f").write_text("occupied")
        cfg.checkpoint.dir = str(tmp_path / "f" / "checkpoints")
        field = "checkpoint.dir"
    else:
        cfg.logging.out_dir = "/sys/rlvr_out"  # not writable even by root
        if os.access("/sys", os.W_OK) and os.geteuid() != 0:
            pytest.skip("/sys is writable here")
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=True, num_devices=8)
    assert e.value.field == field, str(e.value)
    (tmp_path / "ok").mkdir()
    good = _files_cfg(tmp_path / "ok", None)
    validate_config(good, check_files=True, num_devices=8)
    assert not os.path.exists(good.logging.out_dir)  # the probe leaves nothing behind


def test_prompt_budget_too_small_fails_naming_the_field(tmp_path):
    tok = make_test_tokenizer(tmp_path / "tok")
    cfg = _tiny()
    overhead = check_prompt_budget(cfg, tok)
    assert overhead > 5
    cfg.data.max_prompt_len = 5
    with pytest.raises(ConfigError, match="data.max_prompt_len.*leaves no room for a problem"):
        check_prompt_budget(cfg, tok)
    cfg.data.max_prompt_len = overhead
    with pytest.raises(ConfigError):
        check_prompt_budget(cfg, tok)
    cfg.data.max_prompt_len = overhead + 1
    check_prompt_budget(cfg, tok)
