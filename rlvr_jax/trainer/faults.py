"""Deterministic fault injection for the fault suite (tests/faults/): the trainer calls :func:`fault_point` at
the boundaries of its phases, and ``RLVR_FAULT_AT`` makes the process signal itself there.

``RLVR_FAULT_AT="<phase>:<step>:<SIGNAL>[,...]"``, e.g. ``update:2:KILL`` (SIGKILL right after the updates of the
step with index 2) or ``gen:0:TERM``. Phases: ``startup`` (after config validation, before the model is built;
step 0), ``gen``, ``reward``, ``update`` (each after that part of step index ``step``), ``save`` / ``saved``
(before / after the checkpoint of ``step`` completed steps) and ``export`` (before the final export). Unset, a
fault point costs one environment lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "RLVR_FAULT_AT"
PHASES = ("startup", "gen", "reward", "update", "save", "saved", "export")


def fault_point(phase: str, step: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        ph, st, sig = item.strip().split(":")
        if ph not in PHASES:
            raise ValueError(f"{ENV}: unknown phase {ph!r}; expected one of {PHASES}")
        if ph == phase and int(st) == int(step):
            os.kill(os.getpid(), getattr(signal, "SIG" + sig.upper().removeprefix("SIG")))
