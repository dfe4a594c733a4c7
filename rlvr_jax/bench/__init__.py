"""Benchmarks: ``python -m rlvr_jax.bench --preset qwen3-1.7b --what learner,sampler,export --out FILE.json``."""
