"""Config files load, carry the papers' hyper-parameters, override from flags, and fail validation by field."""
import glob
import importlib.util
import os

import pytest
from absl import flags
from ml_collections import config_flags

from rlvr_jax.config import ConfigError, get_base_config, resolve_batching, resolve_mesh_shape, validate_config
from rlvr_jax.config.presets import ALGORITHMS, experiment, set_algorithm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/eval.py is the evaluator's config (rlvr_jax/evaluation/cli_config.py, tests/test_cli.py); the rest train.
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if os.path.basename(p) not in ("eval.py", "demo.py"))  # not training configs


def load(path, arg=None):
    spec = importlib.util.spec_from_file_location("cfg_" + os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg) if arg is not None else mod.get_config()


def test_expected_config_files_exist():
    names = {os.path.basename(p)[:-3] for p in CONFIG_FILES}
    expected = {f"{a}_{m}" for a in ("ppo", "grpo", "psr", "nsr", "w_reinforce") for m in ("qwen25math", "qwen3")}
    expected |= {"dapo_qwen3", "gspo_qwen3", "grpo_n_qwen3", "gspo_n_qwen3", "grpo_llama32", "tiny_cpu"}
    assert expected <= names, expected - names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.basename(p))
def test_every_config_validates(path):
    cfg = load(path)
    b = validate_config(cfg, check_files=False, num_devices=8)
    assert b.num_mini_batches * b.mini_batch_prompts == cfg.train.prompt_batch_size


@pytest.mark.parametrize("algo", ["ppo", "grpo", "psr", "nsr", "w_reinforce", "dapo", "gspo", "grpo_n", "gspo_n",
                                  "reinforce"])
def test_tiny_config_every_algorithm(algo):
    validate_config(load(os.path.join(ROOT, "configs", "tiny_cpu.py"), algo), check_files=False, num_devices=8)


def test_paper_hyperparameters():
    nsr = load(os.path.join(ROOT, "configs", "nsr_qwen25math.py"))
    assert (nsr.train.prompt_batch_size, nsr.rollout.n, nsr.train.mini_batch_size) == (1024, 8, 256)
    assert resolve_batching(nsr).updates_per_step == 4
    assert nsr.optim.lr == 1e-6 and nsr.rollout.temperature == 1.0
    assert nsr.algo.clip_eps_low == nsr.algo.clip_eps_high == 0.2 and nsr.algo.use_clip
    assert nsr.algo.kl_coef == 0.0 and not nsr.algo.use_reference and nsr.algo.adv_estimator == "correctness"
    # the released code: verl's entropy default 1e-3 (D.1's text says 1e-4), samples dropped, no mini-batch shuffle
    assert nsr.algo.entropy_coef == 1e-3 and nsr.algo.sample_selection == "drop"
    assert not nsr.train.shuffle_minibatches and nsr.train.shuffle
    assert nsr.data.max_prompt_len + nsr.rollout.max_new_tokens == 4096
    q3 = load(os.path.join(ROOT, "configs", "psr_qwen3.py"))
    assert q3.data.max_prompt_len + q3.rollout.max_new_tokens == 32768 and q3.algo.name == "psr"
    grpo = load(os.path.join(ROOT, "configs", "grpo_qwen3.py"))
    assert grpo.algo.kl_coef == 1e-3 and not grpo.algo.kl_in_reward and grpo.algo.use_reference
    assert grpo.algo.adv_estimator == "grpo"
    ppo = load(os.path.join(ROOT, "configs", "ppo_qwen25math.py"))
    assert ppo.algo.kl_coef == 1e-3 and ppo.algo.kl_in_reward and ppo.optim.critic_lr == 1e-5
    assert ppo.algo.adv_estimator == "gae" and ppo.algo.whiten_advantages and ppo.algo.sample_selection == "mask"
    w = load(os.path.join(ROOT, "configs", "w_reinforce_qwen3.py"))
    assert w.algo.name == "w_reinforce" and w.algo.lam == 0.1 and w.algo.kl_coef == 0.0
    assert w.algo.sample_selection == "mask" and w.algo.adv_estimator == "correctness"
    dapo = load(os.path.join(ROOT, "configs", "dapo_qwen3.py"))
    assert (dapo.algo.clip_eps_low, dapo.algo.clip_eps_high, dapo.algo.kl_coef) == (0.2, 0.28, 0.0)
    llama = load(os.path.join(ROOT, "configs", "grpo_llama32.py"))
    assert "Llama-3.2-3B-Instruct" in llama.model.hf_path and llama.algo.kl_coef == 1e-3
    assert llama.data.max_prompt_len + llama.rollout.max_new_tokens == 4096 and llama.algo.entropy_coef == 1e-3
    gspo = load(os.path.join(ROOT, "configs", "gspo_qwen3.py"))
    assert (gspo.algo.clip_eps_low, gspo.algo.entropy_coef) == (0.2, 1e-4)  # two-stage paper C.2 text


