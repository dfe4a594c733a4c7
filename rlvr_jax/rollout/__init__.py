"""Rollout engines behind one interface (see base.py): the in-process JAX sampler and a vLLM server."""
from rlvr_jax.rollout.base import LOGPROB_CONVENTION, Completion, RolloutEngine, SamplingParams

ENGINES = ("jax", "vllm")  # the rollout engines make_engine builds (config fields rollout.engine, engine)

__all__ = ["ENGINES", "LOGPROB_CONVENTION", "Completion", "RolloutEngine", "SamplingParams", "make_engine"]


def make_engine(kind: str, model=None, **kwargs) -> RolloutEngine:
    """Builds an engine by name: 'jax' (needs the NNX ``model``) or 'vllm' (kwargs go to VLLMEngine)."""
    if kind == "jax":
        if model is None:
            raise ValueError("make_engine('jax') needs the policy model")
        from rlvr_jax.rollout.jax_sampler import JaxSampler
        return JaxSampler(model, **kwargs)
    if kind == "vllm":
        from rlvr_jax.rollout.vllm_engine import VLLMEngine
        return VLLMEngine(**kwargs)
    raise ValueError(f"unknown rollout engine {kind!r}; expected one of {ENGINES}")
