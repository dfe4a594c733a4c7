"""Problems (loaders, registry, Reasoning Gym), prompt templates and resumable prompt batching."""
from rlvr_jax.data.datasets import (REGISTRY, Dataset, Problem, build_dataset, default_data_dir, load_dataset,
                                    load_file)
from rlvr_jax.data.rows import BadRow, DataFileError
from rlvr_jax.data.sampler import PromptSampler
from rlvr_jax.data.templates import TEMPLATES, encode_prompt, format_prompt, stop_token_ids

__all__ = ["REGISTRY", "BadRow", "DataFileError", "Dataset", "Problem", "PromptSampler", "TEMPLATES", "build_dataset",
           "default_data_dir", "encode_prompt", "format_prompt", "load_dataset", "load_file", "stop_token_ids"]