def test_flag_overrides_and_config_string():
    argv = ["prog", f"--config={ROOT}/configs/tiny_cpu.py:nsr", "--config.optim.lr=0.25",
            "--config.train.num_mini_batches=1", "--config.algo.use_clip=False"]
    fv = flags.FlagValues()
    # Override flags are discovered from the argv seen at definition (sys.argv in a real run).
    config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, sys_argv=argv)
    fv(argv)
    cfg = fv.config
    assert cfg.algo.name == "nsr" and cfg.optim.lr == 0.25 and not cfg.algo.use_clip
    b = validate_config(cfg, check_files=False, num_devices=8)
    assert (b.num_mini_batches, b.mini_batch_prompts) == (1, cfg.train.prompt_batch_size)


def _tiny():
    return load(os.path.join(ROOT, "configs", "tiny_cpu.py"), "grpo")


@pytest.mark.parametrize("edit,field", [
    (lambda c: setattr(c.algo, "name", "not_an_algo"), "algo.name"),
    (lambda c: setattr(c.algo, "lam", -0.5), "algo.lam"),
    (lambda c: setattr(c.train, "mini_batch_size", 3), "train.mini_batch_size"),
    (lambda c: setattr(c.train, "num_mini_batches", 3), "train.num_mini_batches"),
    (lambda c: setattr(c.train, "micro_batch_size", 3), "train.micro_batch_size"),  # 8 devices, fsdp=-1
    (lambda c: setattr(c.algo, "loss_agg_mode", "mean"), "algo.loss_agg_mode"),
    (lambda c: setattr(c.algo, "kl_estimator", "k4"), "algo.kl_estimator"),
    (lambda c: setattr(c.rollout, "engine", "tgi"), "rollout.engine"),
    (lambda c: setattr(c.rollout, "n", 1), "rollout.n"),  # grpo groups need n >= 2
    (lambda c: setattr(c.algo, "adv_estimator", "gae"), "algo.adv_estimator"),  # gae is for ppo only
    (lambda c: (setattr(c.algo, "kl_coef", 0.1), setattr(c.algo, "use_reference", False)), "algo.use_reference"),
    (lambda c: setattr(c.model, "hf_path", "/some/dir"), "model.hf_path"),  # both hf_path and preset
    (lambda c: setattr(c.model, "preset", "no-such-model"), "model.preset"),
    (lambda c: setattr(c.optim, "lr", 0.0), "optim.lr"),
    (lambda c: setattr(c.model, "tokenizer_path", ""), "model.tokenizer_path"),  # a preset needs a tokenizer
    (lambda c: setattr(c.model, "decode_attention_impl", "triton"), "model.decode_attention_impl"),
    (lambda c: setattr(c.mesh.shape, "tp", 3), "mesh.shape"),
    (lambda c: setattr(c.algo, "sample_selection", "filter"), "algo.sample_selection"),
    (lambda c: setattr(c.algo, "clip_ratio_c", 0.5), "algo.clip_ratio_c"),  # dual clip needs c > 1
    (lambda c: setattr(c.algo, "log_ratio_clamp", -1.0), "algo.log_ratio_clamp"),
    (lambda c: setattr(c.algo, "kl_value_clamp", -1.0), "algo.kl_value_clamp"),
    (lambda c: setattr(c.model, "tokenizer_path", "builtin:words"), "model.tokenizer_path"),
    # {0,1} rewards as raw advantages: NSR would get an exactly zero gradient
    (lambda c: (set_algorithm(c, "nsr"), setattr(c.algo, "adv_estimator", "raw"),
                setattr(c.data, "reward_format", "01")), "algo.adv_estimator"),
    (lambda c: (set_algorithm(c, "w_reinforce"), setattr(c.algo, "adv_estimator", "raw"),
                setattr(c.data, "reward_format", "01")), "algo.adv_estimator"),
])
def test_validation_names_the_field(edit, field):
    cfg = _tiny()
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=False, num_devices=8)
    assert e.value.field == field, str(e.value)
    assert field in str(e.value)


def test_missing_files_are_reported(tmp_path, shared_data_dir):
    cfg = _tiny()
    cfg.model.tokenizer_path = str(tmp_path)
    cfg.data.data_dir = str(shared_data_dir)
    validate_config(cfg, check_files=True)
    cfg.data.data_dir = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=True)
    assert e.value.field == "data.data_dir"
    cfg.data.data_dir = str(tmp_path)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=True)
    assert e.value.field == "data.train" and "math_train" in str(e.value)
    cfg = _tiny()
    cfg.data.data_dir = str(shared_data_dir)
    cfg.model.preset, cfg.model.hf_path = "", str(tmp_path / "no_model")
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=True)
    assert e.value.field == "model.hf_path"
    cfg = _tiny()
    cfg.model.tokenizer_path = str(tmp_path)
    cfg.data.data_dir = str(shared_data_dir)
    cfg.checkpoint.init_from = str(tmp_path / "missing_ckpt")
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=True)
    assert e.value.field == "checkpoint.init_from"


