"""rollout.jax.{scheduler, decode_steps, refill_rows}: validated, and passed by the trainer to the JAX sampler."""
import pytest
from flax import nnx

from rlvr_jax.config import ConfigError, validate_config
from rlvr_jax.rollout import jax_sampler


def _tiny():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.py"
    spec = importlib.util.spec_from_file_location("tiny_cpu_cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("grpo")


def test_default_scheduler_matches_the_sampler_default():
    assert _tiny().rollout.jax.scheduler == jax_sampler.DEFAULT_SCHEDULER
    assert jax_sampler.DEFAULT_SCHEDULER in jax_sampler.SCHEDULERS


@pytest.mark.parametrize("field,value", [("scheduler", "dynamic"), ("decode_steps", 0), ("refill_rows", -1)])
def test_validation_names_the_scheduler_field(field, value):
    cfg = _tiny()
    validate_config(cfg, check_files=False, num_devices=8)
    setattr(cfg.rollout.jax, field, value)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, check_files=False, num_devices=8)
    assert e.value.field == f"rollout.jax.{field}", str(e.value)


@pytest.mark.parametrize("scheduler", ["static", "continuous"])
def test_trainer_builds_the_configured_scheduler(scheduler):
    from rlvr_jax.models import Decoder, get_preset
    from rlvr_jax.train import build_engine

    cfg = _tiny()
    cfg.rollout.jax.scheduler = scheduler
    cfg.rollout.jax.decode_steps = 7
    cfg.rollout.jax.refill_rows = 3
    model = Decoder(get_preset("tiny-qwen3"), rngs=nnx.Rngs(0))
    engine = build_engine(cfg, model, None, stop_ids=[2], pad_id=0, out_dir="/tmp/unused")
    assert isinstance(engine, jax_sampler.JaxSampler) and engine.scheduler == scheduler
    assert engine._continuous.decode_steps == 7 and engine._continuous.refill_size(16) == 3
