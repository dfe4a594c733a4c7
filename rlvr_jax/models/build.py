"""The policy model of a training config, created already sharded.

:func:`build_model` reads ``cfg.model`` (``hf_path`` or ``preset``, dtypes, remat, attention kernels)
and ``cfg.train.seed``:

* a Hugging Face checkpoint is read by :func:`rlvr_jax.models.load_hf`, which sends every tensor from
  the memory-mapped safetensors file straight to its ``NamedSharding`` (each device receives its slice);
* a preset is initialised by :func:`rlvr_jax.sharding.create_sharded`: the decoder is traced abstractly
  for the parameter shapes, then initialised inside ``jit`` with per-parameter output shardings, so each
  device computes only its own shards.

Neither path materialises the unsharded model on one device (the 7B-on-a-TPU-host case).
"""
from __future__ import annotations

from typing import Optional

import jax
from flax import nnx

from ..sharding import create_sharded, resolve_rules
from .config import ModelConfig
from .decoder import Decoder
from .hf_io import load_hf
from .presets import get_preset


def model_options(cfg) -> dict:
    """The :class:`ModelConfig` overrides a training config sets (``cfg.model``)."""
    m = cfg.model
    return dict(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attention_impl=m.attention_impl,
                decode_attention_impl=m.decode_attention_impl)


def build_model(cfg, mesh: Optional[jax.sharding.Mesh], rules=None) -> tuple[Decoder, ModelConfig]:
    """The policy (sharded on ``mesh`` per ``rules``, default the active rules) and its ModelConfig.

    From ``cfg.model.hf_path`` when set (weights non-finite handling per ``model.nonfinite_weights``), else
    ``cfg.model.preset`` initialised with seed ``cfg.train.seed``. With ``mesh=None`` the model lives on
    the default device. The values equal the unsharded build: the same checkpoint tensors, or
    ``Decoder(config, rngs=nnx.Rngs(seed))``.
    """
    m = cfg.model
    opts = model_options(cfg)
    rules = resolve_rules(rules)
    if m.hf_path:
        return load_hf(m.hf_path, mesh=mesh, rules=rules, nonfinite=m.nonfinite_weights, **opts)
    mcfg = get_preset(m.preset, **opts)
    seed = int(cfg.train.seed)
    if mesh is None:
        return Decoder(mcfg, rngs=nnx.Rngs(seed)), mcfg
    return create_sharded(lambda: Decoder(mcfg, rngs=nnx.Rngs(seed)), mesh, rules), mcfg
