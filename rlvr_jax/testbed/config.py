"""The testbed's command-line config: an ``ml_collections.ConfigDict`` view of :class:`ExperimentConfig`.

The typed dataclasses (:class:`rlvr_jax.testbed.experiment.ExperimentConfig`, its
:class:`rlvr_jax.testbed.warmstart.WarmStartConfig` and :class:`SweepConfig`) are the one home of every
default; :func:`get_config` turns them into a ConfigDict (so ``--config.a.b=value`` overrides work the same
way as for ``rlvr_jax.train``) and :func:`from_config` turns an overridden ConfigDict back into the
dataclasses, raising a :class:`rlvr_jax.config.validate.ConfigError` that names the field on an unknown key or
a bad value, before any compute. Modes (``configs/demo.py:<mode>``):

* ``""`` / ``"demo"``: ``make demo``, one seed;
* ``"quick"``: the CI mode (shorter warm start, RL and evaluation);
* ``"study"``: the 3-seed study (seeds 0, 1, 2);
* ``"sweep"``: the prior-strength sweep (``sweep.warmstart_steps`` bases, one seed each);
* ``"bases"``: bases as seeds: three warm starts (seeds 0, 1, 2, one puzzle split), RL seed 0 on each, the
  paper's methods and the remedies, exact evaluation only (pass@k to 1024 and trajectories).
"""
from __future__ import annotations

import dataclasses
import typing

import ml_collections

from rlvr_jax.config.validate import ConfigError

MODES = ("", "demo", "quick", "study", "sweep", "bases")
BASES_ALGORITHMS = ("psr", "nsr", "w_reinforce", "grpo", "nsr_warmup", "grpo_unlikely", "grpo_gated", "nsr_gated",
                    "simko")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The prior-strength sweep: one base per warm-start length (more supervised steps = a stronger prior)."""

    warmstart_steps: tuple[int, ...] = (300, 600, 900)
    seed: int = 0

    def __post_init__(self):
        if len(self.warmstart_steps) < 2 or any(int(s) < 1 for s in self.warmstart_steps):
            raise ValueError(f"SweepConfig.warmstart_steps needs >= 2 positive lengths, got {self.warmstart_steps}")
        if list(self.warmstart_steps) != sorted(set(self.warmstart_steps)):
            raise ValueError(f"SweepConfig.warmstart_steps must be strictly increasing, got {self.warmstart_steps}")


def _to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = _to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def get_config(mode: str = "") -> ml_collections.ConfigDict:
    """The ConfigDict of ``mode`` (module docstring): experiment fields at the top, ``warmstart.*`` and
    ``sweep.*`` below."""
    from rlvr_jax.testbed.experiment import ExperimentConfig

    if mode not in MODES:
        raise ConfigError("mode", f"unknown testbed mode {mode!r}; expected one of {MODES}")
    exp = ExperimentConfig.quick() if mode == "quick" else ExperimentConfig()
    if mode == "study":
        exp = dataclasses.replace(exp, seeds=(0, 1, 2))
    if mode == "bases":
        exp = dataclasses.replace(exp, bases=(0, 1, 2), seeds=(0,), algorithms=BASES_ALGORITHMS, sampled_eval=False)
    d = _to_dict(exp)
    sweep = SweepConfig(warmstart_steps=(40, 80, 120), seed=0) if mode == "quick" else SweepConfig()
    d["sweep"] = _to_dict(sweep)
    return ml_collections.ConfigDict(d)


def _build(cls, d: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(prefix + unknown[0], f"no such field; {cls.__name__} has {sorted(names)}")
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            v = _build(hints[f.name], dict(v), f"{prefix}{f.name}.")
        elif typing.get_origin(hints[f.name]) is tuple:
            v = tuple(v)
        kw[f.name] = v
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        field = next((n for n in names if f"{cls.__name__}.{n} " in str(e)), None)
        raise ConfigError(prefix + (field or cls.__name__), str(e)) from None


def from_config(cfg: ml_collections.ConfigDict):
    """``(ExperimentConfig, SweepConfig)`` from a (possibly overridden) :func:`get_config` dict."""
    from rlvr_jax.testbed.experiment import ExperimentConfig

    d = cfg.to_dict()
    sweep = _build(SweepConfig, dict(d.pop("sweep", {})), "sweep.")
    return _build(ExperimentConfig, d, ""), sweep