def test_mesh_shape_resolution():
    assert resolve_mesh_shape({"data": 1, "fsdp": -1, "tp": 2}, 8) == {"data": 1, "fsdp": 4, "tp": 2}
    assert resolve_mesh_shape({"data": 2, "fsdp": 2, "tp": 2}, 8) == {"data": 2, "fsdp": 2, "tp": 2}
    with pytest.raises(ConfigError, match="mesh.shape"):
        resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ConfigError, match="8 are available"):
        resolve_mesh_shape({"data": 2, "fsdp": 2, "tp": 1}, 8)


def test_base_config_is_fresh_each_call():
    a, b = get_base_config(), get_base_config()
    a.optim.lr = 5.0
    assert b.optim.lr == 1e-6


def test_one_spelling_per_algorithm_and_clear_errors():
    from rlvr_jax.objectives import OBJECTIVES, get_objective
    assert set(ALGORITHMS) == set(OBJECTIVES)
    for bad in ("wreinforce", "W-REINFORCE"):
        with pytest.raises(ValueError) as e:
            experiment(bad, "tiny")
        assert all(name in str(e.value) for name in ALGORITHMS), str(e.value)
        with pytest.raises(ValueError) as e:
            get_objective(bad)
        assert "w_reinforce" in str(e.value) and "valid names" in str(e.value)
    cfg = _tiny()
    cfg.algo.name = "wreinforce"
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=False, num_devices=8)
    assert e.value.field == "algo.name" and "w_reinforce" in str(e.value)


def test_preset_is_the_only_source_of_an_algorithms_settings():
    """set_algorithm writes every algo field, so an earlier algorithm (or an edited base) cannot leak in."""
    from rlvr_jax.config.presets import _COMMON
    assert set(_COMMON) | {"name"} == set(get_base_config().algo)
    for algo in ALGORITHMS:
        fresh = experiment(algo, "tiny").algo
        reused = set_algorithm(set_algorithm(get_base_config(), "ppo" if algo != "ppo" else "dapo"), algo).algo
        assert fresh.to_dict() == reused.to_dict(), algo


def test_validation_vocabularies_are_the_shared_constants_and_no_unused_field():
    """validate.py imports the lists it checks against from their homes (no copies to drift apart), and the
    held-out evaluation datasets have one field (logging.eval_datasets; the unread data.eval is gone)."""
    from rlvr_jax.config import validate
    from rlvr_jax.models import config as model_config
    from rlvr_jax.rewards.result import REWARD_FORMATS
    from rlvr_jax.rollout import ENGINES

    assert validate.DTYPES is model_config.DTYPES
    assert validate.DECODE_ATTENTION_IMPLS is model_config.DECODE_ATTENTION_IMPLS
    assert validate.REWARD_FORMATS is REWARD_FORMATS and validate.ENGINES is ENGINES
    assert "eval" not in get_base_config().data and tuple(get_base_config().logging.eval_datasets) == ("math500",)
    c = experiment("nsr", "tiny")
    c.rollout.jax.scheduler = "dynamic"
    with pytest.raises(ConfigError, match=r"rollout.jax.scheduler.*not in \('static', 'continuous'\)"):
        validate_config(c, check_files=False)


def test_context_is_checked_against_the_models_positions(tmp_path):
    """Issue 27 finding 4: the Qwen3 preset's 1,024 + 31,744 tokens on a checkpoint with 2,048 positions used
    to sit at 0% (JAX engine) or fail inside vLLM's start-up; validate_config now names our fields."""
    import json
    c = experiment("nsr", "qwen3")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "qwen3", "vocab_size": 512,
                                                  "max_position_embeddings": 2048}))
    c.model.hf_path = str(ckpt)
    with pytest.raises(ConfigError) as e:
        validate_config(c, check_files=False)
    assert e.value.field == "rollout.max_new_tokens"
    assert "1024 + 31744 = 32768 exceeds the model's max_position_embeddings 2048" in str(e.value)
    c.rollout.max_new_tokens = 1024  # fits: 2,048
    validate_config(c, check_files=False)
    c.rollout.engine = "vllm"  # the preset's max_model_len 32,768 > 2,048
    with pytest.raises(ConfigError, match="exceeds the model's max_position_embeddings 2048") as e:
        validate_config(c, check_files=False)
    assert e.value.field == "rollout.vllm.max_model_len"
    c.rollout.vllm.max_model_len = 2048
    validate_config(c, check_files=False)
    t = experiment("nsr", "tiny")  # a preset's positions (tiny-qwen3: 2,048)
    t.rollout.max_new_tokens = 4096
    with pytest.raises(ConfigError, match="model.preset='tiny-qwen3'") as e:
        validate_config(t, check_files=False)
    assert e.value.field == "rollout.max_new_tokens"
