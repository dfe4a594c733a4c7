"""Phase schedules: ``algo.schedule`` chains algorithms over the steps of one run (e.g. an NSR warm-up).

Syntax: comma-separated phases ``NAME[:LENGTH]``, every phase but the last with a length, the last open-ended
(it runs to ``train.total_steps``). NAME is an algorithm preset (``rlvr_jax.config.presets.ALGORITHMS``, not
``ppo``: its critic is not carried across phases); LENGTH is a number of RL steps (``10``) or a share of
``train.total_steps`` (``25%``, rounded half up). Examples::

    "nsr:25%,w_reinforce"        NSR for the first quarter of the run, then W-REINFORCE (the nsr_warmup preset)
    "nsr:10,grpo"                NSR for steps 0-9, GRPO from step 10 on
    "nsr:10,w_reinforce:20,grpo" three phases

Phase k covers steps [start_k, end_k); the trainer picks the phase of step s by its number alone
(:func:`phase_at`), so a run resumed from a checkpoint (which stores the step) continues in the same phase,
exactly as the uninterrupted run would.

Each phase trains with its own preset's ``algo`` section (:func:`phase_config`); the ``algo`` fields of the
run's config that differ from the preset of ``algo.name`` (command-line overrides such as
``--config.algo.entropy_coef=0``) are applied on top of every phase. The learner keeps one parameter set and
one AdamW state across phases (a phase switch changes the loss, not the optimizer), and keeps the frozen
reference policy when any phase needs it.
"""
from __future__ import annotations

import dataclasses
import math

from rlvr_jax.config.validate import ConfigError

FIELD = "algo.schedule"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase: algorithm preset ``name`` for steps ``start <= step < end``."""

    name: str
    start: int
    end: int


def _length(token: str, total_steps: int, text: str) -> int:
    t = token.strip()
    try:
        if t.endswith("%"):
            share = float(t[:-1])
            if not (0 < share < 100) or not math.isfinite(share):
                raise ValueError
            return int(math.floor(share * total_steps / 100.0 + 0.5))
        n = int(t)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise ConfigError(FIELD, f"phase length {token!r} in {text!r} must be a positive number of steps (e.g. 10) "
                                 f"or a share of train.total_steps in (0%, 100%) (e.g. 25%)") from None


def parse_schedule(text: str, total_steps: int) -> list[Phase]:
    """The phases of ``text`` for a run of ``total_steps`` steps (module docstring); ConfigError naming
    ``algo.schedule`` on any malformed, unknown or empty phase."""
    from rlvr_jax.config.presets import ALGORITHMS
    text = str(text).strip()
    if not text:
        raise ConfigError(FIELD, "empty schedule")
    parts = [p.strip() for p in text.split(",")]
    phases, start = [], 0
    for i, part in enumerate(parts):
        name, sep, length = part.partition(":")
        name = name.strip()
        if not name:
            raise ConfigError(FIELD, f"phase {i} of {text!r} has no algorithm name")
        if name not in ALGORITHMS:
            raise ConfigError(FIELD, f"phase {i} of {text!r}: unknown algorithm {name!r}; valid names: "
                                     f"{', '.join(a for a in ALGORITHMS if a != 'ppo')}")
        if name == "ppo":
            raise ConfigError(FIELD, f"phase {i} of {text!r}: ppo cannot be a phase (its critic is not carried "
                                     "across phases)")
        last = i == len(parts) - 1
        if last:
            if sep:
                raise ConfigError(FIELD, f"the last phase {part!r} of {text!r} runs to train.total_steps: drop "
                                         f"its length")
            end = total_steps
        else:
            if not sep:
                raise ConfigError(FIELD, f"phase {i} ({name!r}) of {text!r} needs a length (NAME:STEPS or "
                                         f"NAME:PCT%); only the last phase is open-ended")
            end = start + _length(length, total_steps, text)
        if end <= start:
            raise ConfigError(FIELD, f"phase {i} ({name!r}) of {text!r} has no step at train.total_steps="
                                     f"{total_steps} (it would cover steps [{start}, {end}))")
        phases.append(Phase(name, start, end))
        start = end
    return phases


def phase_at(phases: list[Phase], step: int) -> int:
    """The index of the phase that trains RL step ``step`` (0-based)."""
    for k, p in enumerate(phases):
        if p.start <= step < p.end:
            return k
    raise ValueError(f"step {step} is outside the schedule {phases}")


def phases_of(cfg) -> list[Phase] | None:
    """The parsed ``algo.schedule`` of ``cfg``, None when it has none."""
    text = str(cfg.algo.get("schedule", "") or "")
    return parse_schedule(text, int(cfg.train.total_steps)) if text.strip() else None


def _preset_algo(name: str) -> dict:
    from rlvr_jax.config.base import get_base_config
    from rlvr_jax.config.presets import set_algorithm
    return set_algorithm(get_base_config(), name).algo.to_dict()


def overrides(cfg) -> dict:
    """The ``algo`` fields of ``cfg`` that differ from the preset of ``cfg.algo.name`` (schedule aside)."""
    preset = _preset_algo(cfg.algo.name)
    return {k: v for k, v in cfg.algo.items() if k not in ("name", "schedule") and v != preset.get(k)}


def phase_config(cfg, name: str, extra: dict | None = None):
    """A copy of ``cfg`` whose ``algo`` section is algorithm ``name``'s preset plus :func:`overrides` of
    ``cfg`` (``extra``: further fields), without a schedule."""
    from rlvr_jax.config.presets import set_algorithm
    pc = cfg.copy_and_resolve_references()
    set_algorithm(pc, name)
    pc.algo.update({**overrides(cfg), **(extra or {})})
    pc.algo.schedule = ""
    return pc


def phase_configs(cfg) -> list:
    """One config per phase of ``cfg``'s schedule (``[cfg]`` without one). Every phase gets
    ``use_reference = True`` when any phase needs the reference policy, so the learner (built once) has it."""
    phases = phases_of(cfg)
    if phases is None:
        return [cfg]
    pcs = [phase_config(cfg, p.name) for p in phases]
    if any(pc.algo.use_reference for pc in pcs):
        for pc in pcs:
            pc.algo.use_reference = True
    return pcs


def validate_schedule(cfg, validate_phase) -> None:
    """Parses the schedule and runs ``validate_phase(phase_cfg)`` on every phase; an error inside a phase is
    raised for the same field, its message naming the phase."""
    phases = phases_of(cfg)
    if phases is None:
        return
    from rlvr_jax.config.presets import ALGORITHMS, SCHEDULES
    if cfg.algo.name not in ALGORITHMS and cfg.algo.name not in SCHEDULES:
        raise ConfigError("algo.name", f"unknown algorithm {cfg.algo.name!r}; valid names: "
                                       f"{', '.join(ALGORITHMS + tuple(SCHEDULES))}")
    for k, (p, pc) in enumerate(zip(phases, phase_configs(cfg))):
        try:
            validate_phase(pc)
        except ConfigError as e:
            raise ConfigError(e.field, f"in phase {k} ({p.name}, steps {p.start}-{p.end - 1}) of {FIELD}="
                                       f"{cfg.algo.schedule!r}: {str(e).split(': ', 1)[-1]}") from None
