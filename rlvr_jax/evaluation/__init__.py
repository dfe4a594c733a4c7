"""The evaluator core: per-sample records, pass@k tables, answer-/token-level entropy, plots, resume."""
from rlvr_jax.evaluation.config import SAMPLING_PRESETS, EvalConfig, apply_preset, default_ks
from rlvr_jax.evaluation.records import SampleRecord, load_complete, read_records
from rlvr_jax.evaluation.runner import compare, evaluate, make_model_token_entropy_fn, write_outputs
from rlvr_jax.evaluation.summary import answer_entropy, summarize

__all__ = ["EvalConfig", "SAMPLING_PRESETS", "SampleRecord", "answer_entropy", "apply_preset", "compare",
           "default_ks", "evaluate", "load_complete", "make_model_token_entropy_fn", "read_records", "summarize",
           "write_outputs"]
