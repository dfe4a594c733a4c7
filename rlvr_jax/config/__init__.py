"""Experiment configs: the base ConfigDict and its validation."""
from rlvr_jax.config.base import get_base_config
from rlvr_jax.config.validate import (Batching, ConfigError, as_plain, resolve_batching, resolve_mesh_shape,
                                      validate_config)

__all__ = ["get_base_config", "validate_config", "ConfigError", "Batching", "resolve_batching",
           "resolve_mesh_shape", "as_plain"]
